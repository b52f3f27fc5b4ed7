//! Delivery over the AWS wire protocol: the local mode on moto's DynamoDB, its real events
//! stream polled through `aws-sdk-dynamodbstreams`, SQS for the fan-out worker, the
//! Management API client posting to the local gateway.

use std::time::Duration;

use broker::aws::DynamoDbSubscriptionStore;
use broker::{DeliveryMode, Subscription, SubscriptionKey, SubscriptionStore, Topic};
use broker_tests::aws::{FreshTables, fresh_queue, fresh_tables, moto_endpoint};
use broker_tests::local::*;
use local_gateway::aws::AwsBackend;
use local_gateway::{Backend, LocalGateway};
use serde_json::json;

/// The local mode on fresh tables (and a fresh queue, if asked) on moto, polling the events
/// stream every 50 ms; the tables' names and clients come back for tests that look inside.
async fn start_on_moto(fanout_threshold: usize, with_queue: bool) -> (LocalGateway, FreshTables) {
    let tables = fresh_tables().await;
    let fanout_queue_url = if with_queue {
        Some(fresh_queue().await.1)
    } else {
        None
    };
    let mut options = options(DeliveryMode::Stream);
    options.broker.fanout_threshold = fanout_threshold;
    options.broker.fanout_page_size = 2;
    options.poll_interval = Duration::from_millis(50);
    options.backend = Backend::Aws(AwsBackend {
        endpoint: Some(moto_endpoint()),
        tables: tables.names.clone(),
        app_tables: tables.app_tables(),
        fanout_queue_url,
        create_tables: false,
    });
    (start(options).await, tables)
}

#[tokio::test]
async fn a_mutation_reaches_subscribers_through_the_real_stream() {
    let (gateway, _) = start_on_moto(100, false).await;
    users_are_isolated(&gateway).await;
    gateway.shutdown().await;
}

#[tokio::test]
async fn a_large_fan_out_reaches_every_tab_with_the_sqs_worker_running() {
    // Threshold 2, pages of 2: five subscribers make three SQS messages. That the pages
    // really take the queue is proven in `aws_fanout.rs`; this is the whole local mode.
    let (gateway, _) = start_on_moto(2, true).await;
    let alice = token(&gateway, "alice");
    let board = create_board(&gateway, &alice, "popular").await;
    let mut tabs = Vec::new();
    for i in 0..5 {
        let protocol = if i % 2 == 0 {
            "graphql-transport-ws"
        } else {
            "graphql-ws"
        };
        let mut tab = WsClient::ready(&gateway, protocol, &alice).await;
        tab.subscribe("cards", CARD_ADDED, json!({"b": board}))
            .await;
        tab.sync().await;
        tabs.push(tab);
    }
    let added = add_card(&gateway, &alice, &board, "to everyone").await;
    for tab in &mut tabs {
        let message = tab.recv().await.unwrap();
        assert_eq!(
            message["payload"]["data"]["cardAdded"],
            added["data"]["addCard"]
        );
    }
    gateway.shutdown().await;
}

#[tokio::test]
async fn a_gone_connection_is_removed_when_delivery_meets_410() {
    let (gateway, tables) = start_on_moto(100, false).await;
    let subscriptions_table = tables.names.subscriptions.clone();
    let dynamodb = tables.dynamodb.clone();
    let alice = token(&gateway, "alice");
    let board = create_board(&gateway, &alice, "b").await;
    let topic: Topic = boards::card_topic(&board);

    // A subscription whose socket is long gone (its $disconnect never arrived).
    let store = DynamoDbSubscriptionStore::new(dynamodb, subscriptions_table);
    let ghost = Subscription {
        key: SubscriptionKey {
            connection_id: "ghost-connection".into(),
            operation_id: "1".into(),
        },
        topic: topic.clone(),
        protocol: broker::Protocol::GraphqlTransportWs,
        principal: "alice".into(),
        document: CARD_ADDED.into(),
        operation_name: None,
        variables: json!({"b": board}),
        expires_at: u64::MAX / 2,
        starts_at_ms: 0,
        replaying_until_ms: 0,
        public: false,
    };
    // The store refuses subscriptions of unknown connections; put the connection first.
    let connection = broker::Connection {
        id: "ghost-connection".into(),
        protocol: broker::Protocol::GraphqlTransportWs,
        principal: Some("alice".into()),
        initialised: true,
        connected_at_ms: 0,
        expires_at: u64::MAX / 2,
        authorized_until: Some(u64::MAX / 2),
    };
    gateway
        .broker()
        .ports()
        .connections
        .put(&connection)
        .await
        .unwrap();
    store.insert(&ghost).await.unwrap();
    // And a live subscriber, whose delivery tells when the event has been handled.
    let mut tab = WsClient::ready(&gateway, "graphql-transport-ws", &alice).await;
    tab.subscribe("cards", CARD_ADDED, json!({"b": board}))
        .await;
    tab.sync().await;
    assert_eq!(store.by_topic(&topic).await.unwrap().len(), 2);

    add_card(&gateway, &alice, &board, "wake the ghost").await;
    tab.recv().await.unwrap();
    assert!(
        eventually(async || store.by_topic(&topic).await.unwrap().len() == 1).await,
        "the gone connection's subscription was not removed"
    );
    // The connection record goes right after its subscriptions.
    let ports = gateway.broker().ports();
    let ghost_id = broker::ConnectionId::from("ghost-connection");
    assert!(
        eventually(async || ports.connections.get(&ghost_id).await.unwrap().is_none()).await,
        "the gone connection was not removed"
    );
    gateway.shutdown().await;
}

