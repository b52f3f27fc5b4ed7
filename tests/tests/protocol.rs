//! One test per protocol rule, each for both subprotocols, over real sockets to the local
//! mode.

use broker::DeliveryMode;
use broker_tests::local::*;
use serde_json::json;

const PROTOCOLS: [&str; 2] = ["graphql-transport-ws", "graphql-ws"];

#[tokio::test]
async fn the_chosen_subprotocol_is_echoed() {
    let gateway = start(options(DeliveryMode::Stream)).await;
    for protocol in PROTOCOLS {
        let client = WsClient::connect(&gateway, Some(protocol), None)
            .await
            .unwrap();
        assert_eq!(client.protocol.as_deref(), Some(protocol));
    }
    let both = WsClient::connect(&gateway, Some("graphql-ws, graphql-transport-ws"), None)
        .await
        .unwrap();
    assert_eq!(both.protocol.as_deref(), Some("graphql-transport-ws"));
    let none = WsClient::connect(&gateway, None, None).await.unwrap();
    assert_eq!(none.protocol, None);
    let refused = WsClient::connect(&gateway, Some("mqtt"), None)
        .await
        .err()
        .unwrap();
    assert_eq!(refused.status, 400);
    gateway.shutdown().await;
}

#[tokio::test]
async fn a_bad_token_at_connect_is_refused_with_401() {
    let gateway = start(options(DeliveryMode::Stream)).await;
    for protocol in PROTOCOLS {
        let refused = WsClient::connect(&gateway, Some(protocol), Some("bad.token.here"))
            .await
            .err()
            .unwrap();
        assert_eq!(refused.status, 401);
    }
    assert_eq!(gateway.open_sockets(), 0);
    gateway.shutdown().await;
}

#[tokio::test]
async fn a_token_at_connect_lets_init_go_without_one() {
    let gateway = start(options(DeliveryMode::Stream)).await;
    let alice = token(&gateway, "alice");
    for protocol in PROTOCOLS {
        let mut client = WsClient::connect(&gateway, Some(protocol), Some(&alice))
            .await
            .unwrap();
        client.send(json!({"type": "connection_init"})).await;
        assert_eq!(client.recv().await.unwrap()["type"], "connection_ack");
    }
    gateway.shutdown().await;
}

#[tokio::test]
async fn init_accepts_an_authorization_bearer_payload() {
    let gateway = start(options(DeliveryMode::Stream)).await;
    let alice = token(&gateway, "alice");
    for protocol in PROTOCOLS {
        let mut client = WsClient::connect(&gateway, Some(protocol), None)
            .await
            .unwrap();
        client
            .send(json!({"type": "connection_init", "payload": {"authorization": format!("Bearer {alice}")}}))
            .await;
        assert_eq!(client.recv().await.unwrap()["type"], "connection_ack");
    }
    gateway.shutdown().await;
}

#[tokio::test]
async fn init_without_a_valid_token_closes_with_4401_and_stores_nothing() {
    let gateway = start(options(DeliveryMode::Stream)).await;
    for protocol in PROTOCOLS {
        for payload in [json!(null), json!({"token": "forged"})] {
            let mut client = WsClient::connect(&gateway, Some(protocol), None)
                .await
                .unwrap();
            client
                .send(json!({"type": "connection_init", "payload": payload}))
                .await;
            if protocol == "graphql-ws" {
                // The legacy protocol says why before closing.
                assert_eq!(client.recv().await.unwrap()["type"], "connection_error");
            }
            assert_eq!(client.closed().await.unwrap(), 4401, "{protocol} {payload}");
        }
    }
    assert!(eventually(async || gateway.open_sockets() == 0).await);
    gateway.shutdown().await;
}

#[tokio::test]
async fn a_second_init_closes_with_4429() {
    let gateway = start(options(DeliveryMode::Stream)).await;
    let alice = token(&gateway, "alice");
    for protocol in PROTOCOLS {
        let mut client = WsClient::ready(&gateway, protocol, &alice).await;
        client
            .send(json!({"type": "connection_init", "payload": {"token": alice}}))
            .await;
        assert_eq!(client.closed().await.unwrap(), 4429, "{protocol}");
    }
    gateway.shutdown().await;
}

