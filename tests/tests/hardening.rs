//! Limits and expiries of the local gateway, over real sockets: token expiry (4403), the
//! close handshake, frame limits (1009 / 1007), idle and maximum duration (1001), slow
//! readers (1013), the connection limit and the header timeout.

use std::time::Duration;

use broker::DeliveryMode;
use broker_tests::local::*;
use futures_util::{SinkExt, StreamExt};
use local_gateway::Options;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};

fn embedded() -> Options {
    options(DeliveryMode::Direct)
}

/// A token for `user` that expires `ttl` seconds from now.
fn short_token(gateway: &local_gateway::LocalGateway, user: &str, ttl: u64) -> String {
    gateway.broker().authenticator().mint(user, ttl)
}

#[tokio::test]
async fn a_socket_is_closed_with_4403_when_its_token_expires() {
    for protocol in ["graphql-transport-ws", "graphql-ws"] {
        let gateway = start(embedded()).await;
        let alice = token(&gateway, "alice");
        let board = create_board(&gateway, &alice, "b").await;
        let mut tab = WsClient::ready(&gateway, protocol, &short_token(&gateway, "alice", 2)).await;
        tab.subscribe("s", CARD_ADDED, json!({"b": board})).await;
        tab.sync().await;
        assert_eq!(tab.closed().await.unwrap(), 4403, "{protocol}");
        // Nothing of the connection is left to deliver to.
        let broker = gateway.broker().clone();
        assert!(
            eventually(async || broker
                .ports()
                .connections
                .by_user(&broker::UserId::new("alice"))
                .await
                .unwrap()
                .is_empty())
            .await
        );
        gateway.shutdown().await;
    }
}

#[tokio::test]
async fn a_query_string_token_expires_as_well() {
    let gateway = start(embedded()).await;
    let token = short_token(&gateway, "alice", 2);
    let mut tab = WsClient::connect(&gateway, Some("graphql-transport-ws"), Some(&token))
        .await
        .unwrap();
    tab.send(json!({"type": "connection_init"})).await;
    assert_eq!(tab.recv().await.unwrap()["type"], "connection_ack");
    assert_eq!(tab.closed().await.unwrap(), 4403);
    gateway.shutdown().await;
}

/// A token signed with the tests' secret for `user`, whose `exp` is `exp`.
fn token_expiring_at(user: &str, exp: u64) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"sub": user, "exp": exp}),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

/// Whether a mutation with `token` runs over HTTP, and whether a socket initialised with it
/// is acknowledged (`Some(true)`), or closed with 4403 (`Some(false)`).
async fn accepted_on_both_paths(
    gateway: &local_gateway::LocalGateway,
    token: &str,
) -> (bool, bool) {
    let body = http_graphql(
        gateway,
        token,
        "mutation { createBoard(title: \"t\") { id } }",
        json!({}),
    )
    .await;
    let http = body["data"]["createBoard"]["id"].is_string();
    if !http {
        assert_eq!(body["errors"][0]["message"], "token expired", "{body}");
    }
    let mut tab = WsClient::connect(gateway, Some("graphql-transport-ws"), None)
        .await
        .unwrap();
    tab.send(json!({"type": "connection_init", "payload": {"token": token}}))
        .await;
    // graphql-transport-ws answers a refused init with the close alone.
    let socket = match tab.recv().await {
        Ok(message) => {
            assert_eq!(message["type"], "connection_ack", "{message}");
            true
        }
        Err(closed) => {
            assert!(closed.to_string().contains("4403"), "{closed}");
            false
        }
    };
    (http, socket)
}

