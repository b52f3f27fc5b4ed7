//! GraphQL over HTTP as the GraphQL-over-HTTP spec asks: over real HTTP against the local
//! mode, and through the HTTP handler on API Gateway's events (what runs on AWS).

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use aws_lambda_events::encodings::Body;
use broker::DeliveryMode;
use broker_tests::fixtures::{self, fixture};
use broker_tests::local::*;
use graphql_api::http_api;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const GRAPHQL_RESPONSE: &str = "application/graphql-response+json";
const TWO_OPERATIONS: &str = "query Mine { boards { title } } query Name { __typename }";

struct Reply {
    status: u16,
    content_type: String,
    body: Value,
}

async fn reply(response: reqwest::Response) -> Reply {
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    Reply {
        status,
        content_type,
        body,
    }
}

/// A POST of `body` with this content type and accept header (each if given).
async fn post(
    gateway: &local_gateway::LocalGateway,
    token: &str,
    content_type: Option<&str>,
    accept: Option<&str>,
    body: &str,
) -> Reply {
    let mut request = reqwest::Client::new()
        .post(gateway.graphql_url())
        .bearer_auth(token)
        .body(body.to_owned());
    if let Some(content_type) = content_type {
        request = request.header("content-type", content_type);
    }
    if let Some(accept) = accept {
        request = request.header("accept", accept);
    }
    reply(request.send().await.unwrap()).await
}

async fn get(
    gateway: &local_gateway::LocalGateway,
    token: &str,
    accept: Option<&str>,
    parameters: &[(&str, &str)],
) -> Reply {
    let mut request = reqwest::Client::new()
        .get(gateway.graphql_url())
        .bearer_auth(token)
        .query(parameters);
    if let Some(accept) = accept {
        request = request.header("accept", accept);
    }
    reply(request.send().await.unwrap()).await
}

fn message(body: &Value) -> &str {
    body["errors"][0]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("expected a GraphQL error: {body}"))
}

#[tokio::test]
async fn get_runs_the_operation_named_by_operation_name() {
    let gateway = start(options(DeliveryMode::Stream)).await;
    let alice = token(&gateway, "alice");
    create_board(&gateway, &alice, "Groceries").await;
    let named = get(
        &gateway,
        &alice,
        None,
        &[("query", TWO_OPERATIONS), ("operationName", "Name")],
    )
    .await;
    assert_eq!(named.status, 200);
    assert_eq!(named.body, json!({"data": {"__typename": "Query"}}));
    let mine = get(
        &gateway,
        &alice,
        None,
        &[("query", TWO_OPERATIONS), ("operationName", "Mine")],
    )
    .await;
    assert_eq!(
        mine.body,
        json!({"data": {"boards": [{"title": "Groceries"}]}})
    );
    // Naming none of two is a request error: 400 for a client that accepts the new type.
    let unnamed = get(
        &gateway,
        &alice,
        Some(GRAPHQL_RESPONSE),
        &[("query", TWO_OPERATIONS)],
    )
    .await;
    assert_eq!(unnamed.status, 400, "{}", unnamed.body);
    assert!(unnamed.body.get("data").is_none(), "{}", unnamed.body);
    gateway.shutdown().await;
}

