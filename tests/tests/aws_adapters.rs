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
    PostClient, RetryPolicy, event_from_image, provision,
};
use broker::domain::now_secs;
use broker::{
    Audience, CloseCode, ConnectionGateway, ConnectionId, Event, EventLog, EventRef, GatewayError,
    StoreError, Topic, UserId,
};
use broker_tests::aws::{
    FreshTables, Reply, ScriptedServer, SeenRequest, base64, fresh_tables, moto_endpoint,
    sdk_config_for, unique,
};
use serde_json::json;

fn event_log(tables: &FreshTables) -> DynamoDbEventLog {
    DynamoDbEventLog::new(tables.dynamodb.clone(), &tables.names.events)
}

#[expect(
    clippy::needless_pass_by_value,
    reason = "callers build the value in the call"
)]
fn is_conflict<T: std::fmt::Debug>(result: Result<T, StoreError>) -> bool {
    matches!(result, Err(StoreError::Conflict(_)))
}

// The behaviour every store shares with its in-memory twin is checked in `contract.rs`;
// here is what only the AWS adapters have: stream images, item layouts, the Management API.

// --- events ------------------------------------------------------------------------------

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

    let image = tables
        .stream_records()
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

    // The stream publisher never delivers the records without an audience to anyone; it
    // counts them as undeliverable and reports them processed, so no retry of them holds
    // back the records behind them.
    let records = tables.stream_lambda_records().await;
    assert_eq!(records.len(), 4);
    let harness = broker_tests::fixtures::harness().await;
    let mut batch = aws_lambda_events::dynamodb::Event::default();
    batch.records = records.clone();
    let (response, metrics) =
        broker::metrics::collect(publisher::stream::handle(&harness.broker, batch)).await;
    assert!(
        response.batch_item_failures.is_empty(),
        "{:?}",
        response.batch_item_failures
    );
    assert_eq!(
        metrics.undeliverable, 2,
        "the two records without an audience"
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

/// Both ways of posting: every test of a post runs on each against the same stand-in.
const POST_CLIENTS: [PostClient; 2] = [PostClient::Sdk, PostClient::Signed];

/// A gateway posting with `post`, with the SDK's own retries off, so a test counts exactly
/// the adapter's.
async fn gateway_at(
    endpoint: &str,
    retry: RetryPolicy,
    post: PostClient,
) -> ApiGatewayConnectionGateway {
    let config = sdk_config_for(endpoint)
        .await
        .into_builder()
        .retry_config(aws_config::retry::RetryConfig::disabled())
        .build();
    let gateway = ApiGatewayConnectionGateway::from_config_with(&config, endpoint, post)
        .with_retry_policy(retry);
    assert_eq!(gateway.post_client(), post);
    gateway
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
    let ids: Vec<ConnectionId> = POST_CLIENTS
        .iter()
        .map(|_| ConnectionId::new(unique("conn")))
        .collect();
    let frame = json!({"type": "next", "id": "1", "payload": {"data": {"n": 1}}}).to_string();
    recorder("start-recording")
        .await
        .unwrap()
        .error_for_status()
        .unwrap();
    for (post, id) in POST_CLIENTS.into_iter().zip(&ids) {
        let gateway = broker::aws::ApiGatewayConnectionGateway::from_config_with(
            &broker_tests::aws::moto_config().await,
            &moto,
            post,
        );
        gateway.post(id, &frame).await.unwrap();
        gateway
            .close(id, CloseCode::Forbidden, "Forbidden")
            .await
            .unwrap();
    }
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

    for (post, id) in POST_CLIENTS.into_iter().zip(&ids) {
        let ours: Vec<serde_json::Value> = recording
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|r| {
                r["url"]
                    .as_str()
                    .is_some_and(|u| u.ends_with(&format!("/@connections/{id}")))
            })
            .collect();
        let recorded = ours
            .iter()
            .find(|r| r["method"] == "POST")
            .unwrap_or_else(|| panic!("{post:?}: the post was recorded"));
        assert_eq!(recorded["body"], base64(frame.as_bytes()), "{post:?}");
        assert!(
            ours.iter().any(|r| r["method"] == "DELETE"),
            "{post:?}: the close was recorded"
        );
    }
}

/// What a post came to, for comparing the two ways of posting.
fn outcome(result: &Result<(), GatewayError>) -> &'static str {
    match result {
        Ok(()) => "delivered",
        Err(GatewayError::Gone) => "gone",
        Err(GatewayError::Rejected { .. }) => "rejected",
        Err(GatewayError::Backend { .. }) => "failed",
    }
}

