//! A schema of the tests' own (`ticks(channel)`, counting its renderings) on a broker
//! with in-memory adapters and a recording gateway.
#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_graphql::{ComplexObject, Context, EmptyMutation, Object, Schema, SimpleObject};
use broker::domain::{CONNECTION_LIFETIME_SECS, now_ms, now_secs};
use broker::memory::{
    ChannelFanoutQueue, MemoryConnectionStore, MemoryEventLog, MemoryPageMarks,
    MemorySubscriptionStore, RecordingGateway,
};
use broker::{
    Audience, AuthConfig, Authenticator, Broker, BrokerConfig, Connection, ConnectionId, Event,
    EventStream, FanoutPage, Ports, Protocol, Subscription, SubscriptionKey, Topic, UserId, listen,
};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc::UnboundedReceiver;

/// How many times a `Tick` was rendered.
#[derive(Clone, Default)]
pub struct Renders(pub Arc<AtomicUsize>);

#[derive(SimpleObject, Deserialize)]
#[graphql(complex)]
struct Tick {
    n: i64,
}

#[ComplexObject]
impl Tick {
    /// Counts its own renderings.
    async fn rendered(&self, ctx: &Context<'_>) -> bool {
        ctx.data_unchecked::<Renders>()
            .0
            .fetch_add(1, Ordering::SeqCst);
        true
    }
}

struct Query;

#[Object]
impl Query {
    async fn version(&self) -> i32 {
        1
    }
}

struct SubscriptionRoot;

#[async_graphql::Subscription]
impl SubscriptionRoot {
    async fn ticks(
        &self,
        ctx: &Context<'_>,
        channel: String,
    ) -> async_graphql::Result<EventStream<Tick>> {
        listen(ctx, topic(&channel))
    }
}

pub fn topic(channel: &str) -> Topic {
    Topic::new(format!("ticks/{channel}"))
}

pub const TICKS: &str = "subscription($c: String!) { ticks(channel: $c) { n rendered } }";

pub struct Setup {
    pub broker: Broker,
    pub gateway: Arc<RecordingGateway>,
    pub pages: UnboundedReceiver<FanoutPage>,
    pub renders: Renders,
}

pub fn setup(with_queue: bool, threshold: usize, page_size: usize) -> Setup {
    setup_on(ChannelFanoutQueue::new(), with_queue, threshold, page_size)
}

/// As [`setup`] with a queue that says it keeps each group's pages in order.
pub fn setup_ordered(threshold: usize, page_size: usize) -> Setup {
    setup_on(ChannelFanoutQueue::ordered(), true, threshold, page_size)
}

fn setup_on(
    (queue, pages): (ChannelFanoutQueue, UnboundedReceiver<FanoutPage>),
    with_queue: bool,
    threshold: usize,
    page_size: usize,
) -> Setup {
    let renders = Renders::default();
    let schema = Schema::build(Query, EmptyMutation, SubscriptionRoot)
        .data(renders.clone())
        .finish();
    let gateway = Arc::new(RecordingGateway::default());
    let subscriptions = MemorySubscriptionStore::default();
    let ports = Ports {
        connections: Arc::new(MemoryConnectionStore::default()),
        replay_gate: Arc::new(subscriptions.replay_gate()),
        subscriptions: Arc::new(subscriptions),
        page_marks: Arc::new(MemoryPageMarks::default()),
        quotas: Arc::new(broker::memory::MemoryQuotas::default()),
        events: Arc::new(MemoryEventLog::default()),
        gateway: gateway.clone(),
        fanout: with_queue.then(|| Arc::new(queue) as _),
    };
    let config = BrokerConfig {
        fanout_threshold: threshold,
        fanout_page_size: page_size,
        ..BrokerConfig::default()
    };
    let auth = Authenticator::new(AuthConfig {
        secret: "delivery-test-secret-0123456789-0123456789".into(),
        issuer: None,
        audience: None,
        leeway_secs: broker::auth::DEFAULT_LEEWAY_SECS,
    });
    Setup {
        broker: Broker::new(schema, ports, auth, config),
        gateway,
        pages,
        renders,
    }
}

pub fn tick_subscription(connection: &str, user: &str, variables: Value) -> Subscription {
    Subscription {
        key: SubscriptionKey {
            connection_id: ConnectionId::new(connection),
            operation_id: "t".into(),
        },
        topic: topic("a"),
        protocol: Protocol::GraphqlTransportWs,
        principal: UserId::new(user),
        document: TICKS.into(),
        operation_name: None,
        variables,
        expires_at: now_secs() + CONNECTION_LIFETIME_SECS,
        starts_at_ms: 0,
        replaying_until_ms: 0,
        public: false,
    }
}

pub async fn published(broker: &Broker, n: i64) -> Event {
    let event = Event::new(topic("a"), json!({"n": n}), Audience::Everyone);
    broker.ports().events.append(&event).await.unwrap();
    event
}

/// An initialised connection of `user` speaking `protocol`.
pub async fn connected(broker: &Broker, id: &str, user: &str, protocol: Protocol) {
    let connection = Connection {
        id: ConnectionId::new(id),
        protocol,
        principal: Some(UserId::new(user)),
        initialised: true,
        connected_at_ms: now_ms(),
        expires_at: now_secs() + CONNECTION_LIFETIME_SECS,
        authorized_until: Some(now_secs() + 3600),
    };
    broker.ports().connections.put(&connection).await.unwrap();
}