#[tokio::test]
async fn one_leeway_rule_holds_for_http_and_sockets() {
    // The default leeway: a token 2 s past `exp` is still accepted on both paths, one past
    // `exp` plus the leeway on neither.
    let gateway = start(embedded()).await;
    let leeway = broker::auth::DEFAULT_LEEWAY_SECS;
    let now = broker::domain::now_secs();
    let within = token_expiring_at("alice", now - 2);
    assert_eq!(
        accepted_on_both_paths(&gateway, &within).await,
        (true, true)
    );
    let beyond = token_expiring_at("alice", now - leeway - 5);
    assert_eq!(
        accepted_on_both_paths(&gateway, &beyond).await,
        (false, false)
    );
    gateway.shutdown().await;

    // No leeway: a token past its `exp` is refused on both paths.
    let mut options = embedded();
    options.auth.leeway_secs = 0;
    let gateway = start(options).await;
    let past = token_expiring_at("alice", broker::domain::now_secs() - 2);
    assert_eq!(
        accepted_on_both_paths(&gateway, &past).await,
        (false, false)
    );
    gateway.shutdown().await;
}

#[tokio::test]
async fn a_socket_is_closed_when_a_request_with_its_token_would_be_refused() {
    // A socket whose token expires in 1 s, with a leeway of 1 s: when it is closed (4403),
    // the same token is refused over HTTP.
    let mut options = embedded();
    options.auth.leeway_secs = 1;
    let gateway = start(options).await;
    let token = short_token(&gateway, "alice", 1);
    let mut tab = WsClient::ready(&gateway, "graphql-transport-ws", &token).await;
    assert_eq!(tab.closed().await.unwrap(), 4403);
    let body = http_graphql(&gateway, &token, "{ __typename }", json!({})).await;
    assert_eq!(body["errors"][0]["message"], "token expired", "{body}");
    gateway.shutdown().await;
}

#[tokio::test]
async fn an_expired_token_at_init_gets_4403_and_says_only_token_expired() {
    let gateway = start(embedded()).await;
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"sub": "alice", "exp": broker::domain::now_secs() - 3600}),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    let mut tab = WsClient::connect(&gateway, Some("graphql-ws"), None)
        .await
        .unwrap();
    tab.send(json!({"type": "connection_init", "payload": {"token": token}}))
        .await;
    let error = tab.recv().await.unwrap();
    assert_eq!(
        error,
        json!({"type": "connection_error", "payload": {"message": "token expired"}})
    );
    assert_eq!(tab.closed().await.unwrap(), 4403);
    gateway.shutdown().await;
}

