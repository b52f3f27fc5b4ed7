//! Subscriptions declared the same for every viewer (`listen_public`) are rendered once for
//! all their users, and still each subscriber is checked against the event's audience. The
//! shared rendering has no viewer: one that asks for it is rendered per user instead, so a
//! wrong declaration costs a rendering and never shows one user's data to another.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_graphql::{ComplexObject, Context, Object, Schema, SimpleObject};
use broker::memory::RecordingGateway;
use broker::{
    Audience, Broker, BrokerConfig, ConnectionId, DeliveryMode, Event, EventStream, Protocol,
    Subscription, SubscriptionKey, Topic, UserId, listen, listen_public, principal,
};
use broker_tests::fixtures::{fixture_authenticator, memory_ports};
use broker_tests::local::*;
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Clone, Deserialize, SimpleObject)]
#[graphql(complex)]
struct Item {
    text: String,
    length: i32,
}

#[ComplexObject]
impl Item {
    /// Reads the viewer: wrong under a `listen_public` subscription.
    async fn seen_by(&self, ctx: &Context<'_>) -> async_graphql::Result<String> {
        Ok(principal(ctx)?.to_string())
    }
}

struct Query;

#[Object]
impl Query {
    async fn ok(&self) -> bool {
        true
    }
}

/// Counts the executions that reach a root field.
#[derive(Default)]
struct Executions(AtomicUsize);

struct Feeds;

#[async_graphql::Subscription]
impl Feeds {
    /// The same for every viewer.
    async fn shared(&self, ctx: &Context<'_>) -> async_graphql::Result<EventStream<Item>> {
        ctx.data::<Arc<Executions>>()?
            .0
            .fetch_add(1, Ordering::SeqCst);
        listen_public(ctx, Topic::new("feed"))
    }

    /// Rendered per viewer.
    async fn personal(&self, ctx: &Context<'_>) -> async_graphql::Result<EventStream<Item>> {
        ctx.data::<Arc<Executions>>()?
            .0
            .fetch_add(1, Ordering::SeqCst);
        listen(ctx, Topic::new("feed"))
    }
}

struct Rig {
    broker: Broker,
    gateway: Arc<RecordingGateway>,
    executions: Arc<Executions>,
}

fn rig() -> Rig {
    let executions = Arc::new(Executions::default());
    let schema = Schema::build(Query, async_graphql::EmptyMutation, Feeds)
        .data(executions.clone())
        .finish();
    let gateway = Arc::new(RecordingGateway::default());
    let broker = Broker::new(
        schema,
        memory_ports(gateway.clone()),
        fixture_authenticator(),
        BrokerConfig::default(),
    );
    Rig {
        broker,
        gateway,
        executions,
    }
}

/// A subscription of `user` on connection `connection`, public or not, as `subscribe`
/// stores it.
fn subscription(connection: &str, user: &str, document: &str, public: bool) -> Subscription {
    Subscription {
        key: SubscriptionKey {
            connection_id: ConnectionId::new(connection),
            operation_id: "s".into(),
        },
        topic: Topic::new("feed"),
        protocol: Protocol::GraphqlTransportWs,
        principal: UserId::new(user),
        document: document.into(),
        operation_name: None,
        variables: json!({}),
        expires_at: u64::MAX,
        starts_at_ms: 0,
        replaying_until_ms: 0,
        public,
    }
}

fn item(audience: Audience) -> Arc<Event> {
    Arc::new(Event::new(
        Topic::new("feed"),
        json!({"text": "hello", "length": 5}),
        audience,
    ))
}

/// The `next` payload each subscriber received, by subscriber.
fn payloads(rig: &Rig, subscribers: &[Subscription]) -> Vec<Option<Value>> {
    subscribers
        .iter()
        .map(|s| {
            let frames = rig.gateway.take_text(&s.key.connection_id);
            assert!(frames.len() <= 1, "{frames:?}");
            frames.first().map(|f| {
                let frame: Value = serde_json::from_str(f).unwrap();
                frame["payload"].clone()
            })
        })
        .collect()
}

#[tokio::test]
async fn a_public_subscription_is_rendered_once_for_every_user() {
    let rig = rig();
    let subscribers: Vec<Subscription> = (0..100)
        .map(|i| {
            let document = "subscription { shared { text } }";
            subscription(&format!("c{i}"), &format!("user-{i}"), document, true)
        })
        .collect();

    let report = rig
        .broker
        .deliver_to(item(Audience::Everyone), &subscribers)
        .await;

    assert_eq!(report.delivered, 100, "{report:?}");
    assert_eq!(report.public_fallbacks, 0);
    assert_eq!(rig.executions.0.load(Ordering::SeqCst), 1);
    for payload in payloads(&rig, &subscribers) {
        assert_eq!(
            payload.unwrap()["data"],
            json!({"shared": {"text": "hello"}})
        );
    }
}

