//! The boards app's four Lambda binaries, built by cargo and run as Lambda runs them: each a
//! process polling its own Runtime API, configured by environment variables as the template
//! configures them, against moto, posting to a Management API stand-in. A card travels the
//! whole path `sam deploy` sets up: `$connect`, `connection_init` and two `subscribe`s
//! through the WebSocket function, `createBoard` and `addCard` through the HTTP function, the
//! events table's stream records (read from moto's stream) through the stream function,
//! which splits the delivery into fan-out pages (threshold 1, pages of 1), the pages (read
//! from moto's queue) through the fan-out worker, and the `next` frames at the stand-in.
//! Then connections gone (410) under the stream function and the worker, the queries, a
//! mutation over the socket, `complete`, `$disconnect` and `deleteBoard`, and the HTTP
//! function in direct mode meeting a gone connection too, the socket gauge found full and
//! recounted; and the prices app's binaries, for the grants on its table.
//!
//! Each function's AWS and Management API endpoints are recording proxies: at the end,
//! every call each function made is held against its role as the template deploys it, both
//! ways (`broker_tests::iam`): no call outside the role, no grant without a call or a
//! written reason (`tests/iam-unused-grants.yaml`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use aws_lambda_events::sqs::{SqsEvent, SqsMessage};
use broker::{AuthConfig, Authenticator};
use broker_tests::aws::{Reply, ScriptedServer, fresh_fifo_queue, fresh_tables, moto_endpoint};
use broker_tests::fixtures::{CONNECTION, USER, fixture};
use broker_tests::iam::{self, STAGE};
use broker_tests::lambda::{Function, app_binaries, function_environment};
use broker_tests::recorder::{RecordedRequest, RecordingProxy};
use serde_json::{Value, json};

const SECRET: &str = "lambda-functions-secret-0123456789-0123456789";

/// Frames the stand-in received for the fixtures' connection, in order.
fn frames(management: &ScriptedServer) -> Vec<Value> {
    let path = format!("/@connections/{}", CONNECTION.replace('=', "%3D"));
    management
        .requests()
        .iter()
        .filter(|r| r.method == "POST" && r.path == path)
        .map(|r| serde_json::from_slice(&r.body).expect("a frame is JSON"))
        .collect()
}

/// A WebSocket message event of the fixtures' connection carrying `body`.
fn message(body: &Value, token: &str) -> Value {
    let mut event: Value = fixture("subscribe.json", token);
    event["body"] = Value::String(body.to_string());
    event
}

/// An HTTP API request (`POST /graphql`) carrying `query` and `variables`.
fn graphql(query: &str, variables: &Value, token: &str) -> Value {
    let mut event: Value = fixture("http-mutation.json", token);
    let body = json!({"query": query, "variables": variables}).to_string();
    event["headers"]["content-length"] = Value::String(body.len().to_string());
    event["body"] = Value::String(body);
    event
}

/// The GraphQL response in an HTTP function's result, which must be a 200 without errors.
fn data(result: &Value) -> Value {
    assert_eq!(result["statusCode"], 200, "{result}");
    let body: Value = serde_json::from_str(result["body"].as_str().expect("a body")).unwrap();
    assert!(body.get("errors").is_none(), "{body}");
    body["data"].clone()
}

/// A function's two endpoints, each a recording proxy: AWS (moto) and the Management API.
struct Endpoints {
    function: &'static str,
    aws: RecordingProxy,
    management: RecordingProxy,
}

impl Endpoints {
    fn requests(&self) -> Vec<RecordedRequest> {
        [self.aws.requests(), self.management.requests()].concat()
    }
}