#[tokio::test]
async fn bad_tokens_are_described_only_as_invalid_over_http_and_the_socket() {
    let gateway = start(embedded()).await;
    // A payload that is a JSON array, and a token with a `crit` header.
    let header = jsonwebtoken::Header {
        crit: Some(vec!["x".into()]),
        ..Default::default()
    };
    let crit = jsonwebtoken::encode(
        &header,
        &json!({"sub": "alice", "exp": broker::domain::now_secs() + 60}),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    for bad in ["eyJhbGciOiJIUzI1NiJ9.WzEsMl0.c2ln", crit.as_str()] {
        let response = reqwest::Client::new()
            .post(gateway.graphql_url())
            .bearer_auth(bad)
            .json(&json!({"query": "{ __typename }"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401);
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body, json!({"errors": [{"message": "invalid token"}]}));

        let mut tab = WsClient::connect(&gateway, Some("graphql-ws"), None)
            .await
            .unwrap();
        tab.send(json!({"type": "connection_init", "payload": {"token": bad}}))
            .await;
        let error = tab.recv().await.unwrap();
        assert_eq!(error["payload"], json!({"message": "invalid token"}));
        assert_eq!(tab.closed().await.unwrap(), 4401);
    }
    gateway.shutdown().await;
}

#[tokio::test]
async fn a_clients_close_is_answered_with_its_code() {
    let gateway = start(embedded()).await;
    let alice = token(&gateway, "alice");
    for code in [CloseCode::Normal, CloseCode::Away, CloseCode::Library(4000)] {
        let mut tab = WsClient::ready(&gateway, "graphql-transport-ws", &alice).await;
        tab.socket_mut()
            .send(Message::Close(Some(CloseFrame {
                code,
                reason: "bye".into(),
            })))
            .await
            .unwrap();
        assert_eq!(tab.closed().await.unwrap(), u16::from(code));
    }
    gateway.shutdown().await;
}

#[tokio::test]
async fn a_frame_over_32_kb_is_closed_with_1009() {
    let gateway = start(embedded()).await;
    let alice = token(&gateway, "alice");
    let mut tab = WsClient::ready(&gateway, "graphql-transport-ws", &alice).await;
    tab.send_text("x".repeat(33 * 1024)).await;
    assert_eq!(tab.closed().await.unwrap(), 1009);
    gateway.shutdown().await;
}

#[tokio::test]
async fn a_message_over_128_kb_in_small_frames_is_closed_with_1009() {
    let gateway = start(embedded()).await;
    let alice = token(&gateway, "alice");
    let mut tab = WsClient::ready(&gateway, "graphql-transport-ws", &alice).await;
    let chunk = vec![b'x'; 16 * 1024];
    let socket = tab.socket_mut();
    socket
        .send(Message::Frame(Frame::message(
            chunk.clone(),
            OpCode::Data(Data::Text),
            false,
        )))
        .await
        .unwrap();
    for _ in 0..9 {
        // The server may close before every fragment is sent.
        if socket
            .send(Message::Frame(Frame::message(
                chunk.clone(),
                OpCode::Data(Data::Continue),
                false,
            )))
            .await
            .is_err()
        {
            break;
        }
    }
    assert_eq!(tab.closed().await.unwrap(), 1009);
    gateway.shutdown().await;
}

#[tokio::test]
async fn invalid_utf8_is_closed_with_1007() {
    let gateway = start(embedded()).await;
    let alice = token(&gateway, "alice");
    let mut tab = WsClient::ready(&gateway, "graphql-transport-ws", &alice).await;
    tab.socket_mut()
        .send(Message::Frame(Frame::message(
            vec![b'{', 0xff, 0xfe, b'}'],
            OpCode::Data(Data::Text),
            true,
        )))
        .await
        .unwrap();
    assert_eq!(tab.closed().await.unwrap(), 1007);
    gateway.shutdown().await;
}

#[tokio::test]
async fn an_idle_socket_is_closed_with_1001_and_a_busy_one_is_not() {
    let mut options = embedded();
    options.limits.idle_timeout = Duration::from_secs(2);
    let gateway = start(options).await;
    let alice = token(&gateway, "alice");
    let mut idle = WsClient::ready(&gateway, "graphql-transport-ws", &alice).await;
    let mut busy = WsClient::ready(&gateway, "graphql-transport-ws", &alice).await;
    // The busy socket pings twice a second for three seconds and is still answered.
    for _ in 0..6 {
        busy.send(json!({"type": "ping"})).await;
        assert_eq!(busy.recv().await.unwrap()["type"], "pong");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(idle.closed().await.unwrap(), 1001);
    busy.send(json!({"type": "ping"})).await;
    assert_eq!(busy.recv().await.unwrap()["type"], "pong");
    gateway.shutdown().await;
}

#[tokio::test]
async fn every_socket_is_closed_with_1001_after_the_maximum_duration() {
    let mut options = embedded();
    options.limits.max_duration = Duration::from_secs(2);
    let gateway = start(options).await;
    let alice = token(&gateway, "alice");
    let mut tab = WsClient::ready(&gateway, "graphql-transport-ws", &alice).await;
    let started = tokio::time::Instant::now();
    let code = loop {
        tab.send(json!({"type": "ping"})).await;
        match tab.recv().await {
            Ok(message) => assert_eq!(message["type"], "pong"),
            Err(e) => {
                assert!(e.to_string().contains("closed"), "{e}");
                break e.to_string();
            }
        }
        assert!(started.elapsed() < PATIENCE, "never closed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(code.contains("Away"), "{code}");
    gateway.shutdown().await;
}

#[tokio::test]
async fn a_socket_that_does_not_read_is_closed_and_counted_and_others_are_served() {
    let mut options = embedded();
    options.limits.outbox_frames = 4;
    let gateway = start(options).await;
    let alice = token(&gateway, "alice");
    let slow = WsClient::ready(&gateway, "graphql-transport-ws", &alice).await;
    let fast = WsClient::ready(&gateway, "graphql-transport-ws", &alice).await;
    let broker = gateway.broker().clone();
    let ids: Vec<_> = broker
        .ports()
        .connections
        .by_user(&broker::UserId::new("alice"))
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(ids.len(), 2);
    // The fast socket reads all the time, the slow one never.
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let reader = tokio::spawn(async move {
        let mut fast = fast;
        let mut frames = 0u64;
        tokio::pin!(stopped);
        loop {
            tokio::select! {
                _ = &mut stopped => return (fast, frames),
                frame = fast.socket_mut().next() => match frame {
                    Some(Ok(Message::Text(_))) => frames += 1,
                    Some(Ok(_)) => {}
                    _ => return (fast, frames),
                },
            }
        }
    });
    // Post 100 KB frames to both through the Management API until the slow one overflows
    // (the TCP buffers take some megabytes first).
    let frame = json!({"type": "pong", "payload": {"pad": "x".repeat(100 * 1024)}}).to_string();
    let client = reqwest::Client::new();
    let post = async |id: &broker::ConnectionId| {
        client
            .post(format!(
                "{}/@connections/{id}",
                gateway.management_endpoint()
            ))
            .body(frame.clone())
            .send()
            .await
            .unwrap()
            .status()
    };
    let mut refused = Vec::new();
    let mut posted = 0;
    while refused.is_empty() && posted < 2_000 {
        for id in &ids {
            if post(id).await == 410 {
                refused.push(id.clone());
            }
        }
        posted += 1;
    }
    assert_eq!(refused.len(), 1, "exactly the slow socket is refused");
    assert_eq!(gateway.sockets_closed_too_slow(), 1);
    // The reading socket is still served.
    let fast_id = ids.iter().find(|id| **id != refused[0]).unwrap();
    assert_eq!(post(fast_id).await, 200);
    stop.send(()).unwrap();
    let (mut fast, frames) = reader.await.unwrap();
    assert!(frames >= posted, "{frames} of {posted}");
    fast.send(json!({"type": "ping"})).await;
    loop {
        let message = fast.recv().await.unwrap();
        if message["type"] == "pong" && message.get("payload").is_none() {
            break;
        }
    }
    drop(slow);
    gateway.shutdown().await;
}

#[tokio::test]
async fn connections_over_the_limit_are_closed_at_once() {
    let mut options = embedded();
    options.limits.max_connections = 2;
    let gateway = start(options).await;
    let first = tokio::net::TcpStream::connect(gateway.addr())
        .await
        .unwrap();
    let second = tokio::net::TcpStream::connect(gateway.addr())
        .await
        .unwrap();
    // Let the server accept both.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut third = tokio::net::TcpStream::connect(gateway.addr())
        .await
        .unwrap();
    let _ = third
        .write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
        .await;
    let mut buffer = [0u8; 64];
    let read = tokio::time::timeout(PATIENCE, third.read(&mut buffer))
        .await
        .expect("the third connection is closed, not left waiting");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    drop((first, second));
    // Once they are gone, a new connection is served.
    assert!(
        eventually(
            async || reqwest::get(format!("http://{}/health", gateway.addr()))
                .await
                .is_ok_and(|r| r.status() == 200)
        )
        .await
    );
    gateway.shutdown().await;
}

#[tokio::test]
async fn a_request_whose_headers_never_finish_is_dropped() {
    let mut options = embedded();
    options.limits.header_read_timeout = Duration::from_secs(1);
    let gateway = start(options).await;
    let mut stream = tokio::net::TcpStream::connect(gateway.addr())
        .await
        .unwrap();
    stream
        .write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let mut buffer = Vec::new();
    // A read error (reset) ends it as well as a clean close.
    let _ = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut buffer))
        .await
        .expect("the server ends the connection");
    // Either a bare close or a 408; never the health answer.
    let text = String::from_utf8_lossy(&buffer);
    assert!(!text.contains("200 OK"), "{text}");
    gateway.shutdown().await;
}