#[tokio::test]
async fn stream_records_redelivered_are_not_delivered_twice_and_bad_ones_step_aside() {
    let (gateway, tables) = start_on_moto(100, false).await;
    let events_table = tables.names.events.clone();
    let dynamodb = tables.dynamodb.clone();
    let alice = token(&gateway, "alice");
    let board = create_board(&gateway, &alice, "b").await;
    let mut tab = WsClient::ready(&gateway, "graphql-transport-ws", &alice).await;
    tab.subscribe("cards", CARD_ADDED, json!({"b": board}))
        .await;
    tab.sync().await;
    add_card(&gateway, &alice, &board, "once").await;
    let first = tab.recv().await.unwrap();
    assert_eq!(first["payload"]["data"]["cardAdded"]["title"], "once");

    // An event item no publisher can read, written by some other service.
    let topic = boards::card_topic(&board);
    use aws_sdk_dynamodb::types::AttributeValue as Av;
    dynamodb
        .put_item()
        .table_name(&events_table)
        .item("topic", Av::S(topic.to_string()))
        .item("eventId", Av::S("01BADBADBADBADBADBADBADBAD".into()))
        .item("payload", Av::S("not json".into()))
        .item("ttl", Av::N((broker::domain::now_secs() + 600).to_string()))
        .send()
        .await
        .unwrap();

    // Read every record from the start of the stream, as a retried batch would bring them.
    let records = tables.stream_lambda_records().await;
    assert!(
        records
            .iter()
            .any(|r| r.change.new_image.get("eventId").is_some_and(|v| {
                *v == serde_dynamo::AttributeValue::S("01BADBADBADBADBADBADBADBAD".into())
            })),
        "the bad record is in the stream"
    );
    assert!(
        records.len() >= 3,
        "boardCreated, cardAdded and the bad record"
    );

    let mut batch = aws_lambda_events::dynamodb::Event::default();
    batch.records = records;
    let (response, metrics) =
        broker::metrics::collect(publisher::stream::handle(gateway.broker(), batch)).await;
    // The record no retry could deliver steps aside: counted, not retried, so it holds back
    // nothing behind it.
    assert!(
        response.batch_item_failures.is_empty(),
        "{:?}",
        response.batch_item_failures
    );
    assert_eq!(metrics.undeliverable, 1);

    // The card event was marked delivered: the replay posted nothing to the subscriber.
    // Frames of one connection arrive in order, so the next message being the pong proves it.
    tab.send(json!({"type": "ping"})).await;
    assert_eq!(tab.recv().await.unwrap()["type"], "pong");
    gateway.shutdown().await;
}

#[tokio::test]
async fn another_service_publishes_by_writing_an_event_item() {
    let (gateway, tables) = start_on_moto(100, false).await;
    let events_table = tables.names.events.clone();
    let dynamodb = tables.dynamodb.clone();
    let alice = token(&gateway, "alice");
    let board = create_board(&gateway, &alice, "b").await;
    let mut tab = WsClient::ready(&gateway, "graphql-ws", &alice).await;
    tab.subscribe("cards", CARD_ADDED, json!({"b": board}))
        .await;
    tab.sync().await;

    // A backend with write access to the events table, no broker code: one PutItem.
    use aws_sdk_dynamodb::types::AttributeValue as Av;
    let card = json!({"id": "from-backend", "boardId": board, "title": "Imported"});
    dynamodb
        .put_item()
        .table_name(&events_table)
        .item("topic", Av::S(boards::card_topic(&board).to_string()))
        .item("eventId", Av::S(ulid::Ulid::new().to_string()))
        .item("payload", Av::S(card.to_string()))
        .item("audience", Av::S("alice".into()))
        .item("ttl", Av::N((broker::domain::now_secs() + 600).to_string()))
        .send()
        .await
        .unwrap();

    let message = tab.recv().await.unwrap();
    assert_eq!(message["type"], "data");
    assert_eq!(message["payload"]["data"]["cardAdded"], card);
    gateway.shutdown().await;
}