/// Starts `binary` as `function` with `variables`, its AWS endpoint and its Management API
/// endpoint (`…/{stage}`, as the template's) recording proxies in front of moto and of
/// `management`.
async fn start_recorded(
    function: &'static str,
    binary: &std::path::Path,
    variables: &[(String, String)],
    management: &str,
) -> (Function, Endpoints) {
    let endpoints = Endpoints {
        function,
        aws: RecordingProxy::start(&moto_endpoint()).await,
        management: RecordingProxy::start_with_prefix(management, &format!("/{STAGE}")).await,
    };
    let mut variables = variables.to_vec();
    for (name, value) in [
        ("AWS_ENDPOINT_URL", &endpoints.aws.endpoint),
        ("MANAGEMENT_ENDPOINT", &endpoints.management.endpoint),
    ] {
        variables.retain(|(n, _)| n != name);
        variables.push((name.to_owned(), value.clone()));
    }
    (
        Function::start(function, binary, &variables).await,
        endpoints,
    )
}

/// An event of the fixtures with another connection id.
fn on_connection(mut event: Value, connection: &str) -> Value {
    event["requestContext"]["connectionId"] = Value::String(connection.to_owned());
    event
}

/// The id of the last event of `topic` in the events table's stream.
fn last_event_of(records: &[aws_lambda_events::dynamodb::EventRecord], topic: &str) -> String {
    records
        .iter()
        .filter(|r| {
            r.change.new_image.get("topic")
                == Some(&serde_dynamo::AttributeValue::S(topic.to_owned()))
        })
        .filter_map(|r| match r.change.new_image.get("eventId") {
            Some(serde_dynamo::AttributeValue::S(id)) => Some(id.clone()),
            _ => None,
        })
        .next_back()
        .unwrap_or_else(|| panic!("an event of {topic} is in the stream"))
}

/// The fan-out pages on the queue naming `event`, as Lambda's mapping hands them to the
/// worker; `want` of them.
async fn pages_of(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
    event: &str,
    want: usize,
) -> (SqsEvent, Vec<String>) {
    let mut messages = Vec::new();
    for _ in 0..20 {
        let received = sqs
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .message_system_attribute_names(aws_sdk_sqs::types::MessageSystemAttributeName::All)
            .send()
            .await
            .unwrap();
        messages.extend(
            received
                .messages()
                .iter()
                .filter(|m| m.body().is_some_and(|b| b.contains(event)))
                .cloned(),
        );
        if messages.len() >= want {
            break;
        }
    }
    assert_eq!(messages.len(), want, "one page per subscriber");
    let mut pages = SqsEvent::default();
    pages.records = messages
        .iter()
        .map(|m| {
            let mut lambda = SqsMessage::default();
            lambda.message_id = m.message_id().map(str::to_owned);
            lambda.receipt_handle = m.receipt_handle().map(str::to_owned);
            lambda.body = m.body().map(str::to_owned);
            lambda.event_source = Some("aws:sqs".to_owned());
            lambda.attributes = m
                .attributes()
                .into_iter()
                .flatten()
                .map(|(name, value)| (name.as_str().to_owned(), value.clone()))
                .collect();
            assert!(lambda.attributes.contains_key("MessageGroupId"), "{m:?}");
            lambda
        })
        .collect();
    let receipts = messages
        .iter()
        .filter_map(|m| m.receipt_handle().map(str::to_owned))
        .collect();
    (pages, receipts)
}

/// What Lambda's mapping does once the worker succeeded: the pages leave the queue.
async fn delete_pages(sqs: &aws_sdk_sqs::Client, queue_url: &str, receipts: Vec<String>) {
    for receipt in receipts {
        sqs.delete_message()
            .queue_url(queue_url)
            .receipt_handle(receipt)
            .send()
            .await
            .unwrap();
    }
}