#[tokio::test]
async fn a_request_without_a_well_formed_query_is_400_with_a_graphql_error() {
    let gateway = start(options(DeliveryMode::Stream)).await;
    let alice = token(&gateway, "alice");
    let bodies = [
        ("{", "not JSON"),
        ("[]", "JSON object"),
        ("{}", "no query"),
        (r#"{"query": null}"#, "no query"),
        (r#"{"query": ""}"#, "empty"),
        (r#"{"query": 1}"#, "query must be a string"),
        (r#"{"qeury": "{ boards { id } }"}"#, "no query"),
        (
            r#"{"query": "{ boards { id } }", "variables": [7]}"#,
            "variables must be a JSON object",
        ),
        (
            r#"{"query": "{ boards { id } }", "operationName": 7}"#,
            "operationName must be a string",
        ),
    ];
    for accept in [None, Some(GRAPHQL_RESPONSE)] {
        for (body, expected) in bodies {
            let reply = post(&gateway, &alice, Some("application/json"), accept, body).await;
            assert_eq!(reply.status, 400, "{body}: {}", reply.body);
            assert!(
                message(&reply.body).contains(expected),
                "{body}: {}",
                reply.body
            );
        }
        for parameters in [&[][..], &[("query", "")], &[("operationName", "A")]] {
            let reply = get(&gateway, &alice, accept, parameters).await;
            assert_eq!(reply.status, 400, "{parameters:?}: {}", reply.body);
            assert!(message(&reply.body).contains("query"), "{}", reply.body);
        }
    }
    gateway.shutdown().await;
}

#[tokio::test]
async fn a_post_body_must_be_json_in_utf8() {
    let gateway = start(options(DeliveryMode::Stream)).await;
    let alice = token(&gateway, "alice");
    let body = r#"{"query": "{ boards { id } }"}"#;
    for content_type in [
        None,
        Some("text/plain"),
        Some("application/graphql"),
        Some("application/x-www-form-urlencoded"),
        Some("application/json; charset=iso-8859-1"),
        Some("not a media type"),
    ] {
        let reply = post(&gateway, &alice, content_type, None, body).await;
        assert_eq!(reply.status, 415, "{content_type:?}: {}", reply.body);
        assert!(message(&reply.body).contains("application/json"));
    }
    for content_type in [
        "application/json",
        "application/json; charset=utf-8",
        "Application/JSON;charset=UTF-8",
    ] {
        let reply = post(&gateway, &alice, Some(content_type), None, body).await;
        assert_eq!(reply.status, 200, "{content_type}: {}", reply.body);
        assert_eq!(reply.body, json!({"data": {"boards": []}}));
    }
    gateway.shutdown().await;
}

#[tokio::test]
async fn the_response_takes_the_media_type_and_status_codes_the_client_accepts() {
    let gateway = start(options(DeliveryMode::Stream)).await;
    let alice = token(&gateway, "alice");
    let json = Some("application/json");
    let modern = Some("application/graphql-response+json, application/json;q=0.9");

    // Ran: 200 in either type.
    let ok = r#"{"query": "{ boards { id } }"}"#;
    let legacy = post(&gateway, &alice, json, None, ok).await;
    assert_eq!(
        (legacy.status, legacy.content_type.as_str()),
        (200, "application/json")
    );
    let new = post(&gateway, &alice, json, modern, ok).await;
    assert_eq!(new.status, 200);
    assert!(
        new.content_type.starts_with(GRAPHQL_RESPONSE),
        "{}",
        new.content_type
    );
    assert_eq!(new.body, json!({"data": {"boards": []}}));

    // Did not run (does not parse, does not validate, over the cost limits, names no
    // operation of several): 200 with `data: null` as application/json, 400 without `data`
    // as application/graphql-response+json.
    let refused = [
        json!({"query": "{"}),
        json!({"query": "{ nope }"}),
        json!({"query": format!("{{ {} }}", "boards { id } ".repeat(600))}),
        json!({"query": TWO_OPERATIONS, "operationName": "Other"}),
    ];
    for body in &refused {
        let body = body.to_string();
        let legacy = post(&gateway, &alice, json, None, &body).await;
        assert_eq!(legacy.status, 200, "{body}: {}", legacy.body);
        assert!(legacy.body["data"].is_null(), "{}", legacy.body);
        assert!(legacy.body["errors"][0]["message"].is_string());
        let new = post(&gateway, &alice, json, modern, &body).await;
        assert_eq!(new.status, 400, "{body}: {}", new.body);
        assert!(new.content_type.starts_with(GRAPHQL_RESPONSE));
        assert!(new.body.get("data").is_none(), "{}", new.body);
        assert!(new.body["errors"][0]["message"].is_string());
    }

    // Ran, with a field error (a board that is not the caller's): 200 in either type.
    let field_error = r#"{"query": "{ cards(boardId: \"nope\") { id } }"}"#;
    let new = post(&gateway, &alice, json, modern, field_error).await;
    assert_eq!(new.status, 200, "{}", new.body);
    assert!(new.body["errors"][0]["path"].is_array(), "{}", new.body);

    // An Accept naming neither type: 406; wildcards get application/json.
    let html = post(&gateway, &alice, json, Some("text/html"), ok).await;
    assert_eq!(html.status, 406, "{}", html.body);
    let any = post(&gateway, &alice, json, Some("text/html, */*;q=0.8"), ok).await;
    assert_eq!(
        (any.status, any.content_type.as_str()),
        (200, "application/json")
    );
    // Errors of the request itself come in the accepted type too.
    let unauthorised = post(&gateway, "nope", json, modern, ok).await;
    assert_eq!(unauthorised.status, 401);
    assert!(unauthorised.content_type.starts_with(GRAPHQL_RESPONSE));
    gateway.shutdown().await;
}

/// Sends `head` and `body` over a raw connection and returns the answer, which must come
/// without the rest of the body.
async fn raw_request(addr: std::net::SocketAddr, head: String, body: &[u8]) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    // Read up to the end of the headers and the JSON body, or until the server closes.
    loop {
        match tokio::time::timeout(PATIENCE, stream.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => answer.extend_from_slice(&buffer[..n]),
            Err(_) => panic!(
                "no answer without the rest of the body: {}",
                String::from_utf8_lossy(&answer)
            ),
        }
    }
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn the_local_gateway_reads_no_body_past_the_request_limit() {
    let mut options = options(DeliveryMode::Stream);
    options.broker.max_request_bytes = 16 * 1024;
    let gateway = start(options).await;
    let alice = token(&gateway, "alice");
    let head = |framing: &str| {
        format!(
            "POST /graphql HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {alice}\r\n\
             content-type: application/json\r\n{framing}\r\n"
        )
    };

    // A declared length over the limit: refused before any of the body is sent.
    let answer = raw_request(gateway.addr(), head("content-length: 6000000\r\n"), b"").await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("over 16384 bytes"), "{answer}");

    // No length: read up to the limit, then refused while the client still has 5.9 MB to
    // send (it never sends them).
    let chunk = format!("{:x}\r\n{}\r\n", 20 * 1024, "x".repeat(20 * 1024));
    let answer = raw_request(
        gateway.addr(),
        head("transfer-encoding: chunked\r\n"),
        chunk.as_bytes(),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("over 16384 bytes"), "{answer}");

    // A body within the limit still runs.
    let small = post(
        &gateway,
        &alice,
        Some("application/json"),
        None,
        r#"{"query": "{ boards { id } }"}"#,
    )
    .await;
    assert_eq!(small.status, 200);
    // And the limit is the handler's: a body just over it, fully sent, gets the same 413.
    let large = json!({"query": format!("{{ boards(x: \"{}\") {{ id }} }}", "x".repeat(17_000))});
    let large = post(
        &gateway,
        &alice,
        Some("application/json"),
        None,
        &large.to_string(),
    )
    .await;
    assert_eq!(large.status, 413);
    assert!(message(&large.body).contains("over 16384 bytes"));
    gateway.shutdown().await;
}

#[tokio::test]
async fn a_query_string_over_the_limit_is_a_414_and_the_servers_own_limit_comes_at_64_kb() {
    let mut options = options(DeliveryMode::Stream);
    options.broker.max_request_bytes = 16 * 1024;
    let gateway = start(options).await;
    let alice = token(&gateway, "alice");
    let get = |length: usize| {
        let query = format!("%7Bboards(x:%22{}%22)%7Bid%7D%7D", "x".repeat(length));
        format!(
            "GET /graphql?query={query} HTTP/1.1\r\nhost: x\r\nconnection: close\r\nauthorization: Bearer {alice}\r\n\r\n"
        )
    };
    // Over the request limit: the handler's 414, with a GraphQL error.
    let answer = raw_request(gateway.addr(), get(17_000), b"").await;
    assert!(answer.starts_with("HTTP/1.1 414"), "{answer}");
    assert!(answer.contains("over 16384 bytes"), "{answer}");
    // Past 64 KB the HTTP server refuses the request line itself, whatever the limit.
    let answer = raw_request(gateway.addr(), get(70_000), b"").await;
    assert!(answer.starts_with("HTTP/1.1 414"), "{answer}");
    assert!(!answer.contains("errors"), "{answer}");
    gateway.shutdown().await;
}

// The same rules on API Gateway's events, through the handler that runs on Lambda.

fn body_json(reply: &ApiGatewayV2httpResponse) -> Value {
    match &reply.body {
        Some(Body::Text(text)) => serde_json::from_str(text).unwrap(),
        other => panic!("expected a text body, got {other:?}"),
    }
}

fn event(token: &str, method: http::Method) -> ApiGatewayV2httpRequest {
    let mut event: ApiGatewayV2httpRequest = fixture("http-query.json", token);
    event.request_context.http.method = method;
    event.raw_query_string = None;
    event.body = None;
    event
}

#[tokio::test]
async fn the_handler_follows_the_spec_on_aws_events() {
    let h = fixtures::harness().await;

    // GET with operationName.
    let mut named = event(&h.token, http::Method::GET);
    named.raw_query_string = Some(
        url::form_urlencoded::Serializer::new(String::new())
            .append_pair("query", TWO_OPERATIONS)
            .append_pair("operationName", "Name")
            .finish(),
    );
    let reply = http_api::handle(&h.broker, named).await;
    assert_eq!(reply.status_code, 200);
    assert_eq!(body_json(&reply), json!({"data": {"__typename": "Query"}}));

    // No query: 400 with a GraphQL error.
    let mut empty = event(&h.token, http::Method::POST);
    empty
        .headers
        .insert("content-type", "application/json".parse().unwrap());
    empty.body = Some("{}".to_owned());
    let reply = http_api::handle(&h.broker, empty).await;
    assert_eq!(reply.status_code, 400);
    assert!(message(&body_json(&reply)).contains("no query"));

    // A body that is not declared JSON: 415.
    let mut text = event(&h.token, http::Method::POST);
    text.headers
        .insert("content-type", "text/plain".parse().unwrap());
    text.body = Some(r#"{"query": "{ boards { id } }"}"#.to_owned());
    let reply = http_api::handle(&h.broker, text).await;
    assert_eq!(reply.status_code, 415);

    // The fixture accepts application/graphql-response+json first: a validation error is
    // 400 in that type, and a good query 200.
    let mut invalid = event(&h.token, http::Method::POST);
    invalid
        .headers
        .insert("content-type", "application/json".parse().unwrap());
    invalid.body = Some(r#"{"query": "{ nope }"}"#.to_owned());
    let reply = http_api::handle(&h.broker, invalid).await;
    assert_eq!(reply.status_code, 400);
    assert_eq!(
        reply.headers["content-type"],
        "application/graphql-response+json; charset=utf-8"
    );
    assert!(body_json(&reply).get("data").is_none());
    let reply = http_api::handle(&h.broker, fixture("http-query.json", &h.token)).await;
    assert_eq!(reply.status_code, 200);
    assert_eq!(
        body_json(&reply)["data"]["boards"][0]["id"],
        fixtures::BOARD
    );
}
