//! The per-connection subscription limit under concurrent subscribes on one connection, as
//! API Gateway delivers them (it may run `$default` for several frames of one socket at
//! once): on the memory adapters, the database file, and on DynamoDB (a moto of the
//! test's own that, as DynamoDB, runs each request in isolation).

use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;
use boards::{Board, BoardStore, MemoryBoardStore, build_schema};
use broker::aws::{
    DynamoDbConnectionStore, DynamoDbPageMarks, DynamoDbReplayGate, DynamoDbSubscriptionStore,
};
use broker::memory::{
    MemoryConnectionStore, MemoryEventLog, MemoryPageMarks, MemorySubscriptionStore,
    RecordingGateway,
};
use broker::{
    AuthConfig, Authenticator, Broker, BrokerConfig, ConnectionId, ConnectionStore, Inserted,
    PageMarks, Ports, ReplayGate, StoreError, Subscription, SubscriptionKey, SubscriptionStore,
    Topic,
};
use broker_tests::aws::{SerialMoto, fresh_tables_at};
use serde_json::json;

const LIMIT: usize = 5;
const SUBSCRIBES: usize = 30;

async fn concurrent_subscribes_stay_within_the_limit(
    connections: Arc<dyn ConnectionStore>,
    subscriptions: Arc<dyn SubscriptionStore>,
    replay_gate: Arc<dyn ReplayGate>,
    page_marks: Arc<dyn PageMarks>,
) {
    let gateway = Arc::new(RecordingGateway::default());
    let ports = Ports {
        connections,
        subscriptions: subscriptions.clone(),
        replay_gate,
        page_marks,
        quotas: Arc::new(broker::memory::MemoryQuotas::default()),
        events: Arc::new(MemoryEventLog::default()),
        gateway: gateway.clone(),
        fanout: None,
    };
    let boards = Arc::new(MemoryBoardStore::new(&Default::default()));
    boards
        .create_board(&Board {
            id: "b1".into(),
            title: "Board".into(),
            owner: "user-a".into(),
        })
        .await
        .unwrap();
    let auth = Authenticator::new(AuthConfig {
        secret: "limit-test-secret-0123456789-0123456789".into(),
        issuer: None,
        audience: None,
        leeway_secs: broker::auth::DEFAULT_LEEWAY_SECS,
    });
    let token = auth.mint("user-a", 600);
    let config = BrokerConfig {
        max_subscriptions_per_connection: LIMIT,
        ..BrokerConfig::default()
    };
    let broker = Broker::new(build_schema(boards), ports, auth, config);
    let id = ConnectionId::from("limited");
    broker
        .connect(id.clone(), Some("graphql-transport-ws"), Some(&token))
        .await
        .unwrap();
    broker
        .receive(&id, r#"{"type":"connection_init"}"#)
        .await
        .unwrap();
    assert_eq!(gateway.take(&id)[0]["type"], "connection_ack");

    let mut subscribes = tokio::task::JoinSet::new();
    for n in 0..SUBSCRIBES {
        let (broker, id) = (broker.clone(), id.clone());
        subscribes.spawn(async move {
            let frame = json!({
                "type": "subscribe",
                "id": n.to_string(),
                "payload": {"query": r#"subscription { cardAdded(boardId: "b1") { id } }"#},
            });
            broker.receive(&id, &frame.to_string()).await.unwrap();
        });
    }
    while let Some(done) = subscribes.join_next().await {
        done.unwrap();
    }

    // Exactly the limit is stored, and every other subscribe got an `error` for its id.
    let stored: HashSet<String> = subscriptions
        .by_topic(&Topic::from("board/b1/cardAdded"))
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.key.operation_id)
        .collect();
    assert_eq!(stored.len(), LIMIT, "{stored:?}");
    assert_eq!(subscriptions.count_by_connection(&id).await.unwrap(), LIMIT);
    let frames = gateway.take(&id);
    let mut refused = HashSet::new();
    for frame in &frames {
        assert_eq!(frame["type"], "error", "{frame}");
        let message = frame["payload"][0]["message"].as_str().unwrap();
        assert!(message.contains("at most 5 subscriptions"), "{message}");
        refused.insert(frame["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(refused.len(), SUBSCRIBES - LIMIT, "{frames:?}");
    assert!(refused.is_disjoint(&stored));
    assert!(gateway.closed().is_empty(), "the connection stays open");
}

/// The memory store, giving other tasks a turn before each call as a remote store would:
/// without it the memory store answers at once, and subscribes never interleave.
#[derive(Default)]
struct Yielding(MemorySubscriptionStore);

#[async_trait]
impl SubscriptionStore for Yielding {
    async fn insert_within(&self, s: &Subscription, max: usize) -> Result<Inserted, StoreError> {
        tokio::task::yield_now().await;
        self.0.insert_within(s, max).await
    }
    async fn complete(&self, key: &SubscriptionKey, until: u64) -> Result<bool, StoreError> {
        tokio::task::yield_now().await;
        self.0.complete(key, until).await
    }
    async fn close_connection(&self, id: &ConnectionId, until: u64) -> Result<usize, StoreError> {
        tokio::task::yield_now().await;
        self.0.close_connection(id, until).await
    }
    async fn contains(&self, key: &SubscriptionKey) -> Result<bool, StoreError> {
        tokio::task::yield_now().await;
        self.0.contains(key).await
    }
    async fn delete(&self, key: &SubscriptionKey) -> Result<bool, StoreError> {
        tokio::task::yield_now().await;
        self.0.delete(key).await
    }
    async fn by_topic(&self, topic: &Topic) -> Result<Vec<Subscription>, StoreError> {
        tokio::task::yield_now().await;
        self.0.by_topic(topic).await
    }
    async fn get_many(
        &self,
        topic: &Topic,
        keys: &[SubscriptionKey],
    ) -> Result<Vec<Subscription>, StoreError> {
        tokio::task::yield_now().await;
        self.0.get_many(topic, keys).await
    }
    async fn count_by_connection(&self, id: &ConnectionId) -> Result<usize, StoreError> {
        tokio::task::yield_now().await;
        self.0.count_by_connection(id).await
    }
    async fn by_connection(&self, id: &ConnectionId) -> Result<Vec<SubscriptionKey>, StoreError> {
        tokio::task::yield_now().await;
        self.0.by_connection(id).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_subscribes_on_one_connection_stay_within_the_limit_in_memory() {
    let subscriptions = Yielding::default();
    let replay_gate = Arc::new(subscriptions.0.replay_gate());
    concurrent_subscribes_stay_within_the_limit(
        Arc::new(MemoryConnectionStore::default()),
        Arc::new(subscriptions),
        replay_gate,
        Arc::new(MemoryPageMarks::default()),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_subscribes_on_one_connection_stay_within_the_limit_on_dynamodb() {
    let moto = SerialMoto::start().await;
    let tables = fresh_tables_at(&moto.endpoint).await;
    concurrent_subscribes_stay_within_the_limit(
        Arc::new(DynamoDbConnectionStore::new(
            tables.dynamodb.clone(),
            &tables.names.connections,
        )),
        Arc::new(DynamoDbSubscriptionStore::new(
            tables.dynamodb.clone(),
            &tables.names.subscriptions,
        )),
        Arc::new(DynamoDbReplayGate::new(
            tables.dynamodb.clone(),
            &tables.names.subscriptions,
        )),
        Arc::new(DynamoDbPageMarks::new(
            tables.dynamodb.clone(),
            &tables.names.subscriptions,
        )),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_subscribes_on_one_connection_stay_within_the_limit_in_the_database_file() {
    let path = std::env::temp_dir().join(format!("broker-limit-{}.redb", ulid::Ulid::new()));
    let store = broker::file::FileStore::open(&path).expect("a new database file");
    std::fs::remove_file(&path).expect("unlink the database file");
    concurrent_subscribes_stay_within_the_limit(
        Arc::new(store.connections()),
        Arc::new(store.subscriptions()),
        Arc::new(store.replay_gate()),
        Arc::new(store.page_marks()),
    )
    .await;
}
