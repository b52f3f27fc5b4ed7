//! The Lambda handlers fed with the sample events in `events/` (real API Gateway, DynamoDB
//! Stream and SQS shapes).

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayWebsocketProxyRequest};
use aws_lambda_events::dynamodb::Event as StreamEvent;
use aws_lambda_events::encodings::Body;
use aws_lambda_events::sqs::SqsEvent;
use broker::{
    ConnectionId, PageMarks, Subscription, SubscriptionKey, SubscriptionStore, Topic, UserId,
};
use broker_tests::fixtures::*;
use graphql_api::{http_api, websocket};
use serde_json::{Value, json};

fn ws(h: &Harness, name: &str) -> ApiGatewayWebsocketProxyRequest {
    fixture(name, &h.token)
}

async fn subscribed(h: &Harness) {
    for name in ["connect.json", "connection-init.json", "subscribe.json"] {
        let reply = websocket::handle(&h.broker, ws(h, name)).await.unwrap();
        assert_eq!(reply.status_code, 200, "{name}");
    }
    h.gateway.take(&CONNECTION.into());
}

#[tokio::test]
async fn websocket_fixtures_walk_a_connection_through_its_life() {
    let h = harness().await;
    let id = ConnectionId::from(CONNECTION);
    let ports = h.broker.ports();

    let reply = websocket::handle(&h.broker, ws(&h, "connect.json"))
        .await
        .unwrap();
    assert_eq!(reply.status_code, 200);
    assert_eq!(
        reply.headers["sec-websocket-protocol"],
        "graphql-transport-ws"
    );
    let stored = ports.connections.get(&id).await.unwrap().unwrap();
    assert_eq!(stored.principal, Some(UserId::from(USER)));
    assert!(!stored.initialised);

    websocket::handle(&h.broker, ws(&h, "connection-init.json"))
        .await
        .unwrap();
    assert_eq!(h.gateway.take(&id), vec![json!({"type": "connection_ack"})]);

    websocket::handle(&h.broker, ws(&h, "ping.json"))
        .await
        .unwrap();
    assert_eq!(h.gateway.take(&id)[0]["type"], "pong");

    websocket::handle(&h.broker, ws(&h, "subscribe.json"))
        .await
        .unwrap();
    let topic = Topic::from("board/b1/cardAdded");
    let subs = ports.subscriptions.by_topic(&topic).await.unwrap();
    assert_eq!(subs.len(), 1);
    assert_eq!(subs[0].operation_name.as_deref(), Some("CardAdded"));
    assert_eq!(subs[0].variables, json!({"boardId": "b1"}));
    assert!(
        h.gateway.take(&id).is_empty(),
        "subscribe sends nothing until an event"
    );

    websocket::handle(&h.broker, ws(&h, "complete.json"))
        .await
        .unwrap();
    assert!(
        ports
            .subscriptions
            .by_topic(&topic)
            .await
            .unwrap()
            .is_empty()
    );

    websocket::handle(&h.broker, ws(&h, "subscribe.json"))
        .await
        .unwrap();
    websocket::handle(&h.broker, ws(&h, "disconnect.json"))
        .await
        .unwrap();
    assert!(ports.connections.get(&id).await.unwrap().is_none());
    assert!(
        ports
            .subscriptions
            .by_topic(&topic)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn connect_with_a_bad_token_is_refused_and_nothing_is_stored() {
    let h = harness().await;
    let event: ApiGatewayWebsocketProxyRequest = fixture("connect.json", "forged.token.value");
    let reply = websocket::handle(&h.broker, event).await.unwrap();
    assert_eq!(reply.status_code, 401);
    let id = ConnectionId::from(CONNECTION);
    assert!(
        h.broker
            .ports()
            .connections
            .get(&id)
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn connect_offering_only_unknown_subprotocols_is_refused() {
    let h = harness().await;
    let mut event = ws(&h, "connect.json");
    event
        .headers
        .insert("sec-websocket-protocol", "mqtt".parse().unwrap());
    assert_eq!(
        websocket::handle(&h.broker, event)
            .await
            .unwrap()
            .status_code,
        400
    );
}

fn body_json(body: Option<Body>) -> Value {
    match body {
        Some(Body::Text(text)) => serde_json::from_str(&text).unwrap(),
        other => panic!("expected a text body, got {other:?}"),
    }
}

#[tokio::test]
async fn http_fixtures_answer_queries_and_mutations() {
    let h = harness().await;
    let query: ApiGatewayV2httpRequest = fixture("http-query.json", &h.token);
    let reply = http_api::handle(&h.broker, query).await;
    assert_eq!(reply.status_code, 200);
    assert_eq!(
        body_json(reply.body)["data"]["boards"][0]["id"],
        BOARD,
        "user-a sees the board it owns"
    );

    let mutation: ApiGatewayV2httpRequest = fixture("http-mutation.json", &h.token);
    let reply = http_api::handle(&h.broker, mutation).await;
    assert_eq!(reply.status_code, 200);
    let body = body_json(reply.body);
    assert!(body["errors"].is_null(), "{body}");
    // Stream mode: the mutation appended exactly one event for the publisher.
    assert_eq!(h.events.read_from(0, 10).0.len(), 1);

    let anonymous: ApiGatewayV2httpRequest = fixture("http-query.json", "");
    assert_eq!(
        http_api::handle(&h.broker, anonymous).await.status_code,
        401
    );
}

/// The fixture's records as events published now, after the subscription was stored
/// (a subscription receives only what was published after it): fresh ids, in order, and
/// a fresh expiry.
fn published_now(mut batch: StreamEvent) -> StreamEvent {
    let mut ids = ulid::Generator::new();
    for record in &mut batch.records {
        let id = serde_dynamo::AttributeValue::S(ids.generate().unwrap().to_string());
        record.change.keys.insert("eventId".to_owned(), id.clone());
        record.change.new_image.insert("eventId".to_owned(), id);
        // Kept for a day from now: the log removes expired events.
        let ttl = broker::domain::now_secs() + 86_400;
        record.change.new_image.insert(
            "ttl".to_owned(),
            serde_dynamo::AttributeValue::N(ttl.to_string()),
        );
    }
    batch
}

#[tokio::test]
async fn stream_fixture_delivers_inserts_once_and_ignores_ttl_removals() {
    let h = harness().await;
    subscribed(&h).await;
    let id = ConnectionId::from(CONNECTION);

    let batch: StreamEvent = published_now(fixture("stream-batch.json", ""));
    // A stream record stands for an item of the events table: the log holds its event,
    // which is where the delivered mark goes.
    for record in &batch.records {
        let event = broker::aws::event_from_image(record.change.new_image.clone()).unwrap();
        h.broker.ports().events.append(&event).await.unwrap();
    }
    let response = publisher::stream::handle(&h.broker, batch.clone()).await;
    assert!(response.batch_item_failures.is_empty());
    let frames = h.gateway.take(&id);
    let titles: Vec<&Value> = frames
        .iter()
        .map(|f| &f["payload"]["data"]["cardAdded"]["title"])
        .collect();
    assert_eq!(titles, [&json!("Hello"), &json!("World")]);
    assert_eq!(frames[0]["type"], "next");
    assert_eq!(frames[0]["id"], "1");

    // Lambda retries batches: a second delivery of the same records posts nothing.
    let response = publisher::stream::handle(&h.broker, batch).await;
    assert!(response.batch_item_failures.is_empty());
    assert!(h.gateway.take(&id).is_empty());

    let removal: StreamEvent = fixture("stream-ttl-remove.json", "");
    let response = publisher::stream::handle(&h.broker, removal).await;
    assert!(response.batch_item_failures.is_empty());
    assert!(h.gateway.take(&id).is_empty());
}

#[tokio::test]
async fn a_bad_stream_record_is_skipped_not_retried_and_the_rest_delivered() {
    let h = harness().await;
    subscribed(&h).await;
    let mut batch: StreamEvent = published_now(fixture("stream-batch.json", ""));
    let bad = &mut batch.records[0];
    bad.change.new_image.insert(
        "payload".to_owned(),
        serde_dynamo::AttributeValue::S("not json".to_owned()),
    );

    // No retry could decode it: it is reported processed (Lambda would otherwise retry it
    // and every record after it), and counted.
    let (response, metrics) =
        broker::metrics::collect(publisher::stream::handle(&h.broker, batch)).await;
    assert!(
        response.batch_item_failures.is_empty(),
        "{:?}",
        response.batch_item_failures
    );
    assert_eq!(metrics.undeliverable, 1);
    let frames = h.gateway.take(&ConnectionId::from(CONNECTION));
    assert_eq!(frames.len(), 1, "the good record is still delivered");
    assert_eq!(frames[0]["payload"]["data"]["cardAdded"]["title"], "World");
}

#[tokio::test]
async fn an_event_never_reaches_a_subscription_outside_its_audience() {
    let h = harness().await;
    // A subscription of another user stored on user-a's board topic, as a bug or a
    // tampered table might leave it.
    let intruder = Subscription {
        key: SubscriptionKey {
            connection_id: "intruder".into(),
            operation_id: "1".into(),
        },
        topic: Topic::from("board/b1/cardAdded"),
        protocol: broker::Protocol::GraphqlTransportWs,
        principal: UserId::from("user-b"),
        document: "subscription { cardAdded(boardId: \"b1\") { title } }".into(),
        operation_name: None,
        variables: json!({}),
        expires_at: u64::MAX,
        starts_at_ms: 0,
        replaying_until_ms: 0,
        public: false,
    };
    h.broker
        .ports()
        .subscriptions
        .insert(&intruder)
        .await
        .unwrap();

    let batch: StreamEvent = fixture("stream-batch.json", "");
    let response = publisher::stream::handle(&h.broker, batch).await;
    assert!(response.batch_item_failures.is_empty());
    assert!(h.gateway.take(&"intruder".into()).is_empty());
}

#[tokio::test]
async fn sqs_fixture_delivers_its_page_and_reports_bad_messages() {
    let h = harness().await;
    let batch: SqsEvent = fixture("sqs-fanout.json", "");
    let page: broker::FanoutPage =
        serde_json::from_str(batch.records[0].body.as_deref().unwrap()).unwrap();
    let event = broker::Event {
        id: page.event_id.clone(),
        topic: page.topic.clone(),
        payload: json!({"id": "c9", "boardId": "b1", "title": "Paged"}),
        audience: broker::Audience::User(USER.into()),
        published_at_ms: 0,
        expires_at: u64::MAX,
        direct: false,
    };
    broker::EventLog::append(h.events.as_ref(), &event)
        .await
        .unwrap();
    for key in &page.subscription_keys {
        let key = SubscriptionKey::decode(key).unwrap();
        let subscription = Subscription {
            key,
            topic: page.topic.clone(),
            protocol: broker::Protocol::GraphqlWs,
            principal: USER.into(),
            document: "subscription { cardAdded(boardId: \"b1\") { title } }".into(),
            operation_name: None,
            variables: json!({}),
            expires_at: u64::MAX,
            starts_at_ms: 0,
            replaying_until_ms: 0,
            public: false,
        };
        h.broker
            .ports()
            .subscriptions
            .insert(&subscription)
            .await
            .unwrap();
    }

    let mut with_poison = batch.clone();
    let mut poison = batch.records[0].clone();
    poison.message_id = Some("poison".into());
    poison.body = Some("{\"not\": \"a page\"}".into());
    with_poison.records.push(poison);

    let response = publisher::fanout::handle(&h.broker, with_poison).await;
    let failed: Vec<_> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect();
    assert_eq!(failed, ["poison"]);
    for connection in ["conn1", "conn29"] {
        let frames = h.gateway.take(&connection.into());
        assert_eq!(frames.len(), 1, "{connection}");
        assert_eq!(frames[0]["type"], "data", "legacy protocol frame");
        assert_eq!(frames[0]["payload"]["data"]["cardAdded"]["title"], "Paged");
    }
}

fn subscription(connection: &str, topic: &str, document: &str) -> Subscription {
    Subscription {
        key: SubscriptionKey {
            connection_id: connection.into(),
            operation_id: "1".into(),
        },
        topic: Topic::from(topic),
        protocol: broker::Protocol::GraphqlTransportWs,
        principal: USER.into(),
        document: document.into(),
        operation_name: None,
        variables: json!({}),
        expires_at: u64::MAX,
        starts_at_ms: 0,
        replaying_until_ms: 0,
        public: false,
    }
}

#[tokio::test]
async fn a_failed_event_holds_back_later_events_of_its_topic_only() {
    let h = harness().await;
    let boards = "subscription { boardCreated { title } }";
    let cards = "subscription { cardAdded(boardId: \"b1\") { title } }";
    let board_topic = Topic::private(&USER.into(), "boardCreated");
    let subs = &h.broker.ports().subscriptions;
    subs.insert(&subscription("unreachable", board_topic.as_str(), boards))
        .await
        .unwrap();
    subs.insert(&subscription("reachable", "board/b1/cardAdded", cards))
        .await
        .unwrap();
    h.gateway.set_failing(&"unreachable".into());

    let event = |topic: &Topic, title: &str| {
        broker::Event::new(
            topic.clone(),
            json!({"id": title, "boardId": "b1", "title": title}),
            broker::Audience::User(USER.into()),
        )
    };
    let records = [
        event(&board_topic, "first"),
        event(&board_topic, "second"),
        event(&Topic::from("board/b1/cardAdded"), "card"),
    ];
    let mut batch = StreamEvent::default();
    batch.records = records
        .iter()
        .enumerate()
        .map(|(i, e)| local_gateway::stream::insert_record(e, i as u64))
        .collect();

    let response = publisher::stream::handle(&h.broker, batch).await;
    let failed: Vec<_> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone().unwrap())
        .collect();
    // The second event of the failing topic is held back, not delivered out of order...
    assert_eq!(failed, [format!("{:021}", 0), format!("{:021}", 1)]);
    // ...while the other topic's event goes out.
    let frames = h.gateway.take(&"reachable".into());
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0]["payload"]["data"]["cardAdded"]["title"], "card");
}

#[tokio::test]
async fn an_undeliverable_record_is_not_retried_and_does_not_hold_back_its_topic() {
    let h = harness().await;
    let cards = "subscription { cardAdded(boardId: \"b1\") { title } }";
    let topic = Topic::from("board/b1/cardAdded");
    h.broker
        .ports()
        .subscriptions
        .insert(&subscription("reachable", topic.as_str(), cards))
        .await
        .unwrap();
    let event = |audience: &str, title: &str| {
        broker::Event::new(
            topic.clone(),
            json!({"id": title, "boardId": "b1", "title": title}),
            broker::Audience::User(audience.into()),
        )
    };
    // GIVEN a batch whose first record's image is not an event (an empty audience), whose
    // second names a user id no token can carry (a zero-width space), and whose third is a
    // card of the same topic...
    let records = [
        event("", "empty audience"),
        event("us\u{200b}er", "invisible audience"),
        event(USER, "card"),
    ];
    let mut batch = StreamEvent::default();
    batch.records = records
        .iter()
        .enumerate()
        .map(|(i, e)| local_gateway::stream::insert_record(e, i as u64))
        .collect();

    // WHEN the publisher handles it...
    let (response, metrics) =
        broker::metrics::collect(publisher::stream::handle(&h.broker, batch)).await;

    // THEN no record is reported failed (Lambda would retry from it), the two bad ones are
    // counted as undeliverable, and the card behind them is delivered in the same call.
    assert!(
        response.batch_item_failures.is_empty(),
        "{:?}",
        response.batch_item_failures
    );
    assert_eq!(metrics.undeliverable, 2);
    let frames = h.gateway.take(&"reachable".into());
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert_eq!(frames[0]["payload"]["data"]["cardAdded"]["title"], "card");
}

#[tokio::test]
async fn an_event_for_an_invalid_user_is_refused_at_publish_and_not_stored() {
    let h = harness().await;
    let topic = Topic::from("board/b1/cardAdded");
    for bad in ["", "*", "a\u{0}b"] {
        let refused = h
            .broker
            .publish(
                topic.clone(),
                &json!({"title": "never"}),
                broker::Audience::User(bad.into()),
            )
            .await;
        assert!(
            matches!(refused, Err(broker::PublishError::Audience(_))),
            "{bad:?}: {refused:?}"
        );
    }
    // Nothing reached the log: a read from the start finds no event of the topic.
    let stored = h.broker.ports().events.after(&topic, "", 10).await.unwrap();
    assert!(stored.is_empty(), "{stored:?}");
}

// --- the races API Gateway allows --------------------------------------------------------

fn subscriptions_of_board(h: &Harness) -> impl std::future::Future<Output = Vec<Subscription>> {
    let store = h.broker.ports().subscriptions.clone();
    async move {
        store
            .by_topic(&Topic::from("board/b1/cardAdded"))
            .await
            .unwrap()
    }
}

/// API Gateway does not keep one connection's messages in order: the `complete` of an
/// operation can be handled before its `subscribe`.
#[tokio::test]
async fn a_complete_handled_before_its_subscribe_leaves_no_subscription() {
    let h = harness().await;
    let id = ConnectionId::from(CONNECTION);
    for name in ["connect.json", "connection-init.json"] {
        websocket::handle(&h.broker, ws(&h, name)).await.unwrap();
    }
    h.gateway.take(&id);

    for name in ["complete.json", "subscribe.json"] {
        let reply = websocket::handle(&h.broker, ws(&h, name)).await.unwrap();
        assert_eq!(reply.status_code, 200, "{name}");
    }
    assert_eq!(subscriptions_of_board(&h).await, vec![]);
    assert!(
        h.gateway.take(&id).is_empty(),
        "the client expects nothing more"
    );
    assert!(h.gateway.closed().is_empty(), "the socket stays open");

    // An event for the board reaches nobody.
    let mutation: ApiGatewayV2httpRequest = fixture("http-mutation.json", &h.token);
    http_api::handle(&h.broker, mutation).await;
    let (events, _) = h.events.read_from(0, 10);
    assert_eq!(events.len(), 1);
    let report = h.broker.deliver_event(events[0].clone()).await.unwrap();
    assert_eq!(report.delivered, 0);
    assert!(h.gateway.take(&id).is_empty());

    // The operation id may be used again.
    websocket::handle(&h.broker, ws(&h, "subscribe.json"))
        .await
        .unwrap();
    assert_eq!(subscriptions_of_board(&h).await.len(), 1);
}

/// The legacy protocol's `stop` before its `start`: the same.
#[tokio::test]
async fn a_legacy_stop_handled_before_its_start_leaves_no_subscription() {
    let h = harness().await;
    let mut connect = ws(&h, "connect.json");
    connect
        .headers
        .insert("sec-websocket-protocol", "graphql-ws".parse().unwrap());
    websocket::handle(&h.broker, connect).await.unwrap();
    websocket::handle(&h.broker, ws(&h, "connection-init.json"))
        .await
        .unwrap();
    let mut stop = ws(&h, "complete.json");
    stop.body = Some(r#"{"id":"1","type":"stop"}"#.to_owned());
    websocket::handle(&h.broker, stop).await.unwrap();
    let subscribe: Value =
        serde_json::from_str(ws(&h, "subscribe.json").body.as_deref().unwrap()).unwrap();
    let mut start = ws(&h, "subscribe.json");
    start.body =
        Some(json!({"id": "1", "type": "start", "payload": subscribe["payload"]}).to_string());
    websocket::handle(&h.broker, start).await.unwrap();
    assert_eq!(subscriptions_of_board(&h).await, vec![]);
}

/// A subscription store whose inserts wait until the test lets them go: a `subscribe` held
/// right before its write, while other handlers run. Its page marks can be made to fail.
#[derive(Default)]
struct HeldInserts {
    inner: broker::memory::MemorySubscriptionStore,
    pages: broker::memory::MemoryPageMarks,
    reached: tokio::sync::Notify,
    release: tokio::sync::Notify,
    /// Until when each tombstone (`complete`) and closed mark was asked to last.
    untils: std::sync::Mutex<Vec<u64>>,
    /// Reads of a topic's subscriptions.
    topic_reads: std::sync::atomic::AtomicUsize,
    /// Whether marking a fan-out page done fails, as a store that is down does.
    failing_pages_done: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl broker::SubscriptionStore for HeldInserts {
    async fn insert_within(
        &self,
        s: &Subscription,
        max: usize,
    ) -> Result<broker::Inserted, broker::StoreError> {
        self.reached.notify_one();
        self.release.notified().await;
        self.inner.insert_within(s, max).await
    }
    async fn complete(
        &self,
        key: &SubscriptionKey,
        until: u64,
    ) -> Result<bool, broker::StoreError> {
        self.untils.lock().unwrap().push(until);
        self.inner.complete(key, until).await
    }
    async fn close_connection(
        &self,
        id: &ConnectionId,
        until: u64,
    ) -> Result<usize, broker::StoreError> {
        self.untils.lock().unwrap().push(until);
        self.inner.close_connection(id, until).await
    }
    async fn contains(&self, key: &SubscriptionKey) -> Result<bool, broker::StoreError> {
        self.inner.contains(key).await
    }
    async fn delete(&self, key: &SubscriptionKey) -> Result<bool, broker::StoreError> {
        self.inner.delete(key).await
    }
    async fn by_topic(&self, topic: &Topic) -> Result<Vec<Subscription>, broker::StoreError> {
        self.topic_reads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.inner.by_topic(topic).await
    }
    async fn get_many(
        &self,
        topic: &Topic,
        keys: &[SubscriptionKey],
    ) -> Result<Vec<Subscription>, broker::StoreError> {
        self.inner.get_many(topic, keys).await
    }
    async fn count_by_connection(&self, id: &ConnectionId) -> Result<usize, broker::StoreError> {
        self.inner.count_by_connection(id).await
    }
    async fn by_connection(
        &self,
        id: &ConnectionId,
    ) -> Result<Vec<SubscriptionKey>, broker::StoreError> {
        self.inner.by_connection(id).await
    }
}

#[async_trait::async_trait]
impl broker::PageMarks for HeldInserts {
    async fn pages_enqueued(
        &self,
        topic: &Topic,
        pages: &[String],
        until: u64,
    ) -> Result<(), broker::StoreError> {
        self.pages.pages_enqueued(topic, pages, until).await
    }
    async fn page_done(&self, topic: &Topic, page: &str) -> Result<(), broker::StoreError> {
        if self
            .failing_pages_done
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            return Err(broker::StoreError::backend("the store is down"));
        }
        self.pages.page_done(topic, page).await
    }
    async fn pages_in_flight(&self, topic: &Topic) -> Result<bool, broker::StoreError> {
        self.pages.pages_in_flight(topic).await
    }
}

/// The events of one topic in a stream batch are delivered on one read of its
/// subscriptions, and every one of them arrives.
#[tokio::test]
async fn a_stream_batch_reads_a_topics_subscriptions_once() {
    let store = std::sync::Arc::new(HeldInserts::default());
    let h = harness_with(
        store.clone(),
        std::sync::Arc::new(store.inner.replay_gate()),
    )
    .await;
    // The insert goes on at once.
    store.release.notify_one();
    subscribed(&h).await;
    let batch: StreamEvent = published_now(fixture("stream-batch.json", ""));
    for record in &batch.records {
        let event = broker::aws::event_from_image(record.change.new_image.clone()).unwrap();
        h.broker.ports().events.append(&event).await.unwrap();
    }
    let reads = || store.topic_reads.load(std::sync::atomic::Ordering::Relaxed);
    let before = reads();
    let response = publisher::stream::handle(&h.broker, batch).await;
    assert!(response.batch_item_failures.is_empty());
    assert_eq!(reads() - before, 1, "two events of one topic, one read");
    let titles: Vec<Value> = h
        .gateway
        .take(&ConnectionId::from(CONNECTION))
        .iter()
        .map(|f| f["payload"]["data"]["cardAdded"]["title"].clone())
        .collect();
    assert_eq!(titles, [json!("Hello"), json!("World")]);
}

/// A page that fails on its last receive goes to the dead-letter queue, and so do the pages
/// of its group held back behind it: the worker marks them done, so the topic's next event
/// below the threshold is posted inline again instead of waiting for them until they expire.
/// Failed on an earlier receive, they stay on their way.
#[tokio::test]
async fn pages_failed_on_their_last_receive_no_longer_hold_the_topic() {
    use aws_lambda_events::sqs::SqsMessage;
    use std::sync::Arc;
    let (queue, mut pages) = broker::memory::ChannelFanoutQueue::ordered();
    let gateway = Arc::new(broker::memory::RecordingGateway::default());
    let ports = broker::Ports {
        fanout: Some(Arc::new(queue)),
        ..memory_ports(gateway.clone())
    };
    let config = broker::BrokerConfig {
        fanout_threshold: 1,
        fanout_page_size: 1,
        fanout_groups: 1,
        fanout_max_receives: Some(3),
        ..Default::default()
    };
    let schema = boards::build_schema(Arc::new(boards::MemoryBoardStore::new(&Default::default())));
    let broker = broker::Broker::new(schema, ports, fixture_authenticator(), config);
    let topic = Topic::from("board/b1/cardAdded");
    let cards = "subscription { cardAdded(boardId: \"b1\") { title } }";
    for tab in ["tab1", "tab2"] {
        let subs = &broker.ports().subscriptions;
        subs.insert(&subscription(tab, topic.as_str(), cards))
            .await
            .unwrap();
    }
    let event = broker::Event::new(
        topic.clone(),
        json!({"id": "c1", "boardId": "b1", "title": "first"}),
        broker::Audience::User(USER.into()),
    );
    broker.ports().events.append(&event).await.unwrap();
    assert_eq!(broker.deliver_event(event).await.unwrap().pages_enqueued, 2);
    let pages = [pages.try_recv().unwrap(), pages.try_recv().unwrap()];
    // The first page's subscriber is unreachable: it fails, and the second waits behind it.
    let unreachable = SubscriptionKey::decode(&pages[0].subscription_keys[0]).unwrap();
    gateway.set_failing(&unreachable.connection_id);
    let batch = |received: u32| {
        let mut batch = SqsEvent::default();
        batch.records = pages
            .iter()
            .enumerate()
            .map(|(i, page)| {
                let mut message = SqsMessage::default();
                message.message_id = Some(format!("m{i}"));
                message.body = Some(serde_json::to_string(page).unwrap());
                message.attributes = [
                    ("MessageGroupId", page.group.clone()),
                    ("ApproximateReceiveCount", received.to_string()),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect();
                message
            })
            .collect();
        batch
    };
    for received in 1..=3 {
        let response = publisher::fanout::handle(&broker, batch(received)).await;
        assert_eq!(response.batch_item_failures.len(), 2, "receive {received}");
        let in_flight = broker.ports().page_marks.pages_in_flight(&topic).await;
        assert_eq!(in_flight.unwrap(), received < 3, "receive {received}");
    }
    // One subscriber left, below the threshold: posted inline.
    broker
        .ports()
        .subscriptions
        .delete(&unreachable)
        .await
        .unwrap();
    let next = broker::Event::new(
        topic.clone(),
        json!({"id": "c2", "boardId": "b1", "title": "second"}),
        broker::Audience::User(USER.into()),
    );
    broker.ports().events.append(&next).await.unwrap();
    let report = broker.deliver_event(next).await.unwrap();
    assert_eq!(
        (report.delivered, report.pages_enqueued),
        (1, 0),
        "{report:?}"
    );
}

/// A page delivered in full is done even when its mark cannot be removed: failing it would
/// post it again. The mark left behind only keeps the topic's next events in the queue,
/// still in order.
#[tokio::test]
async fn a_delivered_page_is_done_even_when_its_mark_cannot_be_removed() {
    use std::sync::Arc;
    let store = Arc::new(HeldInserts::default());
    let (queue, mut pages) = broker::memory::ChannelFanoutQueue::ordered();
    let gateway = Arc::new(broker::memory::RecordingGateway::default());
    let ports = broker::Ports {
        fanout: Some(Arc::new(queue)),
        replay_gate: Arc::new(store.inner.replay_gate()),
        subscriptions: store.clone(),
        page_marks: store.clone(),
        ..memory_ports(gateway.clone())
    };
    let config = broker::BrokerConfig {
        fanout_threshold: 0,
        ..Default::default()
    };
    let schema = boards::build_schema(Arc::new(boards::MemoryBoardStore::new(&Default::default())));
    let broker = broker::Broker::new(schema, ports, fixture_authenticator(), config);
    let cards = "subscription { cardAdded(boardId: \"b1\") { title } }";
    store
        .inner
        .insert(&subscription("tab", "board/b1/cardAdded", cards))
        .await
        .unwrap();
    let card = |title: &str| {
        broker::Event::new(
            Topic::from("board/b1/cardAdded"),
            json!({"id": title, "boardId": "b1", "title": title}),
            broker::Audience::User(USER.into()),
        )
    };

    let first = card("first");
    broker.ports().events.append(&first).await.unwrap();
    assert_eq!(broker.deliver_event(first).await.unwrap().pages_enqueued, 1);
    let page = pages.try_recv().unwrap();
    store
        .failing_pages_done
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let report = broker.deliver_page(&page).await.unwrap();
    assert!(report.is_complete(), "{report:?}");
    assert_eq!(gateway.take(&"tab".into()).len(), 1);
    let topic = Topic::from("board/b1/cardAdded");
    assert!(store.pages_in_flight(&topic).await.unwrap());
}

/// `$disconnect` can be handled while the connection's last `subscribe` is: after the
/// `subscribe` read the connection, before it stored its subscription.
#[tokio::test]
async fn a_subscribe_handled_after_disconnect_leaves_no_subscription() {
    let store = std::sync::Arc::new(HeldInserts::default());
    let h = harness_with(
        store.clone(),
        std::sync::Arc::new(store.inner.replay_gate()),
    )
    .await;
    for name in ["connect.json", "connection-init.json"] {
        websocket::handle(&h.broker, ws(&h, name)).await.unwrap();
    }
    let subscribe = tokio::spawn({
        let broker = h.broker.clone();
        let event = ws(&h, "subscribe.json");
        async move { websocket::handle(&broker, event).await.unwrap() }
    });
    store.reached.notified().await;

    let reply = websocket::handle(&h.broker, ws(&h, "disconnect.json"))
        .await
        .unwrap();
    assert_eq!(reply.status_code, 200);
    store.release.notify_one();
    assert_eq!(subscribe.await.unwrap().status_code, 200);

    assert_eq!(subscriptions_of_board(&h).await, vec![]);
    let id = ConnectionId::from(CONNECTION);
    assert_eq!(store.count_by_connection(&id).await.unwrap(), 0);
    assert!(
        h.broker
            .ports()
            .connections
            .get(&id)
            .await
            .unwrap()
            .is_none()
    );

    // Tombstones last 10 minutes: a `complete` before its `subscribe`, and the closed mark.
    let h = harness_with(
        store.clone(),
        std::sync::Arc::new(store.inner.replay_gate()),
    )
    .await;
    for name in ["connect.json", "connection-init.json", "complete.json"] {
        websocket::handle(&h.broker, ws(&h, name)).await.unwrap();
    }
    let now = broker::domain::now_secs();
    let untils = store.untils.lock().unwrap().clone();
    assert_eq!(untils.len(), 2, "{untils:?}");
    for until in untils {
        let lasts = until - now;
        assert!((595..=600).contains(&lasts), "{lasts} s");
    }
}
