//! A mutation's write and its event in one commit (`Outbox::publish_with`), through the
//! broker and the example app: what is refused stores nothing, and a burst of concurrent
//! mutations on the database file stores each card and each event exactly once, in both
//! delivery modes. The port's own contract (conditions, deadlines, retries) runs on every
//! store in `contract.rs`.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use boards::{Board, BoardStore, Card, card_topic};
use broker::memory::{
    MemoryConnectionStore, MemoryEventLog, MemoryPageMarks, MemoryQuotas, MemorySubscriptionStore,
    RecordingGateway,
};
use broker::{
    AppTable, Audience, AuthConfig, Authenticator, Broker, BrokerConfig, Changes, DeliveryMode,
    EventLog, Ports, PublishError, RateLimit, StoreError, Topic, UserId,
};
use serde_json::{Value, json};

const OWNER: &str = "alice";

fn authenticator() -> Authenticator {
    Authenticator::new(AuthConfig {
        secret: "atomic-test-secret-0123456789-0123456789".into(),
        issuer: None,
        audience: None,
        leeway_secs: broker::auth::DEFAULT_LEEWAY_SECS,
    })
}

/// A broker of the boards app, on memory, and its board store and event log.
fn on_memory(config: BrokerConfig) -> (Broker, Arc<dyn BoardStore>, Arc<MemoryEventLog>) {
    let events = Arc::new(MemoryEventLog::default());
    let subscriptions = MemorySubscriptionStore::default();
    let ports = Ports {
        connections: Arc::new(MemoryConnectionStore::default()),
        replay_gate: Arc::new(subscriptions.replay_gate()),
        subscriptions: Arc::new(subscriptions),
        page_marks: Arc::new(MemoryPageMarks::default()),
        quotas: Arc::new(MemoryQuotas::default()),
        events: events.clone(),
        gateway: Arc::new(RecordingGateway::default()),
        fanout: None,
    };
    let boards: Arc<dyn BoardStore> = Arc::new(boards::MemoryBoardStore::new(&events.tables()));
    let broker = Broker::new(
        boards::build_schema(boards.clone()),
        ports,
        authenticator(),
        config,
    );
    (broker, boards, events)
}

async fn board(boards: &dyn BoardStore) -> Board {
    let board = Board {
        id: ulid::Ulid::new().to_string().into(),
        title: "Board".into(),
        owner: OWNER.into(),
    };
    boards.create_board(&board).await.unwrap();
    board
}

fn card(board: &Board, title: &str) -> Card {
    Card {
        id: ulid::Ulid::new().to_string().into(),
        board_id: board.id.clone(),
        title: title.into(),
    }
}

async fn add_card(broker: &Broker, board: &Board, title: &str) -> Value {
    let mutation = format!(
        r#"mutation {{ addCard(boardId: "{}", title: "{title}") {{ title }} }}"#,
        *board.id
    );
    let response = broker
        .execute(UserId::new(OWNER), async_graphql::Request::new(mutation))
        .await;
    serde_json::to_value(&response).unwrap()
}

async fn logged(events: &dyn EventLog, topic: &Topic) -> Vec<Value> {
    let events = events.after(topic, "", 10_000).await.unwrap();
    events.into_iter().map(|e| e.payload).collect()
}

