//! The EMF line each Lambda handler writes per invocation, parsed back from a captured writer.

use aws_lambda_events::dynamodb::Event as StreamEvent;
use aws_lambda_events::sqs::SqsEvent;
use broker::metrics::emit;
use broker::{Subscription, SubscriptionKey};
use broker_tests::fixtures::*;
use graphql_api::websocket;
use serde_json::{Value, json};

fn one_line(out: Vec<u8>) -> Value {
    let text = String::from_utf8(out).unwrap();
    assert_eq!(text.lines().count(), 1, "one object per invocation: {text}");
    let line: Value = serde_json::from_str(text.trim()).unwrap();
    // Every metric the directive names has a value in the object, as EMF requires.
    for metric in line["_aws"]["CloudWatchMetrics"][0]["Metrics"]
        .as_array()
        .unwrap()
    {
        let name = metric["Name"].as_str().unwrap();
        assert!(line.get(name).is_some(), "{name} missing in {line}");
    }
    line
}

/// A harness with one subscriber (the fixtures' connect, init and subscribe), and the batch
/// `published` makes once it is subscribed, its events in the log as the stream would
/// hand them over.
async fn subscribed_with(published: impl FnOnce() -> StreamEvent) -> (Harness, StreamEvent) {
    let h = harness().await;
    for name in ["connect.json", "connection-init.json", "subscribe.json"] {
        let reply = websocket::handle(&h.broker, fixture(name, &h.token)).await;
        assert_eq!(reply.unwrap().status_code, 200);
    }
    let batch = published();
    for record in &batch.records {
        let event = broker::aws::event_from_image(record.change.new_image.clone()).unwrap();
        h.broker.ports().events.append(&event).await.unwrap();
    }
    (h, batch)
}

#[tokio::test]
async fn the_stream_publisher_emits_one_emf_line_per_batch() {
    let (h, batch) = subscribed_with(|| published_now(fixture("stream-batch.json", ""))).await;
    let mut out = Vec::new();
    let response = emit(
        "StreamPublisherFunction",
        &mut out,
        publisher::stream::handle(&h.broker, batch.clone()),
    )
    .await;
    assert!(response.batch_item_failures.is_empty());
    let line = one_line(out);
    assert_eq!(line["Function"], "StreamPublisherFunction");
    assert_eq!(
        line["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
        json!([["Function"]])
    );
    assert_eq!(line["Deliveries"], 2);
    assert_eq!(line["Failed"], 0);
    assert_eq!(line["Gone"], 0);
    assert_eq!(line["LateStores"], 0);
    // One age per delivered event, counted from the record's creation time.
    let created = batch.records[0]
        .change
        .approximate_creation_date_time
        .timestamp_millis() as u64;
    let ages = line["EventAge"].as_array().unwrap();
    assert_eq!(ages.len(), 2);
    let age = ages[0].as_u64().unwrap();
    let since_creation = broker::domain::now_ms() - created;
    assert!(
        age <= since_creation && age + 60_000 >= since_creation,
        "{age} vs {since_creation}"
    );

    // The retried batch posts nothing: the line says so rather than staying silent.
    let mut out = Vec::new();
    emit(
        "StreamPublisherFunction",
        &mut out,
        publisher::stream::handle(&h.broker, batch),
    )
    .await;
    let line = one_line(out);
    assert_eq!(line["Deliveries"], 0);
    assert_eq!(line["EventAge"], json!([]));
}

#[tokio::test]
async fn an_event_stored_after_the_settle_time_is_counted_and_still_delivered() {
    // GIVEN a subscriber, and a batch whose first record was written 10 s after its event
    // was stamped (a publish that timed out, yet was stored)
    let (h, batch) = subscribed_with(|| {
        let batch = published_now(fixture("stream-batch.json", ""));
        let mut records = serde_json::to_value(&batch).unwrap();
        records["Records"][0]["dynamodb"]["ApproximateCreationDateTime"] =
            json!(broker::domain::now_secs() + 10);
        serde_json::from_value(records).unwrap()
    })
    .await;
    // WHEN the stream publisher handles it
    let mut out = Vec::new();
    let response = emit(
        "StreamPublisherFunction",
        &mut out,
        publisher::stream::handle(&h.broker, batch),
    )
    .await;
    // THEN that one is counted as stored late, and both are delivered all the same
    assert!(response.batch_item_failures.is_empty());
    let line = one_line(out);
    assert_eq!(line["LateStores"], 1);
    assert_eq!(line["Deliveries"], 2);
}

#[tokio::test]
async fn the_fanout_worker_emits_its_pages_figures() {
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
        let subscription = Subscription {
            key: SubscriptionKey::decode(key).unwrap(),
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
    let mut out = Vec::new();
    let response = emit(
        "FanoutWorkerFunction",
        &mut out,
        publisher::fanout::handle(&h.broker, batch),
    )
    .await;
    assert!(response.batch_item_failures.is_empty());
    let line = one_line(out);
    assert_eq!(line["Function"], "FanoutWorkerFunction");
    assert_eq!(line["Deliveries"], 2);
    assert_eq!(
        line["EventAge"].as_array().unwrap().len(),
        1,
        "one age per page's event"
    );
}

#[tokio::test]
async fn a_websocket_invocation_that_delivers_nothing_writes_no_line() {
    let h = harness().await;
    let mut out = Vec::new();
    let reply = emit(
        "WebSocketFunction",
        &mut out,
        websocket::handle(&h.broker, fixture("connect.json", &h.token)),
    )
    .await
    .unwrap();
    assert_eq!(reply.status_code, 200);
    assert!(out.is_empty());
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