/// Posts once with each client to a fresh stand-in answering `replies`; asserts that both
/// came to the same outcome after the same number of requests, and returns it with the
/// requests of the signed post and its error.
async fn post_with_both(
    replies: Vec<Reply>,
    retries: u32,
    id: &str,
    frame: &str,
) -> (&'static str, Vec<SeenRequest>, Option<String>) {
    let mut seen = Vec::new();
    for post in POST_CLIENTS {
        let server = ScriptedServer::start(replies.clone()).await;
        let gateway = gateway_at(&server.endpoint, quick_retries(retries), post).await;
        let result = gateway.post(&ConnectionId::new(id), frame).await;
        let error = result.as_ref().err().map(|e| match e {
            GatewayError::Rejected { source } | GatewayError::Backend { source } => {
                source.to_string()
            }
            GatewayError::Gone => "gone".to_owned(),
        });
        seen.push((post, outcome(&result), server.requests(), error));
    }
    let (sdk, signed) = (&seen[0], &seen[1]);
    assert_eq!(
        sdk.1, signed.1,
        "the SDK and the signed post disagree: {seen:?}"
    );
    assert_eq!(
        sdk.2.len(),
        signed.2.len(),
        "the SDK and the signed post sent different numbers of requests"
    );
    for (a, b) in sdk.2.iter().zip(&signed.2) {
        assert_eq!((&a.method, &a.path, &a.body), (&b.method, &b.path, &b.body));
        assert_eq!(a.header("content-type"), b.header("content-type"));
    }
    let (_, outcome, requests, error) = seen.pop().expect("two posts");
    (outcome, requests, error)
}