/// Whether the connections table still holds `connection`.
async fn connection_stored(tables: &broker_tests::aws::FreshTables, connection: &str) -> bool {
    tables
        .dynamodb
        .get_item()
        .table_name(&tables.names.connections)
        .key(
            "connectionId",
            aws_sdk_dynamodb::types::AttributeValue::S(connection.to_owned()),
        )
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item()
        .is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_card_travels_through_the_four_binaries_as_lambda_runs_them() {
    let binaries: Vec<PathBuf> = tokio::task::spawn_blocking(|| app_binaries("boards"))
        .await
        .unwrap();
    let tables = fresh_tables().await;
    // FIFO, as the template deploys it.
    let (sqs, queue_url) = fresh_fifo_queue().await;
    let management = ScriptedServer::start(vec![Reply::new(200, "{}")]).await;
    let mut variables = function_environment(&tables, &queue_url, &management.endpoint, SECRET);
    variables.extend(
        [
            ("FANOUT_THRESHOLD", "1"),
            ("FANOUT_PAGE_SIZE", "1"),
            ("FANOUT_GROUPS", "4"),
            ("DELIVERY_MODE", "stream"),
            // Three sockets: the two closed on a 410 below are forgotten without giving
            // their slots back, so the next `$connect` finds the gauge full and recounts it
            // from the user's connections (the byPrincipal index) before letting it in.
            ("MAX_SOCKETS_PER_USER", "3"),
        ]
        .map(|(name, value)| (name.to_owned(), value.to_owned())),
    );
    let names = [
        "WebSocketFunction",
        "HttpFunction",
        "StreamPublisherFunction",
        "FanoutWorkerFunction",
    ];
    let mut functions = Vec::new();
    let mut endpoints = Vec::new();
    for (name, binary) in names.iter().zip(&binaries) {
        let (function, recorded) =
            start_recorded(name, binary, &variables, &management.endpoint).await;
        functions.push(function);
        endpoints.push(recorded);
    }
    let [websocket, http, stream, fanout] = &functions[..] else {
        unreachable!("four functions")
    };
    let token = Authenticator::new(AuthConfig {
        secret: SECRET.into(),
        issuer: None,
        audience: None,
        leeway_secs: broker::auth::DEFAULT_LEEWAY_SECS,
    })
    .mint(USER, 600);

    // The WebSocket function: $connect with the token, connection_init.
    let connected = websocket.invoke(fixture("connect.json", &token)).await;
    assert_eq!(connected["statusCode"], 200, "{connected}");
    assert_eq!(
        connected["headers"]["sec-websocket-protocol"],
        "graphql-transport-ws"
    );
    let initialised = websocket
        .invoke(fixture("connection-init.json", &token))
        .await;
    assert_eq!(initialised["statusCode"], 200, "{initialised}");
    assert_eq!(frames(&management), [json!({"type": "connection_ack"})]);

    // The HTTP function: a board of the user's own.
    let created = http
        .invoke(graphql(
            "mutation($t: String!) { createBoard(title: $t) { id } }",
            &json!({"t": "Lambda"}),
            &token,
        ))
        .await;
    let board = data(&created)["createBoard"]["id"]
        .as_str()
        .expect("a board id")
        .to_owned();

    // Two subscriptions to its cards, so that a threshold of 1 splits the delivery.
    let query = "subscription($b: ID!) { cardAdded(boardId: $b) { title } }";
    for id in ["1", "2"] {
        let subscribed = websocket
            .invoke(message(
                &json!({"id": id, "type": "subscribe",
                       "payload": {"query": query, "variables": {"b": board}}}),
                &token,
            ))
            .await;
        assert_eq!(subscribed["statusCode"], 200, "{subscribed}");
    }
    assert_eq!(
        frames(&management).len(),
        1,
        "no error for either subscribe"
    );

    let added = http
        .invoke(graphql(
            "mutation($b: ID!, $t: String!) { addCard(boardId: $b, title: $t) { id title } }",
            &json!({"b": board, "t": "Hello"}),
            &token,
        ))
        .await;
    assert_eq!(data(&added)["addCard"]["title"], "Hello");

    // The stream function, with the events table's records as Lambda's mapping reads them.
    let records = tables.stream_lambda_records().await;
    let card_event = last_event_of(&records, &format!("board/{board}/cardAdded"));
    let mut batch = aws_lambda_events::dynamodb::Event::default();
    batch.records = records;
    let published = stream.invoke(serde_json::to_value(&batch).unwrap()).await;
    assert_eq!(published["batchItemFailures"], json!([]), "{published}");
    assert_eq!(
        frames(&management).len(),
        1,
        "two subscribers are above the threshold: nothing is posted before the pages"
    );

    // The fan-out worker, with the pages as Lambda's mapping receives them.
    let (pages, receipts) = pages_of(&sqs, &queue_url, &card_event, 2).await;
    let delivered = fanout.invoke(serde_json::to_value(&pages).unwrap()).await;
    assert_eq!(delivered["batchItemFailures"], json!([]), "{delivered}");
    delete_pages(&sqs, &queue_url, receipts).await;

    let mut nexts: Vec<Value> = frames(&management)
        .into_iter()
        .filter(|f| f["type"] == "next")
        .collect();
    nexts.sort_by_key(|f| f["id"].as_str().unwrap_or_default().to_owned());
    assert_eq!(nexts.len(), 2, "{nexts:?}");
    for (frame, id) in nexts.iter().zip(["1", "2"]) {
        assert_eq!(frame["id"], id);
        assert_eq!(
            frame["payload"]["data"],
            json!({"cardAdded": {"title": "Hello"}})
        );
        assert_eq!(frame["payload"]["extensions"]["eventId"], card_event);
    }
    // Each function logged its delivery metrics as one EMF line per invocation.
    for function in [stream, fanout] {
        assert!(
            function.output().iter().any(|l| l.contains("\"_aws\"")),
            "{}: {:?}",
            function.name,
            function.output()
        );
    }

    // Connections gone (410): the only subscriber of a second board, which the stream
    // function posts to itself, and a third subscriber of the first, a page of the worker's.
    // Each closes its connection: the connection and its subscriptions are removed.
    for endpoints in &endpoints[2..] {
        endpoints.management.refuse("/@connections/GoneBy", 410);
    }
    let second = data(
        &http
            .invoke(graphql(
                "mutation($t: String!) { createBoard(title: $t) { id } }",
                &json!({"t": "Second"}),
                &token,
            ))
            .await,
    )["createBoard"]["id"]
        .as_str()
        .expect("a board id")
        .to_owned();
    for (connection, on) in [(GONE_STREAM, &second), (GONE_FANOUT, &board)] {
        open_and_subscribe(websocket, connection, on, &token).await;
    }
    for (on, title) in [(&board, "Again"), (&second, "Elsewhere")] {
        data(
            &http
                .invoke(graphql(
                    "mutation($b: ID!, $t: String!) { addCard(boardId: $b, title: $t) { id } }",
                    &json!({"b": on, "t": title}),
                    &token,
                ))
                .await,
        );
    }
    // The whole stream again, as a retried batch brings it: what was delivered is skipped.
    let records = tables.stream_lambda_records().await;
    let again = last_event_of(&records, &format!("board/{board}/cardAdded"));
    let mut batch = aws_lambda_events::dynamodb::Event::default();
    batch.records = records;
    let published = stream.invoke(serde_json::to_value(&batch).unwrap()).await;
    assert_eq!(published["batchItemFailures"], json!([]), "{published}");
    assert!(
        !connection_stored(&tables, GONE_STREAM).await,
        "closed on 410"
    );
    let (pages, receipts) = pages_of(&sqs, &queue_url, &again, 3).await;
    let delivered = fanout.invoke(serde_json::to_value(&pages).unwrap()).await;
    assert_eq!(delivered["batchItemFailures"], json!([]), "{delivered}");
    delete_pages(&sqs, &queue_url, receipts).await;
    assert!(
        !connection_stored(&tables, GONE_FANOUT).await,
        "closed on 410"
    );
    assert_eq!(titles(&management), ["Hello", "Hello", "Again", "Again"]);

    // The HTTP function in direct mode: it delivers its mutation's event itself, and closes
    // the connection it finds gone.
    let mut direct_variables = variables.clone();
    direct_variables.retain(|(name, _)| name != "DELIVERY_MODE");
    direct_variables.push(("DELIVERY_MODE".to_owned(), "direct".to_owned()));
    let (direct, direct_endpoints) = start_recorded(
        "HttpFunction",
        &binaries[1],
        &direct_variables,
        &management.endpoint,
    )
    .await;
    direct_endpoints
        .management
        .refuse("/@connections/GoneBy", 410);
    // The fourth socket: the gauge, still at three, is recounted (see MAX_SOCKETS_PER_USER).
    open_and_subscribe(websocket, GONE_DIRECT, &board, &token).await;
    data(
        &direct
            .invoke(graphql(
                "mutation($b: ID!, $t: String!) { addCard(boardId: $b, title: $t) { id } }",
                &json!({"b": board, "t": "Direct"}),
                &token,
            ))
            .await,
    );
    assert!(
        !connection_stored(&tables, GONE_DIRECT).await,
        "closed on 410"
    );
    assert_eq!(titles(&management)[4..], ["Direct", "Direct"]);

    // Queries over HTTP; over the socket a mutation, a query, a resume, a subscription to
    // new boards and a board deleted; `complete`; the first board deleted over HTTP, which
    // ends its subscriptions; `$disconnect`, which removes the one left.
    let listed = data(
        &http
            .invoke(graphql("{ boards { id } }", &json!({}), &token))
            .await,
    );
    assert_eq!(
        listed["boards"].as_array().map(Vec::len),
        Some(2),
        "{listed}"
    );
    let cards = data(
        &http
            .invoke(graphql(
                "query($b: ID!) { cards(boardId: $b) { title } }",
                &json!({"b": board}),
                &token,
            ))
            .await,
    );
    assert_eq!(cards["cards"].as_array().map(Vec::len), Some(3), "{cards}");
    let operations = [
        json!({"query": "mutation($b: ID!) { addCard(boardId: $b, title: \"Socket\") { id } }",
               "variables": {"b": second}}),
        json!({"query": "{ boards { id } }"}),
        json!({"query": "subscription($b: ID!) { cardAdded(boardId: $b) { title } }",
               "variables": {"b": board}, "extensions": {"resumeFrom": card_event}}),
        json!({"query": "subscription { boardCreated { id } }"}),
        json!({"query": "mutation($b: ID!) { deleteBoard(boardId: $b) }",
               "variables": {"b": second}}),
    ];
    for (id, payload) in ["3", "4", "5", "6", "7"].into_iter().zip(operations) {
        let answer = websocket
            .invoke(message(
                &json!({"id": id, "type": "subscribe", "payload": payload}),
                &token,
            ))
            .await;
        assert_eq!(answer["statusCode"], 200, "{id}: {answer}");
    }
    let completed = websocket
        .invoke(message(&json!({"id": "1", "type": "complete"}), &token))
        .await;
    assert_eq!(completed["statusCode"], 200, "{completed}");
    let deleted = data(
        &http
            .invoke(graphql(
                "mutation($b: ID!) { deleteBoard(boardId: $b) }",
                &json!({"b": board}),
                &token,
            ))
            .await,
    );
    assert_eq!(deleted["deleteBoard"], true);
    let closed = websocket.invoke(fixture("disconnect.json", &token)).await;
    assert_eq!(closed["statusCode"], 200, "{closed}");
    assert!(!connection_stored(&tables, CONNECTION).await);
    let frames = frames(&management);
    let of = |id: &str, kind: &str| -> Vec<&Value> {
        frames
            .iter()
            .filter(|f| f["id"] == id && f["type"] == kind)
            .collect()
    };
    for id in ["3", "4", "7"] {
        let answer = of(id, "next");
        assert_eq!(answer.len(), 1, "{id}: {frames:?}");
        assert!(answer[0]["payload"].get("errors").is_none(), "{answer:?}");
    }
    let replayed: Vec<&Value> = of("5", "next")
        .iter()
        .map(|f| &f["payload"]["data"]["cardAdded"]["title"])
        .collect();
    assert_eq!(
        replayed,
        ["Again", "Direct"],
        "the resume replays what followed"
    );
    assert_eq!(
        of("2", "complete").len(),
        1,
        "deleteBoard ends the subscriptions"
    );
    assert_eq!(
        of("5", "complete").len(),
        1,
        "deleteBoard ends the subscriptions"
    );

    // Every call each function made, against its role.
    let mut recorded: BTreeMap<String, Vec<RecordedRequest>> = BTreeMap::new();
    for endpoints in endpoints.iter().chain([&direct_endpoints]) {
        recorded
            .entry(endpoints.function.to_owned())
            .or_default()
            .extend(endpoints.requests());
    }
    let names = iam::Names {
        tables: [
            ("ConnectionsTable", &tables.names.connections),
            ("SubscriptionsTable", &tables.names.subscriptions),
            ("EventsTable", &tables.names.events),
            ("BoardsTable", &tables.app_table),
        ]
        .map(|(logical, name)| (logical.to_owned(), name.clone()))
        .into(),
        queues: [(
            "FanoutQueue".to_owned(),
            queue_url.rsplit('/').next().unwrap_or_default().to_owned(),
        )]
        .into(),
    };
    iam::check("boards", &names, &recorded, &["BoardsTable"], true);
}

/// Connections the Management API stand-ins answer 410 Gone for.
const GONE_STREAM: &str = "GoneByStream01a";
const GONE_FANOUT: &str = "GoneByFanout01a";
const GONE_DIRECT: &str = "GoneByDirect01a";

/// `$connect`, `connection_init` and a `subscribe` to `board`'s cards on `connection`.
async fn open_and_subscribe(websocket: &Function, connection: &str, board: &str, token: &str) {
    let query = "subscription($b: ID!) { cardAdded(boardId: $b) { title } }";
    for event in [
        fixture("connect.json", token),
        fixture("connection-init.json", token),
        message(
            &json!({"id": "1", "type": "subscribe",
                   "payload": {"query": query, "variables": {"b": board}}}),
            token,
        ),
    ] {
        let answer = websocket.invoke(on_connection(event, connection)).await;
        assert_eq!(answer["statusCode"], 200, "{connection}: {answer}");
    }
}

/// The card titles of the `next` frames the fixtures' connection received, in order.
fn titles(management: &ScriptedServer) -> Vec<String> {
    frames(management)
        .iter()
        .filter(|f| f["type"] == "next")
        .filter_map(|f| f["payload"]["data"]["cardAdded"]["title"].as_str())
        .map(str::to_owned)
        .collect()
}

/// The prices app's binaries the same way, for what its table is granted: prices published
/// over HTTP (each a commit with the symbol's last price), read back by a query over HTTP and
/// over the socket, and delivered by the stream function. The broker's own grants are held to their
/// use by the boards run; here every call must be granted and every grant on the prices table
/// used or given a reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_prices_apps_binaries_use_what_their_roles_grant_on_its_table() {
    use broker::App;
    use broker::aws::{AppTables, provision};

    let binaries: Vec<PathBuf> = tokio::task::spawn_blocking(|| app_binaries("prices"))
        .await
        .unwrap();
    let tables = fresh_tables().await;
    let prices_table = format!("prices-{}", tables.names.events);
    let app_tables = AppTables::new(
        tables.dynamodb.clone(),
        [(prices::store::TABLE.to_owned(), prices_table.clone())],
    );
    provision::create_app_tables(&tables.dynamodb, &prices::Prices.tables(), &app_tables)
        .await
        .expect("the prices table is created on moto");
    let (_, queue_url) = fresh_fifo_queue().await;
    let management = ScriptedServer::start(vec![Reply::new(200, "{}")]).await;
    let mut variables = function_environment(&tables, &queue_url, &management.endpoint, SECRET);
    variables.retain(|(name, _)| name != "BOARDS_TABLE");
    variables.push(("PRICES_TABLE".to_owned(), prices_table.clone()));
    let mut functions = Vec::new();
    let mut endpoints = Vec::new();
    for (name, binary) in [
        "WebSocketFunction",
        "HttpFunction",
        "StreamPublisherFunction",
    ]
    .into_iter()
    .zip(&binaries)
    {
        let (function, recorded) =
            start_recorded(name, binary, &variables, &management.endpoint).await;
        functions.push(function);
        endpoints.push(recorded);
    }
    let [websocket, http, stream] = &functions[..] else {
        unreachable!("three functions")
    };
    let authenticator = Authenticator::new(AuthConfig {
        secret: SECRET.into(),
        issuer: None,
        audience: None,
        leeway_secs: broker::auth::DEFAULT_LEEWAY_SECS,
    });
    let token = authenticator.mint(USER, 600);
    let backend = authenticator.mint_with_roles("quotes-service", 600, &["backend"]);

    for event in ["connect.json", "connection-init.json"] {
        let answer = websocket.invoke(fixture(event, &token)).await;
        assert_eq!(answer["statusCode"], 200, "{event}: {answer}");
    }
    let subscribe = json!({"id": "1", "type": "subscribe", "payload": {
        "query": "subscription { priceChanged(symbols: [\"ACME\"]) { symbol price } }"}});
    let answer = websocket.invoke(message(&subscribe, &token)).await;
    assert_eq!(answer["statusCode"], 200, "{answer}");
    let publish = "mutation($p: Float!) { publishPrice(symbol: \"ACME\", price: $p) { price } }";
    data(
        &http
            .invoke(graphql(publish, &json!({"p": 1.5}), &backend))
            .await,
    );
    let read = "{ price(symbol: \"ACME\") { price } }";
    assert_eq!(
        data(&http.invoke(graphql(read, &json!({}), &token)).await)["price"]["price"],
        1.5
    );
    // A price published again over HTTP; the user reads it over the socket. (Not published
    // over a socket: operations there run without roles, and publishing needs `backend`.)
    data(
        &http
            .invoke(graphql(publish, &json!({"p": 2.5}), &backend))
            .await,
    );
    let frame = json!({"id": "3", "type": "subscribe", "payload": {"query": read}});
    let answer = websocket.invoke(message(&frame, &token)).await;
    assert_eq!(answer["statusCode"], 200, "{answer}");
    let read_back: Vec<Value> = frames(&management)
        .into_iter()
        .filter(|f| f["id"] == "3" && f["type"] == "next")
        .collect();
    assert_eq!(read_back.len(), 1, "{read_back:?}");
    assert_eq!(read_back[0]["payload"]["data"]["price"]["price"], 2.5);

    let mut batch = aws_lambda_events::dynamodb::Event::default();
    batch.records = tables.stream_lambda_records().await;
    let published = stream.invoke(serde_json::to_value(&batch).unwrap()).await;
    assert_eq!(published["batchItemFailures"], json!([]), "{published}");
    let delivered: Vec<Value> = frames(&management)
        .into_iter()
        .filter(|f| f["id"] == "1" && f["type"] == "next")
        .map(|f| f["payload"]["data"]["priceChanged"]["price"].clone())
        .collect();
    assert_eq!(delivered, [json!(1.5), json!(2.5)]);

    let recorded = endpoints
        .iter()
        .map(|e| (e.function.to_owned(), e.requests()))
        .collect();
    let names = iam::Names {
        tables: [
            ("ConnectionsTable", &tables.names.connections),
            ("SubscriptionsTable", &tables.names.subscriptions),
            ("EventsTable", &tables.names.events),
            ("PricesTable", &prices_table),
        ]
        .map(|(logical, name)| (logical.to_owned(), name.clone()))
        .into(),
        queues: [(
            "FanoutQueue".to_owned(),
            queue_url.rsplit('/').next().unwrap_or_default().to_owned(),
        )]
        .into(),
    };
    iam::check("prices", &names, &recorded, &["PricesTable"], false);
}
