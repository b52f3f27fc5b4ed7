//! Cost limits and delivery costs, through the handlers and the broker's own entry points:
//! hostile documents are refused before any resolver runs, on every transport; a connection
//! holds a bounded number of subscriptions; delivery reads nothing per subscriber; a failed
//! post is retried for its subscriber alone.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use aws_lambda_events::apigw::ApiGatewayV2httpRequest;
use aws_lambda_events::encodings::Body;
use boards::{Board, BoardStore, Card, MemoryBoardStore, build_schema};
use broker::memory::{
    ChannelFanoutQueue, MemoryConnectionStore, MemoryEventLog, MemoryPageMarks,
    MemorySubscriptionStore,
};
use broker::{
    AuthConfig, Authenticator, Broker, BrokerConfig, CloseCode, ConnectionGateway, ConnectionId,
    FanoutPage, GatewayError, Ports, StoreError, Topic, UserId,
};
use broker_tests::documents::fragment_bomb;
use broker_tests::fixtures::*;
use graphql_api::http_api;
use serde_json::{Value, json};

fn post(h: &Harness, body: String) -> ApiGatewayV2httpRequest {
    let mut request: ApiGatewayV2httpRequest = fixture("http-query.json", &h.token);
    request.request_context.http.method = http::Method::POST;
    request.raw_query_string = None;
    request.body = Some(body);
    request.is_base64_encoded = false;
    request
        .headers
        .insert("content-type", "application/json".parse().unwrap());
    request
}

fn body_json(body: Option<Body>) -> Value {
    match body {
        Some(Body::Text(text)) => serde_json::from_str(&text).unwrap(),
        other => panic!("expected a text body, got {other:?}"),
    }
}

fn first_error(body: &Value) -> String {
    body["errors"][0]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("expected a GraphQL error: {body}"))
        .to_owned()
}

#[tokio::test]
async fn http_refuses_a_fragment_bomb_with_a_graphql_error() {
    let h = harness().await;
    let body = json!({ "query": fragment_bomb(20) }).to_string();
    let reply = http_api::handle(&h.broker, post(&h, body)).await;
    // The fixture accepts application/graphql-response+json: a request that did not run is
    // 400 without data.
    assert_eq!(reply.status_code, 400);
    let body = body_json(reply.body);
    assert!(
        first_error(&body).contains("more than 1000 fields"),
        "{body}"
    );
    assert!(body.get("data").is_none(), "nothing ran: {body}");
}

#[tokio::test]
async fn http_get_refuses_a_fragment_bomb_too() {
    let h = harness().await;
    let mut request: ApiGatewayV2httpRequest = fixture("http-query.json", &h.token);
    request.request_context.http.method = http::Method::GET;
    request.body = None;
    let query: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("query", &fragment_bomb(20))
        .finish();
    request.raw_query_string = Some(query);
    let reply = http_api::handle(&h.broker, request).await;
    let body = body_json(reply.body);
    assert!(
        first_error(&body).contains("more than 1000 fields"),
        "{body}"
    );
}

#[tokio::test]
async fn http_refuses_documents_over_each_budget() {
    let h = harness().await;
    let cases = [
        (
            format!("{{ {} }}", "boards { id } ".repeat(600)),
            "more than 1000 fields",
        ),
        (
            format!("{{ boards {{ id {} }} }}", "@skip(if: false) ".repeat(100)),
            "more than 64 directives",
        ),
        (
            (0..100)
                .map(|i| format!("query Q{i} {{ boards {{ id }} }}\n"))
                .collect(),
            "more than 16 operations",
        ),
        (
            format!("{{ boards(x: \"{}\") {{ id }} }}", "x".repeat(40_000)),
            "at most 32768 are accepted",
        ),
        (
            format!("{{ {} }}", "a: boards { id } ".repeat(101)),
            "more than 100 aliases",
        ),
        (
            format!("{}{}", "{ boards ".repeat(70), "}".repeat(70)),
            "brackets more than 64 deep",
        ),
    ];
    for (document, expected) in cases {
        let body = json!({ "query": document }).to_string();
        let reply = http_api::handle(&h.broker, post(&h, body)).await;
        let body = body_json(reply.body);
        assert!(first_error(&body).contains(expected), "{expected}: {body}");
    }
}