#[tokio::test]
async fn a_410_from_the_gateway_is_gone() {
    let gone = Reply::new(410, r#"{"message": null}"#).header("x-amzn-ErrorType", "GoneException");
    // Gone is final: one request, no retries.
    let (outcome, requests, _) = post_with_both(
        vec![gone.clone()],
        3,
        "L0SM9cOFvHcCIhw=",
        r#"{"type":"next"}"#,
    )
    .await;
    assert_eq!(outcome, "gone");
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].method, "POST");
    assert_eq!(requests[0].path, "/@connections/L0SM9cOFvHcCIhw%3D");
    assert_eq!(requests[0].body, br#"{"type":"next"}"#);

    let server = ScriptedServer::start(vec![gone]).await;
    let gateway = gateway_at(&server.endpoint, quick_retries(3), PostClient::Signed).await;
    let id = ConnectionId::new("L0SM9cOFvHcCIhw=");
    let result = gateway.close(&id, CloseCode::Normal, "bye").await;
    assert!(matches!(result, Err(GatewayError::Gone)), "{result:?}");
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn a_bare_410_without_an_error_type_is_gone_too() {
    let (outcome, _, _) = post_with_both(vec![Reply::new(410, "")], 3, "c", "{}").await;
    assert_eq!(outcome, "gone");
}

#[tokio::test]
async fn a_post_answered_200_is_delivered_once() {
    let (outcome, requests, _) = post_with_both(vec![Reply::new(200, "")], 3, "c1", "{}").await;
    assert_eq!(outcome, "delivered");
    assert_eq!(requests.len(), 1);
    assert_eq!(
        requests[0].header("content-type"),
        Some("application/octet-stream")
    );
}

#[tokio::test]
async fn the_signed_post_is_signed_for_execute_api_in_the_region() {
    let server = ScriptedServer::start(vec![Reply::new(200, "")]).await;
    let config = broker::aws::config_loader(Some(&server.endpoint))
        .region(aws_config::Region::new("eu-west-3"))
        .credentials_provider(aws_credential_types::Credentials::new(
            "AKIDPOST",
            "post-secret",
            None,
            None,
            "tests",
        ))
        .load()
        .await;
    // The endpoint as API Gateway gives it: a stage in the path.
    let endpoint = format!("{}/prod", server.endpoint);
    let gateway = ApiGatewayConnectionGateway::from_config(&config, &endpoint);
    assert_eq!(gateway.post_client(), PostClient::Signed);
    let frame = r#"{"type":"next","id":"1"}"#;
    gateway
        .post(&ConnectionId::new("L0SM9cOFvHcCIhw="), frame)
        .await
        .unwrap();

    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/prod/@connections/L0SM9cOFvHcCIhw%3D");
    assert_eq!(request.body, frame.as_bytes());
    let date = request.header("x-amz-date").expect("x-amz-date");
    let authorization = request.header("authorization").expect("authorization");
    let scope = format!("AKIDPOST/{}/eu-west-3/execute-api/aws4_request", &date[..8]);
    assert!(
        authorization.starts_with(&format!("AWS4-HMAC-SHA256 Credential={scope}, ")),
        "{authorization}"
    );
    // The signature is the one AWS computes from what arrived.
    assert_eq!(
        authorization,
        broker_tests::aws::sigv4_authorization(request, "AKIDPOST", "post-secret", "eu-west-3"),
    );
}

#[tokio::test]
async fn the_close_code_and_reason_travel_as_headers() {
    let server = ScriptedServer::start(vec![Reply::new(204, "")]).await;
    let gateway = gateway_at(&server.endpoint, quick_retries(0), PostClient::Signed).await;
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
    let replies = vec![
        throttled.clone(),
        Reply::new(503, r#"{"message": "Service Unavailable"}"#),
        Reply::new(500, r#"{"message": "Internal server error"}"#)
            .header("x-amzn-ErrorType", "InternalServerErrorException"),
        throttled,
        Reply::new(200, ""),
    ];
    let (outcome, requests, _) = post_with_both(replies, 5, "c1", "{}").await;
    assert_eq!(outcome, "delivered");
    assert_eq!(requests.len(), 5);
}

#[tokio::test]
async fn throttling_retries_are_bounded() {
    let replies = vec![
        Reply::new(429, r#"{"message": "Too Many Requests"}"#)
            .header("x-amzn-ErrorType", "LimitExceededException"),
    ];
    let (outcome, requests, error) = post_with_both(replies, 3, "c1", "{}").await;
    assert_eq!(outcome, "failed");
    let error = error.expect("an error");
    assert!(error.contains("LimitExceededException"), "{error}");
    assert_eq!(requests.len(), 4);
}

#[tokio::test]
async fn a_payload_too_large_is_rejected_without_a_retry() {
    let replies = vec![
        Reply::new(413, r#"{"message": "Request Entity Too Large"}"#)
            .header("x-amzn-ErrorType", "PayloadTooLargeException"),
    ];
    let (outcome, requests, error) = post_with_both(replies, 3, "c1", &"x".repeat(1000)).await;
    assert_eq!(outcome, "rejected");
    let error = error.expect("an error");
    assert!(error.contains("PostToConnection"), "{error}");
    assert!(error.contains("PayloadTooLargeException"), "{error}");
    assert_eq!(requests.len(), 1);
}

#[tokio::test]
async fn other_client_errors_are_rejections_and_not_retried() {
    for (status, error_type) in [(403, "ForbiddenException"), (400, "BadRequestException")] {
        let reply =
            Reply::new(status, r#"{"message": "no"}"#).header("x-amzn-ErrorType", error_type);
        let (outcome, requests, _) = post_with_both(vec![reply.clone()], 3, "c1", "{}").await;
        assert_eq!(outcome, "rejected", "{status}");
        assert_eq!(requests.len(), 1);

        let server = ScriptedServer::start(vec![reply]).await;
        let gateway = gateway_at(&server.endpoint, quick_retries(3), PostClient::Signed).await;
        let result = gateway
            .close(&ConnectionId::new("c1"), CloseCode::Normal, "bye")
            .await;
        assert!(
            matches!(result, Err(GatewayError::Rejected { .. })),
            "{status}: {result:?}"
        );
        assert_eq!(server.requests().len(), 1);
    }
}

#[tokio::test]
async fn refused_credentials_are_a_backend_failure_not_a_rejection() {
    // Every post would fail alike: the event must be retried, not dropped per connection.
    for (error_type, message) in [
        (
            "AccessDeniedException",
            "User is not authorized to perform: execute-api:ManageConnections",
        ),
        (
            "InvalidSignatureException",
            "The request signature we calculated does not match the signature you provided.",
        ),
    ] {
        let reply = Reply::new(403, &json!({ "message": message }).to_string())
            .header("x-amzn-ErrorType", error_type);
        let (outcome, requests, _) = post_with_both(vec![reply], 3, "c1", "{}").await;
        assert_eq!(outcome, "failed", "{error_type}");
        assert_eq!(requests.len(), 1);
    }
}

#[tokio::test]
async fn an_error_type_in_the_body_alone_is_read_too() {
    // restJson1 also carries the error type as the body's `__type`, with a namespace.
    let reply = Reply::new(
        400,
        r#"{"__type": "com.amazonaws.apigatewaymanagementapi#LimitExceededException", "message": "slow down"}"#,
    );
    let (outcome, requests, _) = post_with_both(vec![reply], 2, "c1", "{}").await;
    assert_eq!(outcome, "failed");
    assert_eq!(requests.len(), 3);
}

#[tokio::test]
async fn a_post_to_a_closed_port_fails_as_a_backend_error() {
    // Nothing listens there: no answer, for either client.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let endpoint = format!("http://127.0.0.1:{port}");
    for post in POST_CLIENTS {
        let gateway = gateway_at(&endpoint, quick_retries(3), post).await;
        let result = gateway.post(&ConnectionId::new("c1"), "{}").await;
        assert_eq!(outcome(&result), "failed", "{post:?}: {result:?}");
    }
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
