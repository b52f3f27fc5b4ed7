//! The AWS adapters over the real AWS wire protocol: DynamoDB, DynamoDB Streams and SQS on
//! moto; the Management API on moto and on a scripted HTTP server (for the answers moto
//! never gives: 410 Gone, throttling, refusals).

use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use broker::aws::{
    ApiGatewayConnectionGateway, CLOSE_CODE_HEADER, CLOSE_REASON_HEADER, DynamoDbConnectionStore,
    DynamoDbEventLog, DynamoDbSubscriptionStore, RetryPolicy, SqsFanoutQueue, event_from_image,
    provision,
};
use broker::domain::{CONNECTION_LIFETIME_SECS, now_ms, now_secs};
use broker::{
    Audience, CloseCode, Connection, ConnectionGateway, ConnectionId, ConnectionStore, Event,
    EventLog, EventRef, FanoutPage, FanoutQueue, GatewayError, Protocol, StoreError, Subscription,
    SubscriptionKey, SubscriptionStore, Topic, UserId,
};
use broker_tests::aws::{
    FreshTables, Reply, ScriptedServer, base64, fresh_queue, fresh_tables, moto_endpoint,
    sdk_config_for, unique,
};
use graphql_api::app::dynamodb::DynamoDbBoardStore;
use graphql_api::app::{Board, BoardStore, Card};
use serde_json::json;

fn connection(id: &str, principal: Option<&str>) -> Connection {
    Connection {
        id: ConnectionId::new(id),
        protocol: Protocol::GraphqlTransportWs,
        principal: principal.map(UserId::new),
        initialised: false,
        connected_at_ms: now_ms(),
        expires_at: now_secs() + CONNECTION_LIFETIME_SECS,
    }
}

fn subscription(connection: &str, operation: &str, topic: &str) -> Subscription {
    Subscription {
        key: SubscriptionKey {
            connection_id: ConnectionId::new(connection),
            operation_id: operation.to_owned(),
        },
        topic: Topic::new(topic),
        protocol: Protocol::GraphqlWs,
        principal: UserId::new("alice"),
        document: "subscription($b: ID!) { cardAdded(boardId: $b) { id title } }".to_owned(),
        operation_name: Some("Cards".to_owned()),
        variables: json!({"b": "board-1", "nested": {"list": [1, 2, 3]}}),
        expires_at: now_secs() + CONNECTION_LIFETIME_SECS,
    }
}

fn expired<T>(mut value: T, set: impl FnOnce(&mut T, u64)) -> T {
    set(&mut value, now_secs() - 1);
    value
}

fn stores(
    tables: &FreshTables,
) -> (
    DynamoDbConnectionStore,
    DynamoDbSubscriptionStore,
    DynamoDbEventLog,
) {
    let client = tables.dynamodb.clone();
    (
        DynamoDbConnectionStore::new(client.clone(), &tables.names.connections),
        DynamoDbSubscriptionStore::new(client.clone(), &tables.names.subscriptions),
        DynamoDbEventLog::new(client, &tables.names.events),
    )
}

fn is_conflict<T: std::fmt::Debug>(result: Result<T, StoreError>) -> bool {
    matches!(result, Err(StoreError::Conflict(_)))
}

// --- connections -------------------------------------------------------------------------

#[tokio::test]
async fn connection_put_get_delete_round_trip() {
    let tables = fresh_tables().await;
    let (connections, _, _) = stores(&tables);
    let anonymous = connection("conn-a", None);
    let known = Connection {
        protocol: Protocol::GraphqlWs,
        initialised: true,
        ..connection("conn-b", Some("alice"))
    };
    connections.put(&anonymous).await.unwrap();
    connections.put(&known).await.unwrap();

    assert_eq!(
        connections.get(&anonymous.id).await.unwrap(),
        Some(anonymous.clone())
    );
    assert_eq!(
        connections.get(&known.id).await.unwrap(),
        Some(known.clone())
    );
    assert_eq!(
        connections.get(&ConnectionId::new("nobody")).await.unwrap(),
        None
    );

    connections.delete(&known.id).await.unwrap();
    assert_eq!(connections.get(&known.id).await.unwrap(), None);
    // Deleting what is not there is fine, as in memory.
    connections.delete(&known.id).await.unwrap();
}

