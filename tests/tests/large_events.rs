//! An event whose rendered frame is over API Gateway's 128 KB message limit: its subscriber
//! gets an `EVENT_TOO_LARGE` error with the event id in its place, the delivery report and the
//! metrics count it, the log says so, and nothing retries it. Over real sockets in the local
//! mode (both delivery modes, both subprotocols) and on the broker.

use std::io::Write;
use std::sync::{Arc, Mutex};

use async_graphql::{Context, Object, Schema, SimpleObject, Subscription};
use broker::delivery::{EVENT_TOO_LARGE, MAX_FRAME_BYTES};
use broker::metrics::InvocationMetrics;
use broker::{
    App, AppSchema, Audience, ConfigError, DeliveryMode, EventStream, FanoutPage, Outbox, Protocol,
    Storage, Subscription, SubscriptionKey, Topic, UserId, internal_error, listen, principal,
};
use broker_tests::fixtures::*;
use broker_tests::local::*;
use local_gateway::LocalGateway;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

const MODES: [DeliveryMode; 2] = [DeliveryMode::Stream, DeliveryMode::Direct];

/// Asks for the title twice: a 70 KB title fits in the mutation (under `MAX_REQUEST_BYTES`)
/// but not in the frame that delivers it.
const TWICE: &str = "subscription($b: ID!) { cardAdded(boardId: $b) { id a: title b: title } }";
const ID_ONLY: &str = "subscription($b: ID!) { cardAdded(boardId: $b) { id } }";

fn big_title() -> String {
    "x".repeat(70 * 1024)
}