#[tokio::test]
async fn http_refuses_a_body_over_the_request_limit() {
    let h = harness().await;
    let body = json!({ "query": format!("{{ boards(x: \"{}\") {{ id }} }}", "x".repeat(5 << 20)) })
        .to_string();
    let reply = http_api::handle(&h.broker, post(&h, body)).await;
    assert_eq!(reply.status_code, 413);
    assert!(first_error(&body_json(reply.body)).contains("over 131072 bytes"));
}

/// A connection of `user-a`, initialised; returns its id.
async fn open(broker: &Broker, token: &str, id: &str) -> ConnectionId {
    let id = ConnectionId::from(id);
    broker
        .connect(id.clone(), Some("graphql-transport-ws"), Some(token))
        .await
        .unwrap();
    broker
        .receive(&id, r#"{"type":"connection_init"}"#)
        .await
        .unwrap();
    id
}

fn subscribe(operation_id: &str, query: &str) -> String {
    json!({"type": "subscribe", "id": operation_id, "payload": {"query": query}}).to_string()
}

const CARD_ADDED: &str = r#"subscription { cardAdded(boardId: "b1") { id title } }"#;

#[tokio::test]
async fn socket_operations_and_subscriptions_over_budget_get_an_error_message() {
    let h = harness().await;
    let id = open(&h.broker, &h.token, "c1").await;
    h.gateway.take(&id);

    let bomb = format!(
        "subscription {{ cardAdded(boardId: \"b1\") {{ ...F0 }} }}\n{}",
        fragment_bomb(20)
            .replace("{ ...F0 }\n", "")
            .replace("on Query", "on Card")
            .replace("__typename", "id")
    );
    h.broker.receive(&id, &subscribe("1", &bomb)).await.unwrap();
    h.broker
        .receive(&id, &subscribe("2", &fragment_bomb(20)))
        .await
        .unwrap();
    let frames = h.gateway.take(&id);
    assert_eq!(frames.len(), 2, "{frames:?}");
    for frame in &frames {
        assert_eq!(frame["type"], "error", "{frame}");
        let message = frame["payload"][0]["message"].as_str().unwrap();
        assert!(message.contains("more than 1000 fields"), "{message}");
    }
    assert!(
        h.broker
            .ports()
            .subscriptions
            .by_topic(&Topic::from("board/b1/cardAdded"))
            .await
            .unwrap()
            .is_empty(),
        "nothing refused is stored"
    );
    assert!(h.gateway.closed().is_empty(), "the connection stays open");
}

#[tokio::test]
async fn a_connection_holds_at_most_the_configured_number_of_subscriptions() {
    let h = harness().await;
    let id = open(&h.broker, &h.token, "c1").await;
    h.gateway.take(&id);
    for n in 0..100 {
        h.broker
            .receive(&id, &subscribe(&n.to_string(), CARD_ADDED))
            .await
            .unwrap();
    }
    assert!(h.gateway.take(&id).is_empty(), "100 subscriptions accepted");

    h.broker
        .receive(&id, &subscribe("100", CARD_ADDED))
        .await
        .unwrap();
    let frames = h.gateway.take(&id);
    assert_eq!(frames[0]["type"], "error");
    assert_eq!(frames[0]["id"], "100");
    assert!(
        frames[0]["payload"][0]["message"]
            .as_str()
            .unwrap()
            .contains("at most 100 subscriptions")
    );

    // Ending one makes room for another.
    h.broker
        .receive(&id, r#"{"type":"complete","id":"0"}"#)
        .await
        .unwrap();
    h.broker
        .receive(&id, &subscribe("100", CARD_ADDED))
        .await
        .unwrap();
    assert!(h.gateway.take(&id).is_empty());
    let subs = &h.broker.ports().subscriptions;
    assert_eq!(subs.count_by_connection(&id).await.unwrap(), 100);
}

/// A board store that counts its reads.
struct CountingBoards {
    inner: MemoryBoardStore,
    reads: AtomicUsize,
}

#[async_trait]
impl BoardStore for CountingBoards {
    async fn create_board(&self, board: &Board) -> Result<(), StoreError> {
        self.inner.create_board(board).await
    }
    fn create_board_changes(&self, board: &Board) -> Result<broker::Changes, StoreError> {
        self.inner.create_board_changes(board)
    }
    async fn board(&self, id: &str) -> Result<Option<Board>, StoreError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.board(id).await
    }
    async fn boards_of(&self, owner: &UserId) -> Result<Vec<Board>, StoreError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.boards_of(owner).await
    }
    async fn add_card(&self, card: &Card) -> Result<(), StoreError> {
        self.inner.add_card(card).await
    }
    fn add_card_changes(&self, card: &Card) -> Result<broker::Changes, StoreError> {
        self.inner.add_card_changes(card)
    }
    async fn cards_of(&self, board_id: &str) -> Result<Vec<Card>, StoreError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.cards_of(board_id).await
    }
    async fn delete_board(&self, id: &str) -> Result<bool, StoreError> {
        self.inner.delete_board(id).await
    }
}