#[tokio::test]
async fn a_card_whose_board_went_away_is_not_saved_and_not_published() {
    // GIVEN a board, and the writes of a card on it
    let (broker, boards, events) = on_memory(BrokerConfig::default());
    let board = board(boards.as_ref()).await;
    let card = card(&board, "late");
    let changes = boards.add_card_changes(&card).unwrap();
    // WHEN the board is deleted before they are committed with the card's event
    boards.delete_board(&board.id).await.unwrap();
    let alice = Audience::User(UserId::new(OWNER));
    let result = broker
        .publish_with(&changes, card_topic(&board.id), &card, alice)
        .await;
    // THEN the commit fails on its condition, and neither the card nor its event is stored
    assert!(
        matches!(result, Err(PublishError::Store(StoreError::Conflict(_)))),
        "{result:?}"
    );
    assert!(boards.cards_of(&board.id).await.unwrap().is_empty());
    assert!(
        logged(events.as_ref(), &card_topic(&board.id))
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn a_commit_too_large_or_for_no_one_is_refused_before_anything_is_written() {
    let (broker, _, events) = on_memory(BrokerConfig::default());
    let things = AppTable::new("things");
    let tables = events.tables().table::<Value>("things");
    let topic = Topic::new("things");
    // 99 changes and the event: the most one commit holds
    let most = (0..99).fold(Changes::new(), |c, i| {
        c.put(&things, "p", &format!("{i:03}"), &json!({"n": i}))
            .unwrap()
    });
    broker
        .publish_with(&most, topic.clone(), &json!("most"), Audience::Everyone)
        .await
        .unwrap();
    assert_eq!(tables.partition("p").unwrap().len(), 99);
    // one more is refused, as is an event for no one, and nothing of either is written
    let over = (0..100).fold(Changes::new(), |c, i| {
        c.put(&things, "q", &format!("{i:03}"), &json!({"n": i}))
            .unwrap()
    });
    let refused = broker
        .publish_with(&over, topic.clone(), &json!("over"), Audience::Everyone)
        .await;
    assert!(
        matches!(&refused, Err(PublishError::TooLarge(why)) if why.contains("101 items")),
        "{refused:?}"
    );
    let star = Audience::User(UserId::new("*"));
    let few = Changes::new().put(&things, "q", "1", &json!(1)).unwrap();
    let refused = broker
        .publish_with(&few, topic.clone(), &json!("star"), star)
        .await;
    assert!(
        matches!(refused, Err(PublishError::Audience(_))),
        "{refused:?}"
    );
    assert!(tables.partition("q").unwrap().is_empty());
    assert_eq!(logged(events.as_ref(), &topic).await, [json!("most")]);
}

#[tokio::test]
async fn a_mutation_over_the_publish_rate_saves_nothing() {
    // GIVEN a user allowed one publish per minute
    let config = BrokerConfig {
        publish_rate: RateLimit::new(1, Duration::from_secs(60)),
        ..BrokerConfig::default()
    };
    let (broker, boards, events) = on_memory(config);
    let board = board(boards.as_ref()).await;
    // WHEN they add two cards
    let first = add_card(&broker, &board, "first").await;
    let second = add_card(&broker, &board, "second").await;
    // THEN the first is saved and published, the second refused with neither
    assert!(first["errors"].is_null(), "{first}");
    assert_eq!(second["errors"][0]["extensions"]["code"], "RATE_LIMITED");
    let cards = boards.cards_of(&board.id).await.unwrap();
    let titles: Vec<_> = cards.iter().map(|c| c.title.as_str()).collect();
    assert_eq!(titles, ["first"]);
    assert_eq!(
        logged(events.as_ref(), &card_topic(&board.id)).await.len(),
        1
    );
}

/// `MUTATIONS` cards added at once on a database file in `mode`: every mutation succeeds,
/// and each card and each event is stored exactly once.
///
/// The publish deadline is raised well above what the burst takes on a slow machine: the
/// test is about what is stored, not how fast (the benchmark `--mutation-burst` measures
/// that at the default deadline).
async fn a_burst_stores_each_card_and_event_once(mode: DeliveryMode) {
    const MUTATIONS: usize = 1_000;
    let dir = std::env::temp_dir().join(format!("broker-burst-{}", ulid::Ulid::new()));
    std::fs::create_dir_all(&dir).unwrap();
    let store = broker::file::FileStore::open(dir.join("burst.redb")).unwrap();
    let events = Arc::new(store.events());
    let ports = Ports {
        connections: Arc::new(store.connections()),
        subscriptions: Arc::new(store.subscriptions()),
        replay_gate: Arc::new(store.replay_gate()),
        page_marks: Arc::new(store.page_marks()),
        quotas: Arc::new(store.quotas()),
        events: events.clone(),
        gateway: Arc::new(RecordingGateway::default()),
        fanout: None,
    };
    let boards: Arc<dyn BoardStore> = Arc::new(boards::file::FileBoardStore::new(&store));
    let config = BrokerConfig {
        delivery_mode: mode,
        resume_settle: Duration::from_secs(60),
        publish_rate: RateLimit::UNLIMITED,
        ..BrokerConfig::default()
    };
    let broker = Broker::new(
        boards::build_schema(boards.clone()),
        ports,
        authenticator(),
        config,
    );
    let board = board(boards.as_ref()).await;
    let titles: Vec<String> = (0..MUTATIONS).map(|i| format!("card-{i:04}")).collect();
    let answers = futures_util::future::join_all(titles.iter().map(|title| {
        let (broker, board) = (broker.clone(), board.clone());
        let title = title.clone();
        tokio::spawn(async move { add_card(&broker, &board, &title).await })
    }))
    .await;
    for answer in answers {
        let answer = answer.unwrap();
        assert!(answer["errors"].is_null(), "{answer}");
    }
    let mut cards: BTreeMap<String, usize> = BTreeMap::new();
    for card in boards.cards_of(&board.id).await.unwrap() {
        *cards.entry(card.title).or_default() += 1;
    }
    let mut published: BTreeMap<String, usize> = BTreeMap::new();
    for payload in logged(events.as_ref(), &card_topic(&board.id)).await {
        let title = payload["title"].as_str().unwrap().to_owned();
        *published.entry(title).or_default() += 1;
    }
    let expected: BTreeMap<String, usize> = titles.iter().map(|t| (t.clone(), 1)).collect();
    assert_eq!(cards, expected, "each card saved once");
    assert_eq!(published, expected, "each event stored once");
    // and the cards are the events' cards: the same ids
    let card_ids: HashSet<String> = boards
        .cards_of(&board.id)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.id.to_string())
        .collect();
    let event_ids: HashSet<String> = logged(events.as_ref(), &card_topic(&board.id))
        .await
        .into_iter()
        .map(|p| p["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(card_ids, event_ids);
    drop(store);
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_mutations_in_stream_mode_store_each_card_and_event_once() {
    a_burst_stores_each_card_and_event_once(DeliveryMode::Stream).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_mutations_in_direct_mode_store_each_card_and_event_once() {
    a_burst_stores_each_card_and_event_once(DeliveryMode::Direct).await;
}

/// On DynamoDB, a transaction whose outcome the answer does not tell (an error that is not
/// a cancellation) is settled: the event's void mark is written, after which the
/// transaction cannot commit, and the event is read back; not there, nothing was stored.
/// The transaction carries the event id as its idempotency token.
#[tokio::test]
async fn an_unsettled_dynamodb_commit_is_settled_by_its_void_mark() {
    use broker_tests::aws::{Reply, ScriptedServer, sdk_config_for};
    let json = "application/x-amz-json-1.0";
    let server = ScriptedServer::start(vec![
        // TransactWriteItems: an error that says nothing of the transaction's items
        Reply::new(
            400,
            r#"{"__type":"com.amazonaws.dynamodb.v20120810#ValidationException","message":"odd"}"#,
        )
        .header("content-type", json),
        // PutItem of the void mark
        Reply::new(200, "{}").header("content-type", json),
        // GetItem of the event: not there
        Reply::new(200, "{}").header("content-type", json),
    ])
    .await;
    let sdk = sdk_config_for(&server.endpoint).await;
    let log = broker::aws::DynamoDbEventLog::new(aws_sdk_dynamodb::Client::new(&sdk), "events")
        .with_void_marks("subscriptions");
    let changes = Changes::new()
        .put(&AppTable::new("app"), "p", "s", &json!({"n": 1}))
        .unwrap();
    let event = broker::Event::new(Topic::new("t"), json!(1), Audience::Everyone);
    let deadline = broker::domain::now_ms() + 60_000;
    let result = log.append_with(&changes, &event, deadline).await;
    assert!(
        matches!(result, Err(StoreError::Backend { .. })),
        "{result:?}"
    );
    let requests = server.requests();
    let targets: Vec<_> = requests
        .iter()
        .map(|r| r.header("x-amz-target").unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        targets,
        [
            "DynamoDB_20120810.TransactWriteItems",
            "DynamoDB_20120810.PutItem",
            "DynamoDB_20120810.GetItem"
        ]
    );
    let transaction: Value = serde_json::from_slice(&requests[0].body).unwrap();
    assert_eq!(transaction["ClientRequestToken"], event.id.as_str());
    let items = transaction["TransactItems"].as_array().unwrap();
    // the change, the event, the check that no void mark is there
    assert_eq!(items.len(), 3);
    let void_key = format!("#void/t/{}", event.id);
    assert_eq!(items[2]["ConditionCheck"]["Key"]["topic"]["S"], void_key);
    let mark: Value = serde_json::from_slice(&requests[1].body).unwrap();
    assert_eq!(mark["TableName"], "subscriptions");
    assert_eq!(mark["Item"]["topic"]["S"], void_key);
}

/// The prices app's last price on DynamoDB (moto): a table keyed by its partition alone,
/// written in one transaction with the event, read back by the app.
#[tokio::test]
async fn a_price_and_its_event_commit_together_on_dynamodb() {
    use broker::App as _;
    let tables = broker_tests::aws::fresh_tables().await;
    let prices_table = broker_tests::aws::unique("prices");
    let app_tables = broker::aws::AppTables::new(
        tables.dynamodb.clone(),
        [(prices::store::TABLE.to_owned(), prices_table.clone())],
    );
    broker::aws::provision::create_app_tables(
        &tables.dynamodb,
        &prices::Prices.tables(),
        &app_tables,
    )
    .await
    .unwrap();
    let log = broker::aws::DynamoDbEventLog::new(tables.dynamodb.clone(), &tables.names.events)
        .with_void_marks(&tables.names.subscriptions);
    let last = prices::LastPrices::DynamoDb {
        client: tables.dynamodb.clone(),
        table: prices_table,
    };
    let price = prices::Price {
        symbol: "AAPL".into(),
        price: 2.5,
        at: 1.0,
    };
    let event = broker::Event::new(prices::prices_topic(), json!(price), Audience::Everyone);
    let deadline = broker::domain::now_ms() + 10_000;
    log.append_with(&last.record(&price).unwrap(), &event, deadline)
        .await
        .unwrap();
    assert_eq!(last.last("AAPL").await.unwrap(), Some(price.clone()));
    assert_eq!(
        log.get(&event.reference())
            .await
            .unwrap()
            .map(|e| e.payload),
        Some(json!(price))
    );
    // One past its deadline stores neither.
    let newer = prices::Price {
        price: 3.5,
        ..price.clone()
    };
    let late = broker::Event::new(prices::prices_topic(), json!(newer), Audience::Everyone);
    let past = broker::domain::now_ms() - 1;
    let result = log
        .append_with(&last.record(&newer).unwrap(), &late, past)
        .await;
    assert!(matches!(result, Err(StoreError::TooLate)), "{result:?}");
    assert_eq!(last.last("AAPL").await.unwrap(), Some(price));
    assert_eq!(log.get(&late.reference()).await.unwrap(), None);
}

/// On DynamoDB, a transaction refused because another held one of its items is sent again
/// (a token of its own: the first was refused whole), and commits.
#[tokio::test]
async fn a_dynamodb_commit_refused_for_a_concurrent_one_is_sent_again() {
    use broker_tests::aws::{Reply, ScriptedServer, sdk_config_for};
    let json = "application/x-amz-json-1.0";
    let conflict = r#"{"__type":"com.amazonaws.dynamodb.v20120810#TransactionCanceledException","message":"Transaction cancelled","CancellationReasons":[{"Code":"TransactionConflict"},{"Code":"None"},{"Code":"None"}]}"#;
    let server = ScriptedServer::start(vec![
        Reply::new(400, conflict).header("content-type", json),
        Reply::new(200, "{}").header("content-type", json),
    ])
    .await;
    let sdk = sdk_config_for(&server.endpoint).await;
    let log = broker::aws::DynamoDbEventLog::new(aws_sdk_dynamodb::Client::new(&sdk), "events")
        .with_void_marks("subscriptions");
    let changes = Changes::new().require(&AppTable::new("app"), "board", "BOARD");
    let event = broker::Event::new(Topic::new("t"), json!(1), Audience::Everyone);
    let deadline = broker::domain::now_ms() + 60_000;
    log.append_with(&changes, &event, deadline).await.unwrap();
    let requests = server.requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    let tokens: Vec<Value> = requests
        .iter()
        .map(|r| serde_json::from_slice::<Value>(&r.body).unwrap()["ClientRequestToken"].clone())
        .collect();
    assert_eq!(tokens[0], event.id.as_str());
    assert_ne!(tokens[1], tokens[0]);
}