/// The error a subscriber gets for an event too large for it; returns the event id.
fn assert_too_large(message: &Value, operation: &str) -> String {
    let kind = message["type"].as_str().unwrap();
    assert!(kind == "next" || kind == "data", "{message}");
    assert_eq!(message["id"], operation);
    let payload = &message["payload"];
    assert!(payload["data"].is_null(), "{message}");
    let error = &payload["errors"][0];
    assert_eq!(error["extensions"]["code"], EVENT_TOO_LARGE, "{message}");
    let id = payload["extensions"]["eventId"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(error["extensions"]["eventId"], id.as_str());
    id
}

/// An app whose events are as large as asked: `publishBlob(size)` sends the caller's own
/// subscribers (`blob { text }`) `size` bytes of text.
struct Blobs;

#[derive(Clone, SimpleObject, Serialize, Deserialize)]
struct Blob {
    text: String,
}

struct BlobQuery;

#[Object]
impl BlobQuery {
    async fn ok(&self) -> bool {
        true
    }
}

struct BlobMutation;

#[Object]
impl BlobMutation {
    async fn publish_blob(&self, ctx: &Context<'_>, size: usize) -> async_graphql::Result<bool> {
        let user = principal(ctx)?;
        if size > 1 << 20 {
            return Err("at most 1 MB".into());
        }
        let blob = Blob {
            text: "x".repeat(size),
        };
        ctx.data::<Outbox>()?
            .publish(
                Topic::private(user, "blob"),
                &blob,
                Audience::User(user.clone()),
            )
            .await
            .map_err(internal_error)?;
        Ok(true)
    }
}

struct BlobSubscription;

#[Subscription]
impl BlobSubscription {
    async fn blob(&self, ctx: &Context<'_>) -> async_graphql::Result<EventStream<Blob>> {
        let user = principal(ctx)?;
        listen(ctx, Topic::private(user, "blob"))
    }
}

impl App for Blobs {
    fn schema(&self, _storage: &Storage) -> Result<AppSchema, ConfigError> {
        Ok(Schema::new(BlobQuery, BlobMutation, BlobSubscription).into())
    }
}

async fn publish_blob(gateway: &LocalGateway, token: &str, size: usize) {
    let answer = http_graphql(
        gateway,
        token,
        "mutation($n: Int!) { publishBlob(size: $n) }",
        json!({"n": size}),
    )
    .await;
    assert_eq!(answer["data"]["publishBlob"], true, "{answer}");
}

#[tokio::test]
async fn a_frame_over_the_gateways_limit_reaches_its_subscriber_as_an_error() {
    for mode in MODES {
        for protocol in ["graphql-transport-ws", "graphql-ws"] {
            let mut options = options(mode);
            options.app = Arc::new(Blobs);
            let gateway = start(options).await;
            let alice = token(&gateway, "alice");
            let mut tab = WsClient::ready(&gateway, protocol, &alice).await;
            tab.subscribe("big", "subscription { blob { text } }", json!({}))
                .await;
            tab.sync().await;

            // Just over API Gateway's limit once in a frame.
            publish_blob(&gateway, &alice, MAX_FRAME_BYTES).await;
            let message = tab.recv().await.unwrap();
            assert_too_large(&message, "big");

            // The subscription goes on, and nothing comes again.
            publish_blob(&gateway, &alice, 100).await;
            let next = tab.recv().await.unwrap();
            assert_eq!(
                next["payload"]["data"]["blob"]["text"],
                "x".repeat(100),
                "{mode:?} {protocol}: {next}"
            );
            tab.sync().await;
            gateway.shutdown().await;
        }
    }
}

fn subscription(operation: &str, document: &str) -> Subscription {
    Subscription {
        key: SubscriptionKey {
            connection_id: CONNECTION.into(),
            operation_id: operation.to_owned(),
        },
        topic: Topic::from("board/b1/cardAdded"),
        protocol: Protocol::GraphqlTransportWs,
        principal: USER.into(),
        document: document.to_owned(),
        operation_name: None,
        variables: json!({"b": BOARD}),
        expires_at: u64::MAX,
        starts_at_ms: 0,
        replaying_until_ms: 0,
        public: false,
    }
}

/// Everything the subscriber writes, shared with the test.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "current_thread")]
async fn the_broker_counts_logs_and_never_retries_an_event_too_large() {
    let captured = Captured::default();
    let writer = captured.clone();
    let _logs = tracing::subscriber::set_default(graphql_api::runtime::json_logs(
        move || writer.clone(),
        tracing_subscriber::EnvFilter::new("info"),
    ));
    let h = harness().await;
    let store = h.broker.ports().subscriptions.clone();
    store.insert(&subscription("big", TWICE)).await.unwrap();
    store.insert(&subscription("small", ID_ONLY)).await.unwrap();

    let card = json!({"id": "c1", "boardId": BOARD, "title": big_title()});
    let audience = Audience::User(UserId::from(USER));
    let event = h
        .broker
        .publish(Topic::from("board/b1/cardAdded"), &card, audience)
        .await
        .unwrap();
    let report = h.broker.deliver_event(event.clone()).await.unwrap();
    assert_eq!(report.too_large, 1);
    assert_eq!(report.delivered, 1);
    assert_eq!((report.failed, report.dropped), (0, 0));
    assert!(report.is_complete(), "not retried: {report:?}");

    let frames = h.gateway.take(&CONNECTION.into());
    assert_eq!(frames.len(), 2);
    let error = frames.iter().find(|f| f["id"] == "big").unwrap();
    assert_eq!(assert_too_large(error, "big"), event.id);
    assert!(
        error.to_string().len() < 1024,
        "the error is small: {error}"
    );
    assert!(
        frames
            .iter()
            .all(|f| f.to_string().len() <= MAX_FRAME_BYTES)
    );

    // A retried batch finds the event delivered and posts nothing.
    let again = h.broker.deliver_event(event.clone()).await.unwrap();
    assert_eq!(again.too_large, 0);
    assert!(h.gateway.take(&CONNECTION.into()).is_empty());

    // A fan-out page alike.
    let page = FanoutPage {
        topic: event.topic.clone(),
        event_id: event.id.clone(),
        group: broker::fanout::group_name(&event.topic, 0),
        subscription_keys: vec![format!("{CONNECTION}#big")],
    };
    let paged = h.broker.deliver_page(&page).await.unwrap();
    assert_eq!((paged.too_large, paged.delivered, paged.failed), (1, 0, 0));
    assert_eq!(paged.pages_enqueued, 0, "nothing goes back to the queue");

    // The metrics and the log.
    let mut metrics = InvocationMetrics::default();
    metrics.add(&report, None);
    let emf = metrics.to_emf("Test", "StreamPublisherFunction", 0);
    assert_eq!(emf["TooLarge"], 1);
    assert!(
        emf["_aws"]["CloudWatchMetrics"][0]["Metrics"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["Name"] == "TooLarge")
    );
    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let line = logs
        .lines()
        .find(|line| line.contains("too large"))
        .unwrap_or_else(|| panic!("no log line: {logs}"));
    assert!(line.contains(&event.id), "{line}");
    assert!(line.contains(&format!("{CONNECTION}#big")), "{line}");
}