#[tokio::test]
async fn subscribing_before_init_closes_with_4401() {
    let gateway = start(options(DeliveryMode::Stream)).await;
    let alice = token(&gateway, "alice");
    for protocol in PROTOCOLS {
        // Even a token at connect does not stand in for connection_init.
        let mut client = WsClient::connect(&gateway, Some(protocol), Some(&alice))
            .await
            .unwrap();
        client.subscribe("1", BOARD_CREATED, json!({})).await;
        assert_eq!(client.closed().await.unwrap(), 4401, "{protocol}");
    }
    gateway.shutdown().await;
}

#[tokio::test]
async fn a_duplicate_subscription_id_closes_with_4409() {
    let gateway = start(options(DeliveryMode::Stream)).await;
    let alice = token(&gateway, "alice");
    let board = create_board(&gateway, &alice, "b").await;
    for protocol in PROTOCOLS {
        let mut client = WsClient::ready(&gateway, protocol, &alice).await;
        client.subscribe("same", BOARD_CREATED, json!({})).await;
        // Same id, another topic: still the same operation id on this connection.
        client
            .subscribe("same", CARD_ADDED, json!({"b": board}))
            .await;
        assert_eq!(client.closed().await.unwrap(), 4409, "{protocol}");
    }
    gateway.shutdown().await;
}

#[tokio::test]
async fn a_query_reusing_a_subscription_id_closes_with_4409() {
    let gateway = start(options(DeliveryMode::Stream)).await;
    let alice = token(&gateway, "alice");
    for (protocol, op) in [
        ("graphql-transport-ws", "subscribe"),
        ("graphql-ws", "start"),
    ] {
        let mut client = WsClient::ready(&gateway, protocol, &alice).await;
        client.subscribe("live", BOARD_CREATED, json!({})).await;
        client
            .send(json!({"id": "live", "type": op, "payload": {"query": "{ boards { id } }"}}))
            .await;
        assert_eq!(client.closed().await.unwrap(), 4409, "{protocol}");
    }
    gateway.shutdown().await;
}

#[tokio::test]
async fn malformed_messages_close_with_4400() {
    let gateway = start(options(DeliveryMode::Stream)).await;
    let alice = token(&gateway, "alice");
    let bad_frames = [
        "not json".to_owned(),
        json!({"no": "type"}).to_string(),
        json!({"type": "bogus"}).to_string(),
        json!({"type": "subscribe", "payload": {"query": "{ boards { id } }"}}).to_string(),
        json!({"id": "", "type": "subscribe", "payload": {"query": "{ boards { id } }"}})
            .to_string(),
    ];
    for protocol in PROTOCOLS {
        for frame in &bad_frames {
            let mut client = WsClient::ready(&gateway, protocol, &alice).await;
            client.send_text(frame.clone()).await;
            assert_eq!(client.closed().await.unwrap(), 4400, "{protocol}: {frame}");
        }
    }
    gateway.shutdown().await;
}

#[tokio::test]
async fn ping_gets_pong_with_its_payload() {
    let gateway = start(options(DeliveryMode::Stream)).await;
    let alice = token(&gateway, "alice");
    let mut client = WsClient::ready(&gateway, "graphql-transport-ws", &alice).await;
    client
        .send(json!({"type": "ping", "payload": {"n": 1}}))
        .await;
    assert_eq!(
        client.recv().await.unwrap(),
        json!({"type": "pong", "payload": {"n": 1}})
    );
    // A pong from the client needs no answer; the connection stays usable.
    client.send(json!({"type": "pong"})).await;
    client.sync().await;
    gateway.shutdown().await;
}

#[tokio::test]
async fn the_legacy_ack_arms_no_keep_alive_timer() {
    // A `ka` would start subscriptions-transport-ws's 30 s liveness timer, which only more
    // `ka`s could satisfy: the ack must be followed by nothing.
    let gateway = start(options(DeliveryMode::Stream)).await;
    let alice = token(&gateway, "alice");
    let mut client = WsClient::connect(&gateway, Some("graphql-ws"), None)
        .await
        .unwrap();
    client
        .send(json!({"type": "connection_init", "payload": {"token": alice}}))
        .await;
    assert_eq!(
        client.recv().await.unwrap(),
        json!({"type": "connection_ack"})
    );
    // The next frame is the answer to the next request, not a keep-alive.
    client.sync().await;
    gateway.shutdown().await;
}

#[tokio::test]
async fn connection_terminate_closes_normally() {
    let gateway = start(options(DeliveryMode::Stream)).await;
    let alice = token(&gateway, "alice");
    let mut client = WsClient::ready(&gateway, "graphql-ws", &alice).await;
    client.send(json!({"type": "connection_terminate"})).await;
    assert_eq!(client.closed().await.unwrap(), 1000);
    gateway.shutdown().await;
}

