//! The AWS adapters over the real AWS wire protocol: DynamoDB, DynamoDB Streams and SQS on
//! moto; the Management API on moto and on a scripted HTTP server (for the answers moto
//! never gives: 410 Gone, throttling, refusals).

use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use boards::dynamodb::DynamoDbBoardStore;
use boards::{Board, BoardStore, Boards, Card};
use broker::App;
use broker::aws::AppTables;
use broker::aws::{
    ApiGatewayConnectionGateway, CLOSE_CODE_HEADER, CLOSE_REASON_HEADER, DynamoDbEventLog,
    RetryPolicy, event_from_image, provision,
};
use broker::domain::now_secs;
use broker::{
    Audience, CloseCode, ConnectionGateway, ConnectionId, Event, EventLog, EventRef, GatewayError,
    StoreError, Topic, UserId,
};
use broker_tests::aws::{
    FreshTables, Reply, ScriptedServer, base64, fresh_tables, moto_endpoint, sdk_config_for, unique,
};
use serde_json::json;

fn event_log(tables: &FreshTables) -> DynamoDbEventLog {
    DynamoDbEventLog::new(tables.dynamodb.clone(), &tables.names.events)
}

fn is_conflict<T: std::fmt::Debug>(result: Result<T, StoreError>) -> bool {
    matches!(result, Err(StoreError::Conflict(_)))
}

// The behaviour every store shares with its in-memory twin is checked in `contract.rs`;
// here is what only the AWS adapters have: stream images, item layouts, the Management API.

// --- events ------------------------------------------------------------------------------

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
    let events = event_log(&tables);
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
    let events = event_log(&tables);
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
}

#[tokio::test]
async fn an_event_item_without_an_audience_is_malformed_not_public() {
    let tables = fresh_tables().await;
    let events = event_log(&tables);
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
    provision::create_tables(&tables.dynamodb, &tables.names)
        .await
        .unwrap();
    let app_tables = AppTables::new(tables.dynamodb.clone(), tables.app_tables());
    provision::create_app_tables(&tables.dynamodb, &Boards.tables(), &app_tables)
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