#[tokio::test]
async fn public_documents_of_different_users_that_differ_in_selection_render_together() {
    let rig = rig();
    let subscribers = vec![
        subscription("a", "alice", "subscription { shared { text } }", true),
        subscription("b", "bob", "subscription { shared { length } }", true),
        subscription(
            "c",
            "carol",
            "subscription { shared { t: text length } }",
            true,
        ),
    ];

    let report = rig
        .broker
        .deliver_to(item(Audience::Everyone), &subscribers)
        .await;

    assert_eq!(report.delivered, 3, "{report:?}");
    assert_eq!(rig.executions.0.load(Ordering::SeqCst), 1);
    let payloads: Vec<Value> = payloads(&rig, &subscribers)
        .into_iter()
        .map(|p| p.unwrap()["data"].clone())
        .collect();
    assert_eq!(
        payloads,
        [
            json!({"shared": {"text": "hello"}}),
            json!({"shared": {"length": 5}}),
            json!({"shared": {"t": "hello", "length": 5}}),
        ]
    );
}

#[tokio::test]
async fn the_audience_is_still_checked_for_each_subscriber_of_a_shared_rendering() {
    let rig = rig();
    let subscribers = vec![
        subscription("a", "alice", "subscription { shared { text } }", true),
        subscription("b", "bob", "subscription { shared { text } }", true),
    ];

    let report = rig
        .broker
        .deliver_to(item(Audience::User(UserId::new("alice"))), &subscribers)
        .await;

    assert_eq!((report.delivered, report.refused), (1, 1), "{report:?}");
    let payloads = payloads(&rig, &subscribers);
    assert!(payloads[0].is_some());
    assert_eq!(payloads[1], None, "bob was sent alice's event");
}

#[tokio::test]
async fn a_public_subscription_that_reads_the_viewer_is_rendered_per_user_and_counted() {
    let rig = rig();
    let document = "subscription { shared { text seenBy } }";
    let subscribers: Vec<Subscription> = ["alice", "bob", "carol"]
        .iter()
        .map(|user| subscription(&format!("c-{user}"), user, document, true))
        .collect();

    let report = rig
        .broker
        .deliver_to(item(Audience::Everyone), &subscribers)
        .await;

    // Each receives what is rendered for them, not a shared result and not an error:
    assert_eq!(report.delivered, 3, "{report:?}");
    assert_eq!(report.public_fallbacks, 3);
    for (payload, user) in payloads(&rig, &subscribers)
        .into_iter()
        .zip(["alice", "bob", "carol"])
    {
        let payload = payload.unwrap();
        assert_eq!(payload["errors"], Value::Null, "{payload}");
        assert_eq!(
            payload["data"],
            json!({"shared": {"text": "hello", "seenBy": user}})
        );
    }
    // the shared attempt, then one per user.
    assert_eq!(rig.executions.0.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn subscriptions_that_are_not_public_are_still_rendered_per_user() {
    let rig = rig();
    let document = "subscription { personal { text seenBy } }";
    let subscribers = vec![
        subscription("a", "alice", document, false),
        subscription("b", "bob", document, false),
    ];

    let report = rig
        .broker
        .deliver_to(item(Audience::Everyone), &subscribers)
        .await;

    assert_eq!(report.delivered, 2, "{report:?}");
    assert_eq!(report.public_fallbacks, 0);
    assert_eq!(rig.executions.0.load(Ordering::SeqCst), 2);
    let seen: Vec<Value> = payloads(&rig, &subscribers)
        .into_iter()
        .map(|p| p.unwrap()["data"]["personal"]["seenBy"].clone())
        .collect();
    assert_eq!(seen, [json!("alice"), json!("bob")]);
}

/// The prices app over real sockets: `priceChanged` is stored as public, `alerts` is not,
/// and two users receive the same price.
#[tokio::test]
async fn the_prices_app_declares_its_price_feed_public() {
    let mut options = options(DeliveryMode::Stream);
    options.app = Arc::new(prices::Prices);
    let gateway = start(options).await;
    let backend = gateway.broker().authenticator().mint_with_roles(
        "price-feed",
        3600,
        &[prices::schema::BACKEND_ROLE],
    );
    let mut sockets = Vec::new();
    for user in ["alice", "bob"] {
        let mut socket =
            WsClient::ready(&gateway, "graphql-transport-ws", &token(&gateway, user)).await;
        socket
            .subscribe(
                "p",
                "subscription { priceChanged(symbols: [\"ACME\"]) { symbol price } }",
                json!({}),
            )
            .await;
        socket
            .subscribe("a", "subscription { alerts { message } }", json!({}))
            .await;
        socket.sync().await;
        sockets.push(socket);
    }
    let stored = gateway
        .broker()
        .ports()
        .subscriptions
        .by_topic(&prices::prices_topic())
        .await
        .unwrap();
    assert_eq!(stored.len(), 2);
    assert!(stored.iter().all(|s| s.public), "{stored:?}");
    let alerts = gateway
        .broker()
        .ports()
        .subscriptions
        .by_topic(&prices::alerts_topic(&UserId::new("alice")))
        .await
        .unwrap();
    assert_eq!(alerts.len(), 1);
    assert!(!alerts[0].public);

    let answer = http_graphql(
        &gateway,
        &backend,
        "mutation { publishPrice(symbol: \"ACME\", price: 12.5) { symbol } }",
        json!({}),
    )
    .await;
    assert!(answer["errors"].is_null(), "{answer}");
    for socket in &mut sockets {
        let message = socket.recv().await.unwrap();
        assert_eq!(
            message["payload"]["data"],
            json!({"priceChanged": {"symbol": "ACME", "price": 12.5}}),
            "{message}"
        );
    }
    gateway.shutdown().await;
}