#[tokio::test]
async fn expired_connections_are_invisible_to_get_and_by_user() {
    let tables = fresh_tables().await;
    let (connections, _, _) = stores(&tables);
    let stale = expired(connection("stale", Some("alice")), |c, t| c.expires_at = t);
    let live = connection("live", Some("alice"));
    connections.put(&stale).await.unwrap();
    connections.put(&live).await.unwrap();

    assert_eq!(connections.get(&stale.id).await.unwrap(), None);
    assert_eq!(
        connections.by_user(&UserId::new("alice")).await.unwrap(),
        vec![live]
    );
}

#[tokio::test]
async fn mark_initialised_succeeds_once_then_conflicts() {
    let tables = fresh_tables().await;
    let (connections, _, _) = stores(&tables);
    let anonymous = connection("conn-1", None);
    connections.put(&anonymous).await.unwrap();
    let alice = UserId::new("alice");

    connections
        .mark_initialised(&anonymous.id, &alice)
        .await
        .unwrap();
    let stored = connections.get(&anonymous.id).await.unwrap().unwrap();
    assert!(stored.initialised);
    assert_eq!(stored.principal, Some(alice.clone()));

    assert!(is_conflict(
        connections.mark_initialised(&anonymous.id, &alice).await
    ));
    assert!(is_conflict(
        connections
            .mark_initialised(&ConnectionId::new("unknown"), &alice)
            .await
    ));
    // The failed update created nothing.
    assert_eq!(
        connections
            .get(&ConnectionId::new("unknown"))
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn by_user_finds_every_connection_of_one_user_through_the_index() {
    let tables = fresh_tables().await;
    let (connections, _, _) = stores(&tables);
    let mut alices = Vec::new();
    for i in 0..7 {
        let c = connection(&format!("alice-{i}"), Some("alice"));
        connections.put(&c).await.unwrap();
        alices.push(c);
    }
    connections
        .put(&connection("bob-1", Some("bob")))
        .await
        .unwrap();
    connections
        .put(&connection("anonymous", None))
        .await
        .unwrap();
    // Principal learnt at connection_init.
    connections.put(&connection("late", None)).await.unwrap();
    connections
        .mark_initialised(&ConnectionId::new("late"), &UserId::new("alice"))
        .await
        .unwrap();

    let mut found = connections.by_user(&UserId::new("alice")).await.unwrap();
    found.sort_by(|a, b| a.id.cmp(&b.id));
    let late = Connection {
        initialised: true,
        principal: Some(UserId::new("alice")),
        ..connections
            .get(&ConnectionId::new("late"))
            .await
            .unwrap()
            .unwrap()
    };
    alices.push(late);
    assert_eq!(found, alices);
    assert_eq!(
        connections.by_user(&UserId::new("carol")).await.unwrap(),
        vec![]
    );
}

// --- subscriptions -----------------------------------------------------------------------

#[tokio::test]
async fn subscriptions_round_trip_through_by_topic() {
    let tables = fresh_tables().await;
    let (_, subscriptions, _) = stores(&tables);
    let first = subscription("c1", "1", "board/b1/cardAdded");
    let second = Subscription {
        operation_name: None,
        variables: json!({}),
        ..subscription("c2", "1", "board/b1/cardAdded")
    };
    let elsewhere = subscription("c1", "2", "board/b2/cardAdded");
    for s in [&first, &second, &elsewhere] {
        subscriptions.insert(s).await.unwrap();
    }

    let found = subscriptions
        .by_topic(&Topic::new("board/b1/cardAdded"))
        .await
        .unwrap();
    assert_eq!(found, vec![first, second]);
    assert_eq!(
        subscriptions
            .by_topic(&Topic::new("board/none"))
            .await
            .unwrap(),
        vec![]
    );
}

#[tokio::test]
async fn by_topic_follows_query_pages_past_one_megabyte() {
    let tables = fresh_tables().await;
    let (_, subscriptions, _) = stores(&tables);
    // DynamoDB (and moto) return at most 1 MB per Query page: 30 x 50 KB needs two.
    let padding = format!("# {}\n", "x".repeat(50_000));
    let mut stored = Vec::new();
    for i in 0..30 {
        let mut s = subscription(&format!("c{i:02}"), "1", "topic/large");
        s.document = format!("{padding}{}", s.document);
        subscriptions.insert(&s).await.unwrap();
        stored.push(s);
    }
    let found = subscriptions
        .by_topic(&Topic::new("topic/large"))
        .await
        .unwrap();
    assert_eq!(found.len(), 30);
    assert_eq!(found, stored);
}

#[tokio::test]
async fn a_duplicate_operation_id_conflicts_whatever_the_topic() {
    let tables = fresh_tables().await;
    let (_, subscriptions, _) = stores(&tables);
    subscriptions
        .insert(&subscription("c1", "op", "topic/a"))
        .await
        .unwrap();

    assert!(is_conflict(
        subscriptions
            .insert(&subscription("c1", "op", "topic/a"))
            .await
    ));
    assert!(is_conflict(
        subscriptions
            .insert(&subscription("c1", "op", "topic/b"))
            .await
    ));
    // The failed transaction left nothing behind on the other topic.
    assert_eq!(
        subscriptions
            .by_topic(&Topic::new("topic/b"))
            .await
            .unwrap(),
        vec![]
    );
    // Another connection may use the same operation id.
    subscriptions
        .insert(&subscription("c2", "op", "topic/b"))
        .await
        .unwrap();
}

#[tokio::test]
async fn delete_removes_one_subscription_and_frees_its_operation_id() {
    let tables = fresh_tables().await;
    let (_, subscriptions, _) = stores(&tables);
    let kept = subscription("c1", "1", "topic/a");
    let gone = subscription("c1", "2", "topic/a");
    subscriptions.insert(&kept).await.unwrap();
    subscriptions.insert(&gone).await.unwrap();

    assert!(subscriptions.delete(&gone.key).await.unwrap());
    assert!(!subscriptions.delete(&gone.key).await.unwrap());
    assert_eq!(
        subscriptions
            .by_topic(&Topic::new("topic/a"))
            .await
            .unwrap(),
        vec![kept]
    );
    // The id is free again, on any topic.
    subscriptions
        .insert(&subscription("c1", "2", "topic/b"))
        .await
        .unwrap();
}

#[tokio::test]
async fn expired_subscriptions_are_filtered_on_every_read() {
    let tables = fresh_tables().await;
    let (_, subscriptions, _) = stores(&tables);
    let live = subscription("c1", "live", "topic/a");
    let stale = expired(subscription("c1", "stale", "topic/a"), |s, t| {
        s.expires_at = t
    });
    subscriptions.insert(&live).await.unwrap();
    subscriptions.insert(&stale).await.unwrap();

    let topic = Topic::new("topic/a");
    assert_eq!(
        subscriptions.by_topic(&topic).await.unwrap(),
        vec![live.clone()]
    );
    assert_eq!(
        subscriptions
            .get_many(&topic, &[stale.key.clone(), live.key.clone()])
            .await
            .unwrap(),
        vec![live]
    );
    // Still stored until TTL removes it: its id stays taken, and deleting it works.
    assert!(is_conflict(subscriptions.insert(&stale).await));
    assert!(subscriptions.delete(&stale.key).await.unwrap());
}

#[tokio::test]
async fn delete_by_connection_removes_more_than_one_batch() {
    let tables = fresh_tables().await;
    let (_, subscriptions, _) = stores(&tables);
    // 30 subscriptions (60 items with their claims) over three topics: several batches.
    for i in 0..30 {
        let s = subscription("doomed", &i.to_string(), &format!("topic/{}", i % 3));
        subscriptions.insert(&s).await.unwrap();
    }
    let survivor = subscription("other", "0", "topic/0");
    subscriptions.insert(&survivor).await.unwrap();

    let removed = subscriptions
        .delete_by_connection(&ConnectionId::new("doomed"))
        .await
        .unwrap();
    assert_eq!(removed, 30);
    assert_eq!(
        subscriptions
            .by_topic(&Topic::new("topic/0"))
            .await
            .unwrap(),
        vec![survivor]
    );
    for topic in ["topic/1", "topic/2"] {
        assert_eq!(
            subscriptions.by_topic(&Topic::new(topic)).await.unwrap(),
            vec![]
        );
    }
    assert_eq!(
        subscriptions
            .delete_by_connection(&ConnectionId::new("doomed"))
            .await
            .unwrap(),
        0
    );
    // Every operation id is free again.
    subscriptions
        .insert(&subscription("doomed", "0", "topic/9"))
        .await
        .unwrap();
}

#[tokio::test]
async fn get_many_reads_more_than_one_batch_in_the_order_asked() {
    let tables = fresh_tables().await;
    let (_, subscriptions, _) = stores(&tables);
    let topic = "topic/big";
    let mut all = Vec::new();
    for i in 0..150 {
        let s = subscription(&format!("c{i:03}"), "1", topic);
        subscriptions.insert(&s).await.unwrap();
        all.push(s);
    }
    subscriptions
        .insert(&subscription("c000", "2", "topic/other"))
        .await
        .unwrap();

    // Reversed, with a key that does not exist, one of another topic, and a duplicate.
    let mut keys: Vec<SubscriptionKey> = all.iter().rev().map(|s| s.key.clone()).collect();
    keys.insert(10, SubscriptionKey::decode("missing#1").unwrap());
    keys.insert(20, SubscriptionKey::decode("c000#2").unwrap());
    keys.push(all[0].key.clone());

    let found = subscriptions
        .get_many(&Topic::new(topic), &keys)
        .await
        .unwrap();
    let mut expected: Vec<Subscription> = all.iter().rev().cloned().collect();
    expected.push(all[0].clone());
    assert_eq!(found.len(), 151);
    assert_eq!(found, expected);
    assert_eq!(
        subscriptions
            .get_many(&Topic::new(topic), &[])
            .await
            .unwrap(),
        vec![]
    );
}

// --- events ------------------------------------------------------------------------------

#[tokio::test]
async fn events_append_once_and_read_back() {
    let tables = fresh_tables().await;
    let (_, _, events) = stores(&tables);
    let public = Event::new(
        Topic::new("board/b1/cardAdded"),
        json!({"id": "c1", "title": "Write tests", "tags": ["a", "b"]}),
        Audience::Everyone,
    );
    let private = Event::new(
        Topic::new("user/alice/boardCreated"),
        json!({"id": "b1"}),
        Audience::User(UserId::new("alice")),
    );
    events.append(&public).await.unwrap();
    events.append(&private).await.unwrap();

    assert!(is_conflict(events.append(&public).await));
    let reference = |e: &Event| EventRef {
        topic: e.topic.clone(),
        event_id: e.id.clone(),
    };
    assert_eq!(
        events.get(&reference(&public)).await.unwrap(),
        Some(public.clone())
    );
    assert_eq!(
        events.get(&reference(&private)).await.unwrap(),
        Some(private)
    );
    let missing = EventRef {
        topic: public.topic.clone(),
        event_id: "01NOPE".into(),
    };
    assert_eq!(events.get(&missing).await.unwrap(), None);
}

#[tokio::test]
async fn expired_events_are_invisible() {
    let tables = fresh_tables().await;
    let (_, _, events) = stores(&tables);
    let stale = expired(
        Event::new(Topic::new("t"), json!(1), Audience::Everyone),
        |e, t| e.expires_at = t,
    );
    events.append(&stale).await.unwrap();
    let reference = EventRef {
        topic: stale.topic.clone(),
        event_id: stale.id.clone(),
    };
    assert_eq!(events.get(&reference).await.unwrap(), None);
}

#[tokio::test]
async fn delivery_marks_are_read_back_consistently() {
    let tables = fresh_tables().await;
    let (_, _, events) = stores(&tables);
    let event = Event::new(Topic::new("t"), json!({"n": 1}), Audience::Everyone);
    events.append(&event).await.unwrap();
    let reference = EventRef {
        topic: event.topic.clone(),
        event_id: event.id.clone(),
    };

    assert!(!events.is_delivered(&reference).await.unwrap());
    events.mark_delivered(&reference).await.unwrap();
    assert!(events.is_delivered(&reference).await.unwrap());
    events.mark_delivered(&reference).await.unwrap();
    // The mark leaves the event as it was.
    assert_eq!(events.get(&reference).await.unwrap(), Some(event));

    // Marking an event that is not there creates no item (the stream would see a new event).
    let missing = EventRef {
        topic: Topic::new("t"),
        event_id: "01MISSING".into(),
    };
    events.mark_delivered(&missing).await.unwrap();
    assert_eq!(events.get(&missing).await.unwrap(), None);
    assert!(!events.is_delivered(&missing).await.unwrap());
}

/// Every record of the events table's stream so far, oldest first.
async fn stream_records(tables: &FreshTables) -> Vec<aws_sdk_dynamodbstreams::types::Record> {
    let table = tables
        .dynamodb
        .describe_table()
        .table_name(&tables.names.events)
        .send()
        .await
        .unwrap();
    let stream_arn = table
        .table
        .and_then(|t| t.latest_stream_arn)
        .expect("events table has a stream");
    let streams = aws_sdk_dynamodbstreams::Client::new(&tables.config);
    let description = streams
        .describe_stream()
        .stream_arn(&stream_arn)
        .send()
        .await
        .unwrap();
    let shard = description
        .stream_description
        .and_then(|d| d.shards)
        .and_then(|s| s.into_iter().next())
        .and_then(|s| s.shard_id)
        .expect("one shard");
    let iterator = streams
        .get_shard_iterator()
        .stream_arn(&stream_arn)
        .shard_id(shard)
        .shard_iterator_type(aws_sdk_dynamodbstreams::types::ShardIteratorType::TrimHorizon)
        .send()
        .await
        .unwrap()
        .shard_iterator
        .expect("an iterator");
    streams
        .get_records()
        .shard_iterator(iterator)
        .send()
        .await
        .unwrap()
        .records
        .unwrap_or_default()
}

#[tokio::test]
async fn appended_events_come_out_of_the_stream_as_new_images() {
    let tables = fresh_tables().await;
    let (_, _, events) = stores(&tables);
    let event = Event::new(
        Topic::new("user/alice/boardCreated"),
        json!({"id": "b1", "title": "Mine"}),
        Audience::User(UserId::new("alice")),
    );
    events.append(&event).await.unwrap();

    let image = stream_records(&tables)
        .await
        .into_iter()
        .find_map(|r| r.dynamodb.and_then(|d| d.new_image))
        .expect("an INSERT record with its new image");
    assert_eq!(event_from_image(image).unwrap(), event);
}

#[tokio::test]
async fn events_for_everyone_are_stored_with_the_audience_star() {
    let tables = fresh_tables().await;
    let (_, _, events) = stores(&tables);
    let event = Event::new(Topic::new("t"), json!({"n": 1}), Audience::Everyone);
    events.append(&event).await.unwrap();
    let item = tables
        .dynamodb
        .get_item()
        .table_name(&tables.names.events)
        .key("topic", AttributeValue::S("t".into()))
        .key("eventId", AttributeValue::S(event.id.clone()))
        .send()
        .await
        .unwrap()
        .item
        .unwrap();
    assert_eq!(item["audience"], AttributeValue::S("*".into()));
    // A user called `*` would read back as everyone: refused on the way in.
    let ambiguous = Event::new(
        Topic::new("t"),
        json!({"n": 2}),
        Audience::User(UserId::new("*")),
    );
    assert!(matches!(
        events.append(&ambiguous).await,
        Err(StoreError::Malformed(_))
    ));
}

#[tokio::test]
async fn an_event_item_without_an_audience_is_malformed_not_public() {
    let tables = fresh_tables().await;
    let (_, _, events) = stores(&tables);
    let topic = "board/b1/cardAdded";
    // What another service writes with a plain PutItem.
    let put = |id: &'static str, audience: Option<&'static str>| {
        let mut request = tables
            .dynamodb
            .put_item()
            .table_name(&tables.names.events)
            .item("topic", AttributeValue::S(topic.into()))
            .item("eventId", AttributeValue::S(id.into()))
            .item(
                "payload",
                AttributeValue::S(r#"{"id":"c1","boardId":"b1","title":"Hi"}"#.into()),
            )
            .item("ttl", AttributeValue::N((now_secs() + 600).to_string()));
        if let Some(audience) = audience {
            request = request.item("audience", AttributeValue::S(audience.into()));
        }
        request.send()
    };
    put("01NOAUDIENCE", None).await.unwrap();
    put("01EMPTYAUDIENCE", Some("")).await.unwrap();
    put("01EVERYONE", Some("*")).await.unwrap();
    put("01ALICE", Some("alice")).await.unwrap();

    let get = async |id: &str| {
        let reference = EventRef {
            topic: Topic::new(topic),
            event_id: id.into(),
        };
        events.get(&reference).await
    };
    for id in ["01NOAUDIENCE", "01EMPTYAUDIENCE"] {
        let result = get(id).await;
        assert!(
            matches!(result, Err(StoreError::Malformed(_))),
            "{result:?}"
        );
    }
    assert_eq!(
        get("01EVERYONE").await.unwrap().unwrap().audience,
        Audience::Everyone
    );
    assert_eq!(
        get("01ALICE").await.unwrap().unwrap().audience,
        Audience::User(UserId::new("alice"))
    );

    // The stream publisher reports the records without an audience as failed (they go to
    // the failure queue after the retries) instead of delivering them to everyone.
    let records: Vec<_> = stream_records(&tables)
        .await
        .iter()
        .filter_map(local_gateway::aws::lambda_record)
        .collect();
    assert_eq!(records.len(), 4);
    let sequence = |id: &str| {
        records
            .iter()
            .find(|r| {
                r.change.new_image.get("eventId")
                    == Some(&serde_dynamo::AttributeValue::S(id.into()))
            })
            .and_then(|r| r.change.sequence_number.clone())
            .expect("the record is in the stream")
    };
    let harness = broker_tests::fixtures::harness().await;
    let mut batch = aws_lambda_events::dynamodb::Event::default();
    batch.records = records.clone();
    let response = publisher::stream::handle(&harness.broker, batch).await;
    let failed: Vec<Option<String>> = response
        .batch_item_failures
        .into_iter()
        .map(|f| f.item_identifier)
        .collect();
    assert!(
        failed.contains(&Some(sequence("01NOAUDIENCE"))),
        "{failed:?}"
    );
    assert!(
        failed.contains(&Some(sequence("01EMPTYAUDIENCE"))),
        "{failed:?}"
    );
}

// --- provisioning ------------------------------------------------------------------------

#[tokio::test]
async fn create_tables_twice_is_fine() {
    let tables = fresh_tables().await;
    provision::create_tables(&tables.dynamodb, &tables.names, Some(&tables.app_table))
        .await
        .unwrap();
    let ttl = tables
        .dynamodb
        .describe_time_to_live()
        .table_name(&tables.names.subscriptions)
        .send()
        .await
        .unwrap()
        .time_to_live_description
        .unwrap();
    assert_eq!(ttl.attribute_name(), Some("ttl"));
}

// --- SQS ---------------------------------------------------------------------------------

#[tokio::test]
async fn sqs_enqueues_pages_in_batches_of_ten_and_they_come_back_whole() {
    let (sqs, url) = fresh_queue().await;
    let queue = SqsFanoutQueue::new(sqs.clone(), &url);
    let pages: Vec<FanoutPage> = (0..23)
        .map(|i| FanoutPage {
            topic: Topic::new("board/b1/cardAdded"),
            event_id: format!("event-{i}"),
            subscription_keys: vec![format!("conn-{i}#1"), format!("conn-{i}#2")],
        })
        .collect();
    queue.enqueue(&pages).await.unwrap();
    queue.enqueue(&[]).await.unwrap();

    let mut received = Vec::new();
    for _ in 0..20 {
        if received.len() == pages.len() {
            break;
        }
        let output = sqs
            .receive_message()
            .queue_url(&url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap();
        for message in output.messages.unwrap_or_default() {
            let page: FanoutPage = serde_json::from_str(message.body.as_deref().unwrap()).unwrap();
            received.push(page);
        }
    }
    received.sort_by_key(|p| {
        p.event_id
            .trim_start_matches("event-")
            .parse::<u32>()
            .unwrap()
    });
    assert_eq!(received, pages);
}

#[tokio::test]
async fn the_fanout_queue_redrives_to_its_dead_letter_queue() {
    let (sqs, url) = fresh_queue().await;
    let attributes = sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::All)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap();
    let redrive = &attributes[&aws_sdk_sqs::types::QueueAttributeName::RedrivePolicy];
    let redrive: serde_json::Value = serde_json::from_str(redrive).unwrap();
    assert!(
        redrive["deadLetterTargetArn"]
            .as_str()
            .unwrap()
            .ends_with("-dlq")
    );
    assert_eq!(
        redrive["maxReceiveCount"].to_string().trim_matches('"'),
        "5"
    );
}

// --- the Management API ------------------------------------------------------------------

/// A gateway with the SDK's own retries off, so a test counts exactly the adapter's.
async fn gateway_at(endpoint: &str, retry: RetryPolicy) -> ApiGatewayConnectionGateway {
    let config = sdk_config_for(endpoint).await;
    let config = aws_sdk_apigatewaymanagement::config::Builder::from(&config)
        .retry_config(aws_config::retry::RetryConfig::disabled())
        .build();
    ApiGatewayConnectionGateway::new(aws_sdk_apigatewaymanagement::Client::from_conf(config))
        .with_retry_policy(retry)
}

fn quick_retries(retries: u32) -> RetryPolicy {
    RetryPolicy {
        retries,
        base_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(20),
    }
}

#[tokio::test]
async fn the_gateway_posts_and_closes_through_moto() {
    let moto = moto_endpoint();
    let recorder = |action: &str| {
        reqwest::Client::new()
            .post(format!("{moto}/moto-api/recorder/{action}"))
            .send()
    };
    recorder("start-recording")
        .await
        .unwrap()
        .error_for_status()
        .unwrap();
    let gateway = broker::aws::ApiGatewayConnectionGateway::from_config(
        &broker_tests::aws::moto_config().await,
        &moto,
    );
    let id = ConnectionId::new(unique("conn"));
    let frame = json!({"type": "next", "id": "1", "payload": {"data": {"n": 1}}}).to_string();
    gateway.post(&id, &frame).await.unwrap();
    gateway
        .close(&id, CloseCode::Forbidden, "Forbidden")
        .await
        .unwrap();
    // The recorder logs every request moto serves (tests run in parallel): keep the window
    // short and leave the log empty.
    recorder("stop-recording").await.unwrap();
    let recording = reqwest::get(format!("{moto}/moto-api/recorder/download-recording"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    recorder("reset-recording").await.unwrap();

    let ours: Vec<serde_json::Value> = recording
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|r| {
            r["url"]
                .as_str()
                .is_some_and(|u| u.ends_with(&format!("/@connections/{id}")))
        })
        .collect();
    let post = ours
        .iter()
        .find(|r| r["method"] == "POST")
        .expect("the post was recorded");
    assert_eq!(post["body"], base64(frame.as_bytes()));
    assert!(
        ours.iter().any(|r| r["method"] == "DELETE"),
        "the close was recorded"
    );
}

#[tokio::test]
async fn a_410_from_the_gateway_is_gone() {
    let server = ScriptedServer::start(vec![
        Reply::new(410, r#"{"message": null}"#).header("x-amzn-ErrorType", "GoneException"),
    ])
    .await;
    let gateway = gateway_at(&server.endpoint, quick_retries(3)).await;
    let id = ConnectionId::new("L0SM9cOFvHcCIhw=");

    let result = gateway.post(&id, r#"{"type":"next"}"#).await;
    assert!(matches!(result, Err(GatewayError::Gone)), "{result:?}");
    let result = gateway.close(&id, CloseCode::Normal, "bye").await;
    assert!(matches!(result, Err(GatewayError::Gone)), "{result:?}");

    // Gone is final: one request each, no retries.
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].method, "POST");
    assert_eq!(requests[0].path, "/@connections/L0SM9cOFvHcCIhw%3D");
    assert_eq!(requests[0].body, br#"{"type":"next"}"#);
}

#[tokio::test]
async fn a_bare_410_without_an_error_type_is_gone_too() {
    let server = ScriptedServer::start(vec![Reply::new(410, "")]).await;
    let gateway = gateway_at(&server.endpoint, quick_retries(3)).await;
    let result = gateway.post(&ConnectionId::new("c"), "{}").await;
    assert!(matches!(result, Err(GatewayError::Gone)), "{result:?}");
}

#[tokio::test]
async fn the_close_code_and_reason_travel_as_headers() {
    let server = ScriptedServer::start(vec![Reply::new(204, "")]).await;
    let gateway = gateway_at(&server.endpoint, quick_retries(0)).await;
    gateway
        .close(
            &ConnectionId::new("c1"),
            CloseCode::SubscriberAlreadyExists,
            "Subscriber for 1 already exists",
        )
        .await
        .unwrap();
    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].method, "DELETE");
    assert_eq!(requests[0].path, "/@connections/c1");
    assert_eq!(requests[0].header(CLOSE_CODE_HEADER), Some("4409"));
    assert_eq!(
        requests[0].header(CLOSE_REASON_HEADER),
        Some("Subscriber for 1 already exists")
    );
}

#[tokio::test]
async fn throttled_posts_are_retried_until_they_pass() {
    let throttled = Reply::new(429, r#"{"message": "Too Many Requests"}"#)
        .header("x-amzn-ErrorType", "LimitExceededException");
    let server = ScriptedServer::start(vec![
        throttled.clone(),
        Reply::new(503, r#"{"message": "Service Unavailable"}"#),
        throttled,
        Reply::new(200, ""),
    ])
    .await;
    let gateway = gateway_at(&server.endpoint, quick_retries(5)).await;
    gateway.post(&ConnectionId::new("c1"), "{}").await.unwrap();
    assert_eq!(server.requests().len(), 4);
}

#[tokio::test]
async fn throttling_retries_are_bounded() {
    let server = ScriptedServer::start(vec![
        Reply::new(429, r#"{"message": "Too Many Requests"}"#)
            .header("x-amzn-ErrorType", "LimitExceededException"),
    ])
    .await;
    let gateway = gateway_at(&server.endpoint, quick_retries(3)).await;
    let result = gateway.post(&ConnectionId::new("c1"), "{}").await;
    let Err(GatewayError::Backend { source }) = result else {
        panic!("expected a backend error, got {result:?}");
    };
    assert!(
        source.to_string().contains("LimitExceededException"),
        "{source}"
    );
    assert_eq!(server.requests().len(), 4);
}

#[tokio::test]
async fn a_payload_too_large_is_rejected_without_a_retry() {
    let server = ScriptedServer::start(vec![
        Reply::new(413, r#"{"message": "Request Entity Too Large"}"#)
            .header("x-amzn-ErrorType", "PayloadTooLargeException"),
    ])
    .await;
    let gateway = gateway_at(&server.endpoint, quick_retries(3)).await;
    let result = gateway
        .post(&ConnectionId::new("c1"), &"x".repeat(1000))
        .await;
    let Err(GatewayError::Rejected { source }) = result else {
        panic!("expected a rejection, got {result:?}");
    };
    assert!(source.to_string().contains("PostToConnection"), "{source}");
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn other_client_errors_are_rejections_and_not_retried() {
    for (status, error_type) in [(403, "ForbiddenException"), (400, "BadRequestException")] {
        let server = ScriptedServer::start(vec![
            Reply::new(status, r#"{"message": "no"}"#).header("x-amzn-ErrorType", error_type),
        ])
        .await;
        let gateway = gateway_at(&server.endpoint, quick_retries(3)).await;
        let result = gateway.post(&ConnectionId::new("c1"), "{}").await;
        assert!(
            matches!(result, Err(GatewayError::Rejected { .. })),
            "{status}: {result:?}"
        );
        let result = gateway
            .close(&ConnectionId::new("c1"), CloseCode::Normal, "bye")
            .await;
        assert!(
            matches!(result, Err(GatewayError::Rejected { .. })),
            "{status}: {result:?}"
        );
        assert_eq!(server.requests().len(), 2);
    }
}

#[tokio::test]
async fn refused_credentials_are_a_backend_failure_not_a_rejection() {
    // Every post would fail alike: the event must be retried, not dropped per connection.
    let server = ScriptedServer::start(vec![
        Reply::new(
            403,
            r#"{"message": "User is not authorized to perform: execute-api:ManageConnections"}"#,
        )
        .header("x-amzn-ErrorType", "AccessDeniedException"),
    ])
    .await;
    let gateway = gateway_at(&server.endpoint, quick_retries(3)).await;
    let result = gateway.post(&ConnectionId::new("c1"), "{}").await;
    assert!(
        matches!(result, Err(GatewayError::Backend { .. })),
        "{result:?}"
    );
    assert_eq!(server.requests().len(), 1);
}

// --- the example app's table -------------------------------------------------------------

#[tokio::test]
async fn boards_live_in_the_app_table() {
    let tables = fresh_tables().await;
    let store = DynamoDbBoardStore::new(tables.dynamodb.clone(), &tables.app_table);
    let board = |id: &str, owner: &str| Board {
        id: id.into(),
        title: format!("Board {id}"),
        owner: owner.to_owned(),
    };
    // Created out of id order; listed by id (ULIDs: oldest first).
    let (b2, b1, b3) = (
        board("01B2", "alice"),
        board("01B1", "alice"),
        board("01B3", "bob"),
    );
    for b in [&b2, &b1, &b3] {
        store.create_board(b).await.unwrap();
    }
    assert!(is_conflict(store.create_board(&b1).await));
    let card = |id: &str, board: &Board| Card {
        id: id.into(),
        board_id: board.id.clone(),
        title: format!("Card {id}"),
    };
    // Added out of id order; listed by id (ULIDs: oldest first), per board.
    let (c2, c1, other) = (card("01C2", &b1), card("01C1", &b1), card("01C3", &b2));
    for c in [&c2, &c1, &other] {
        store.add_card(c).await.unwrap();
    }

    assert_eq!(store.board("01B1").await.unwrap(), Some(b1.clone()));
    assert_eq!(store.board("nope").await.unwrap(), None);
    assert_eq!(
        store.boards_of(&UserId::new("alice")).await.unwrap(),
        vec![b1, b2]
    );
    assert_eq!(
        store.boards_of(&UserId::new("bob")).await.unwrap(),
        vec![b3]
    );
    assert_eq!(
        store.boards_of(&UserId::new("carol")).await.unwrap(),
        vec![]
    );
    assert_eq!(store.cards_of("01B1").await.unwrap(), vec![c1, c2]);
    assert_eq!(store.cards_of("01B2").await.unwrap(), vec![other]);
    assert_eq!(store.cards_of("01B3").await.unwrap(), vec![]);
}
