//! The boards app's four Lambda binaries, built by cargo and run as Lambda runs them: each a
//! process polling its own Runtime API, configured by environment variables as the template
//! configures them, against moto, posting to a Management API stand-in. A card travels the
//! whole path `sam deploy` sets up: `$connect`, `connection_init` and two `subscribe`s
//! through the WebSocket function, `createBoard` and `addCard` through the HTTP function, the
//! events table's stream records (read from moto's stream) through the stream function,
//! which splits the delivery into fan-out pages (threshold 1, pages of 1), the pages (read
//! from moto's queue) through the fan-out worker, and the `next` frames at the stand-in.

use std::path::PathBuf;

use aws_lambda_events::sqs::{SqsEvent, SqsMessage};
use broker::{AuthConfig, Authenticator};
use broker_tests::aws::{Reply, ScriptedServer, fresh_fifo_queue, fresh_tables};
use broker_tests::fixtures::{CONNECTION, USER, fixture};
use broker_tests::lambda::{Function, app_binaries, function_environment};
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
    for (name, binary) in names.iter().zip(&binaries) {
        functions.push(Function::start(name, binary, &variables).await);
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
    let card_event = records
        .iter()
        .find(|r| {
            r.change.new_image.get("topic")
                == Some(&serde_dynamo::AttributeValue::S(format!(
                    "board/{board}/cardAdded"
                )))
        })
        .and_then(|r| match r.change.new_image.get("eventId") {
            Some(serde_dynamo::AttributeValue::S(id)) => Some(id.clone()),
            _ => None,
        })
        .expect("the card's event is in the stream");
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
    let mut messages = Vec::new();
    for _ in 0..20 {
        let received = sqs
            .receive_message()
            .queue_url(&queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .message_system_attribute_names(aws_sdk_sqs::types::MessageSystemAttributeName::All)
            .send()
            .await
            .unwrap();
        messages.extend(received.messages().iter().cloned());
        if messages.len() >= 2 {
            break;
        }
    }
    assert_eq!(messages.len(), 2, "one page per subscriber");
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
    let delivered = fanout.invoke(serde_json::to_value(&pages).unwrap()).await;
    assert_eq!(delivered["batchItemFailures"], json!([]), "{delivered}");

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
}