#[tokio::test]
async fn an_invalid_subscription_is_answered_with_an_error_message() {
    let gateway = start(options(DeliveryMode::Stream)).await;
    let alice = token(&gateway, "alice");
    for protocol in PROTOCOLS {
        let mut client = WsClient::ready(&gateway, protocol, &alice).await;
        client
            .subscribe("bad", "subscription { cardAdded { nope } }", json!({}))
            .await;
        let error = client.recv().await.unwrap();
        assert_eq!(error["type"], "error", "{protocol}: {error}");
        assert_eq!(error["id"], "bad");
        // graphql-transport-ws sends a list of errors, the legacy protocol one object.
        let first = if protocol == "graphql-ws" {
            &error["payload"]
        } else {
            &error["payload"][0]
        };
        assert!(first["message"].is_string(), "{error}");
        // The connection stays open and usable.
        client.sync().await;
    }
    gateway.shutdown().await;
}

#[tokio::test]
async fn a_connection_that_never_initialises_closes_with_4408() {
    let mut options = options(DeliveryMode::Stream);
    options.broker.init_timeout = std::time::Duration::from_millis(200);
    let gateway = start(options).await;
    for protocol in PROTOCOLS {
        let mut client = WsClient::connect(&gateway, Some(protocol), None)
            .await
            .unwrap();
        assert_eq!(client.closed().await.unwrap(), 4408, "{protocol}");
    }
    gateway.shutdown().await;
}

#[tokio::test]
async fn a_message_of_the_other_subprotocol_closes_with_4400() {
    let gateway = start(options(DeliveryMode::Stream)).await;
    let alice = token(&gateway, "alice");
    let board = create_board(&gateway, &alice, "b").await;
    let query = json!({"query": "{ boards { id } }"});
    let cases = [
        (
            "graphql-transport-ws",
            json!({"id": "1", "type": "start", "payload": query}),
        ),
        ("graphql-transport-ws", json!({"id": "s", "type": "stop"})),
        (
            "graphql-transport-ws",
            json!({"type": "connection_terminate"}),
        ),
        (
            "graphql-ws",
            json!({"id": "1", "type": "subscribe", "payload": query}),
        ),
        ("graphql-ws", json!({"id": "s", "type": "complete"})),
        ("graphql-ws", json!({"type": "ping"})),
        ("graphql-ws", json!({"type": "pong"})),
    ];
    for (protocol, frame) in cases {
        let mut client = WsClient::ready(&gateway, protocol, &alice).await;
        client.subscribe("s", CARD_ADDED, json!({"b": board})).await;
        client.sync().await;
        client.send(frame.clone()).await;
        assert_eq!(client.closed().await.unwrap(), 4400, "{protocol}: {frame}");
    }
    // The refused sockets' subscriptions went with them.
    let store = gateway.broker().ports().subscriptions.clone();
    assert!(
        eventually(async || store
            .by_topic(&boards::card_topic(&board))
            .await
            .unwrap()
            .is_empty())
        .await
    );
    gateway.shutdown().await;
}

#[tokio::test]
async fn a_legacy_stop_is_answered_by_complete_and_a_complete_by_nothing() {
    let gateway = start(options(DeliveryMode::Stream)).await;
    let alice = token(&gateway, "alice");
    let board = create_board(&gateway, &alice, "b").await;

    let mut legacy = WsClient::ready(&gateway, "graphql-ws", &alice).await;
    legacy
        .subscribe("cards", CARD_ADDED, json!({"b": board}))
        .await;
    legacy.sync().await;
    legacy.send(json!({"id": "cards", "type": "stop"})).await;
    assert_eq!(
        legacy.recv().await.unwrap(),
        json!({"id": "cards", "type": "complete"})
    );
    // A second stop of the same id has nothing left to end: no answer.
    legacy.send(json!({"id": "cards", "type": "stop"})).await;
    legacy.sync().await;

    // graphql-transport-ws: the server sends nothing for an id the client completed.
    let mut modern = WsClient::ready(&gateway, "graphql-transport-ws", &alice).await;
    modern
        .subscribe("cards", CARD_ADDED, json!({"b": board}))
        .await;
    modern.sync().await;
    modern
        .send(json!({"id": "cards", "type": "complete"}))
        .await;
    modern.sync().await;
    gateway.shutdown().await;
}