/// A gateway that fails the first `failures` posts to a connection, then succeeds;
/// frames that succeed are recorded.
#[derive(Default)]
struct FlakyGateway {
    failures: Mutex<HashMap<ConnectionId, usize>>,
    frames: Mutex<HashMap<ConnectionId, Vec<String>>>,
}

impl FlakyGateway {
    fn fail(&self, id: &str, times: usize) {
        self.failures.lock().unwrap().insert(id.into(), times);
    }
    fn received(&self, id: &str) -> usize {
        self.frames
            .lock()
            .unwrap()
            .get(&ConnectionId::from(id))
            .map_or(0, Vec::len)
    }
}

#[async_trait]
impl ConnectionGateway for FlakyGateway {
    async fn post(&self, id: &ConnectionId, frame: &str) -> Result<(), GatewayError> {
        if let Some(left) = self.failures.lock().unwrap().get_mut(id)
            && *left > 0
        {
            *left -= 1;
            return Err(GatewayError::backend("timed out"));
        }
        let mut frames = self.frames.lock().unwrap();
        frames.entry(id.clone()).or_default().push(frame.to_owned());
        Ok(())
    }
    async fn close(&self, _: &ConnectionId, _: CloseCode, _: &str) -> Result<(), GatewayError> {
        Ok(())
    }
}

struct Rig {
    broker: Broker,
    boards: Arc<CountingBoards>,
    gateway: Arc<FlakyGateway>,
    pages: tokio::sync::mpsc::UnboundedReceiver<FanoutPage>,
    token: String,
}

async fn rig(with_queue: bool) -> Rig {
    let gateway = Arc::new(FlakyGateway::default());
    let (queue, pages) = ChannelFanoutQueue::new();
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
    let boards = Arc::new(CountingBoards {
        inner: MemoryBoardStore::new(&Default::default()),
        reads: AtomicUsize::new(0),
    });
    boards
        .create_board(&Board {
            id: BOARD.into(),
            title: "Board".into(),
            owner: USER.into(),
        })
        .await
        .unwrap();
    let auth = Authenticator::new(AuthConfig {
        secret: "fixture-secret-0123456789-0123456789".into(),
        issuer: None,
        audience: None,
        leeway_secs: broker::auth::DEFAULT_LEEWAY_SECS,
    });
    let token = auth.mint(USER, 600);
    let config = BrokerConfig {
        // Every event goes out inline here; pages only carry what failed.
        fanout_threshold: usize::MAX,
        ..Default::default()
    };
    let broker = Broker::new(build_schema(boards.clone()), ports, auth, config);
    Rig {
        broker,
        boards,
        gateway,
        pages,
        token,
    }
}

/// Five connections of `user-a` on board b1, with documents that differ.
async fn five_subscribers(rig: &Rig) {
    for n in 0..5 {
        let id = open(&rig.broker, &rig.token, &format!("c{n}")).await;
        let alias = format!("subscription {{ a{n}: cardAdded(boardId: \"b1\") {{ id }} }}");
        rig.broker
            .receive(&id, &subscribe("s", &alias))
            .await
            .unwrap();
    }
    // Only what delivery posts counts.
    rig.gateway.frames.lock().unwrap().clear();
}

fn card_event() -> broker::Event {
    broker::Event::new(
        Topic::from("board/b1/cardAdded"),
        json!({"id": "k1", "boardId": "b1", "title": "T"}),
        broker::Audience::User(USER.into()),
    )
}

#[tokio::test]
async fn delivery_reads_nothing_from_the_app_store_per_subscriber() {
    let rig = rig(false).await;
    five_subscribers(&rig).await;
    let at_subscribe = rig.boards.reads.load(Ordering::SeqCst);
    assert_eq!(at_subscribe, 5, "ownership is checked once per subscribe");

    let report = rig.broker.deliver_event(card_event()).await.unwrap();
    assert_eq!(report.delivered, 5);
    assert_eq!(
        rig.boards.reads.load(Ordering::SeqCst),
        at_subscribe,
        "five renderings, no store read"
    );
}

#[tokio::test]
async fn a_failed_post_is_retried_for_its_subscriber_alone() {
    let rig = rig(false).await;
    five_subscribers(&rig).await;
    // c2's first two posts time out; the third attempt goes through.
    rig.gateway.fail("c2", 2);
    let report = rig.broker.deliver_event(card_event()).await.unwrap();
    assert!(report.is_complete(), "{report:?}");
    for n in 0..5 {
        assert_eq!(rig.gateway.received(&format!("c{n}")), 1, "c{n}");
    }
}

#[tokio::test]
async fn posts_that_keep_failing_are_re_enqueued_alone() {
    let mut rig = rig(true).await;
    five_subscribers(&rig).await;
    rig.gateway.fail("c3", usize::MAX);
    let event = card_event();
    rig.broker.ports().events.append(&event).await.unwrap();

    let report = rig.broker.deliver_event(event.clone()).await.unwrap();
    assert!(report.is_complete(), "the failure is handed on: {report:?}");
    assert_eq!(report.delivered, 4);
    assert_eq!(report.pages_enqueued, 1);
    let page = rig.pages.try_recv().unwrap();
    assert_eq!(page.subscription_keys, vec!["c3#s".to_owned()]);

    // The page fails as a whole while nothing of it goes out: its retry duplicates nothing.
    let report = rig.broker.deliver_page(&page).await.unwrap();
    assert!(!report.is_complete());
    assert!(rig.pages.try_recv().is_err());

    rig.gateway.fail("c3", 0);
    let report = rig.broker.deliver_page(&page).await.unwrap();
    assert!(report.is_complete());
    for n in 0..5 {
        assert_eq!(
            rig.gateway.received(&format!("c{n}")),
            1,
            "c{n} got it once"
        );
    }
}

#[tokio::test]
async fn a_page_that_partly_fails_goes_on_with_the_failed_subscriptions_only() {
    let mut rig = rig(true).await;
    five_subscribers(&rig).await;
    let event = card_event();
    rig.broker.ports().events.append(&event).await.unwrap();
    rig.gateway.fail("c1", usize::MAX);
    rig.gateway.fail("c4", usize::MAX);
    let page = FanoutPage {
        topic: event.topic.clone(),
        event_id: event.id.clone(),
        group: broker::fanout::group_name(&event.topic, 0),
        subscription_keys: (0..5).map(|n| format!("c{n}#s")).collect(),
    };
    let report = rig.broker.deliver_page(&page).await.unwrap();
    assert!(report.is_complete(), "{report:?}");
    // The failed subscriptions go on in pages of their own buckets.
    let mut next = Vec::new();
    while let Ok(page) = rig.pages.try_recv() {
        for key in page.keys() {
            let bucket = broker::fanout::bucket_of(&key.connection_id, 32);
            assert_eq!(page.group, broker::fanout::group_name(&event.topic, bucket));
        }
        next.extend(page.subscription_keys);
    }
    next.sort();
    assert_eq!(next, ["c1#s", "c4#s"]);
    assert_eq!(
        (0..5)
            .map(|n| rig.gateway.received(&format!("c{n}")))
            .collect::<Vec<_>>(),
        [1, 0, 1, 1, 0]
    );
}

#[tokio::test]
async fn when_the_queue_refuses_failed_posts_the_event_stays_failed_to_be_retried() {
    // The harness's queue has no worker listening: re-enqueueing fails, so the event must
    // be reported incomplete and retried.
    let h = harness().await;
    let id = open(&h.broker, &h.token, "c1").await;
    h.broker
        .receive(&id, &subscribe("s", CARD_ADDED))
        .await
        .unwrap();
    h.gateway.take(&id);
    h.gateway.set_failing(&id);
    let report = h.broker.deliver_event(card_event()).await.unwrap();
    assert_eq!(report.failed, 1);
    assert_eq!(report.failed_keys.len(), 1);
    assert_eq!(report.pages_enqueued, 0);
}
