//! The prices app end to end through the local mode, over real sockets, in both delivery
//! modes: public prices filtered by each subscriber's symbols, publishing for the backend
//! role only, per-user alerts, several subscriptions on one socket.

use std::sync::Arc;

use broker::DeliveryMode;
use broker_tests::local::*;
use local_gateway::LocalGateway;
use serde_json::{Value, json};

const MODES: [DeliveryMode; 2] = [DeliveryMode::Stream, DeliveryMode::Direct];

const PRICE_CHANGED: &str =
    "subscription($s: [String!]!) { priceChanged(symbols: $s) { symbol price } }";
const ALERTS: &str = "subscription { alerts { message } }";

async fn start_prices(mode: DeliveryMode) -> LocalGateway {
    let mut options = options(mode);
    options.app = Arc::new(prices::Prices);
    start(options).await
}

fn backend(gateway: &LocalGateway) -> String {
    gateway
        .broker()
        .authenticator()
        .mint_with_roles("quotes-service", 3600, &["backend"])
}

async fn publish(gateway: &LocalGateway, token: &str, symbol: &str, price: f64) -> Value {
    http_graphql(
        gateway,
        token,
        "mutation($s: String!, $p: Float!) { publishPrice(symbol: $s, price: $p) { symbol price } }",
        json!({"s": symbol, "p": price}),
    )
    .await
}

async fn alert(gateway: &LocalGateway, token: &str, user: &str, message: &str) -> Value {
    http_graphql(
        gateway,
        token,
        "mutation($u: ID!, $m: String!) { sendAlert(userId: $u, message: $m) { id message } }",
        json!({"u": user, "m": message}),
    )
    .await
}

/// Waits until the server has handled every frame sent before (a query's answer comes
/// after them: frames of one connection are handled in order).
async fn synced(tab: &mut WsClient) {
    let start = if tab.protocol.as_deref() == Some("graphql-ws") {
        "start"
    } else {
        "subscribe"
    };
    tab.send(json!({"id": "sync", "type": start, "payload": {"query": "{ me }"}}))
        .await;
    let answer = tab.recv().await.unwrap();
    assert_eq!(answer["id"], "sync", "{answer}");
    assert!(answer["payload"]["data"]["me"].is_string(), "{answer}");
    assert_eq!(tab.recv().await.unwrap()["type"], "complete");
}

fn price_of(message: &Value) -> (&str, f64) {
    let price = &message["payload"]["data"]["priceChanged"];
    (
        price["symbol"].as_str().unwrap_or_default(),
        price["price"].as_f64().unwrap_or_default(),
    )
}

#[tokio::test]
async fn each_subscriber_gets_only_the_symbols_it_asked_for() {
    for mode in MODES {
        let gateway = start_prices(mode).await;
        let (alice, bob, quotes) = (
            token(&gateway, "alice"),
            token(&gateway, "bob"),
            backend(&gateway),
        );
        // Alice: two price subscriptions and her alerts on one socket.
        let mut alice_tab = WsClient::ready(&gateway, "graphql-transport-ws", &alice).await;
        alice_tab
            .subscribe("tech", PRICE_CHANGED, json!({"s": ["AAPL", "msft"]}))
            .await;
        alice_tab
            .subscribe("cars", PRICE_CHANGED, json!({"s": ["TSLA"]}))
            .await;
        alice_tab.subscribe("alerts", ALERTS, json!({})).await;
        synced(&mut alice_tab).await;
        let mut bob_tab = WsClient::ready(&gateway, "graphql-ws", &bob).await;
        bob_tab
            .subscribe("goog", PRICE_CHANGED, json!({"s": ["GOOG"]}))
            .await;
        synced(&mut bob_tab).await;

        for (symbol, price) in [("AAPL", 1.0), ("GOOG", 2.0), ("MSFT", 3.0), ("IBM", 4.0)] {
            let published = publish(&gateway, &quotes, symbol, price).await;
            assert_eq!(
                published["data"]["publishPrice"]["symbol"], symbol,
                "{published}"
            );
        }
        publish(&gateway, &quotes, "TSLA", 5.0).await;
        alert(&gateway, &quotes, "alice", "margin call").await;

        let mut received = Vec::new();
        for _ in 0..4 {
            received.push(alice_tab.recv().await.unwrap());
        }
        assert_eq!(
            (received[0]["id"].as_str(), price_of(&received[0])),
            (Some("tech"), ("AAPL", 1.0)),
            "{mode:?}"
        );
        assert_eq!(
            (received[1]["id"].as_str(), price_of(&received[1])),
            (Some("tech"), ("MSFT", 3.0))
        );
        assert_eq!(
            (received[2]["id"].as_str(), price_of(&received[2])),
            (Some("cars"), ("TSLA", 5.0))
        );
        // The alert comes last: neither GOOG nor IBM came between.
        assert_eq!(received[3]["id"], "alerts");
        assert_eq!(
            received[3]["payload"]["data"]["alerts"]["message"],
            "margin call"
        );

        let goog = bob_tab.recv().await.unwrap();
        assert_eq!(goog["type"], "data");
        assert_eq!(price_of(&goog), ("GOOG", 2.0));
        // Bob's next message is his next GOOG price: nothing else reached him.
        publish(&gateway, &quotes, "GOOG", 6.0).await;
        assert_eq!(price_of(&bob_tab.recv().await.unwrap()), ("GOOG", 6.0));
        gateway.shutdown().await;
    }
}

#[tokio::test]
async fn only_the_backend_role_may_publish_prices_or_send_alerts() {
    for mode in MODES {
        let gateway = start_prices(mode).await;
        let alice = token(&gateway, "alice");
        let mut tab = WsClient::ready(&gateway, "graphql-transport-ws", &alice).await;
        tab.subscribe("p", PRICE_CHANGED, json!({"s": ["AAPL"]}))
            .await;
        tab.subscribe("alerts", ALERTS, json!({})).await;
        synced(&mut tab).await;

        for refused in [
            publish(&gateway, &alice, "AAPL", 1.0).await,
            alert(&gateway, &alice, "alice", "self-made").await,
        ] {
            let message = refused["errors"][0]["message"].as_str().unwrap_or_default();
            assert!(message.contains("backend role"), "{refused}");
        }
        // Over the socket no request carries roles: refused there too.
        tab.send(json!({"id": "m", "type": "subscribe", "payload": {
            "query": "mutation { publishPrice(symbol: \"AAPL\", price: 1) { symbol } }"
        }}))
        .await;
        let answer = tab.recv().await.unwrap();
        assert_eq!(answer["id"], "m");
        assert!(
            answer["payload"]["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains("backend role")
        );
        assert_eq!(tab.recv().await.unwrap()["type"], "complete");

        // Nothing was published: the first price the tab sees is the backend's.
        publish(&gateway, &backend(&gateway), "AAPL", 7.0).await;
        assert_eq!(price_of(&tab.recv().await.unwrap()), ("AAPL", 7.0));
        gateway.shutdown().await;
    }
}

#[tokio::test]
async fn alerts_reach_every_frontend_of_their_user_and_nobody_else() {
    for mode in MODES {
        let gateway = start_prices(mode).await;
        let (alice, bob, quotes) = (
            token(&gateway, "alice"),
            token(&gateway, "bob"),
            backend(&gateway),
        );
        let mut tabs = Vec::new();
        for (user, protocol) in [
            (&alice, "graphql-transport-ws"),
            (&alice, "graphql-ws"),
            (&bob, "graphql-transport-ws"),
        ] {
            let mut tab = WsClient::ready(&gateway, protocol, user).await;
            tab.subscribe("alerts", ALERTS, json!({})).await;
            synced(&mut tab).await;
            tabs.push(tab);
        }

        let sent = alert(&gateway, &quotes, "alice", "limit reached").await;
        assert_eq!(
            sent["data"]["sendAlert"]["message"], "limit reached",
            "{sent}"
        );
        for tab in &mut tabs[..2] {
            let message = tab.recv().await.unwrap();
            assert_eq!(
                message["payload"]["data"]["alerts"]["message"],
                "limit reached"
            );
        }
        alert(&gateway, &quotes, "bob", "for bob").await;
        let bobs = tabs[2].recv().await.unwrap();
        assert_eq!(bobs["payload"]["data"]["alerts"]["message"], "for bob");
        gateway.shutdown().await;
    }
}

#[tokio::test]
async fn bad_symbol_lists_are_refused_at_subscribe() {
    let gateway = start_prices(DeliveryMode::Stream).await;
    let alice = token(&gateway, "alice");
    let mut tab = WsClient::ready(&gateway, "graphql-transport-ws", &alice).await;
    let too_many: Vec<String> = (0..51).map(|i| format!("S{i}")).collect();
    for (id, symbols) in [
        ("empty", json!([])),
        ("many", json!(too_many)),
        ("odd", json!(["AAPL", "DROP TABLE"])),
    ] {
        tab.subscribe(id, PRICE_CHANGED, json!({"s": symbols}))
            .await;
        let answer = tab.recv().await.unwrap();
        assert_eq!(
            (answer["id"].as_str(), answer["type"].as_str()),
            (Some(id), Some("error")),
            "{answer}"
        );
    }
    gateway.shutdown().await;
}

#[tokio::test]
async fn an_alert_for_an_invalid_user_id_is_refused_at_publish() {
    for mode in MODES {
        let gateway = start_prices(mode).await;
        let quotes = backend(&gateway);
        // GIVEN the backend's token, WHEN it sends an alert to an empty user id, to `*`, to a
        // blank one, one with a control or format character or a too long one, THEN each
        // is refused with INVALID_AUDIENCE and nothing reaches the log.
        let long = "u".repeat(broker::auth::MAX_SUBJECT_BYTES + 1);
        for user in ["", "*", "   ", "al\nice", "al\u{200b}ice", long.as_str()] {
            let answer = alert(&gateway, &quotes, user, "never sent").await;
            assert_eq!(
                answer["errors"][0]["extensions"]["code"], "INVALID_AUDIENCE",
                "{mode:?} {user:?}: {answer}"
            );
            assert!(answer["data"].is_null(), "{answer}");
        }
        // AND a valid user id still gets its alert, in order after the refused ones.
        let mut tab =
            WsClient::ready(&gateway, "graphql-transport-ws", &token(&gateway, "bob")).await;
        tab.subscribe("alerts", ALERTS, json!({})).await;
        synced(&mut tab).await;
        let answer = alert(&gateway, &quotes, "bob", "sent").await;
        assert!(answer["errors"].is_null(), "{answer}");
        let message = tab.recv().await.unwrap();
        assert_eq!(
            message["payload"]["data"]["alerts"]["message"], "sent",
            "{mode:?}: {message}"
        );
        gateway.shutdown().await;
    }
}

#[tokio::test]
async fn a_published_price_is_the_symbols_last_price_until_the_next() {
    for mode in MODES {
        let gateway = start_prices(mode).await;
        let (alice, quotes) = (token(&gateway, "alice"), backend(&gateway));
        let last = |symbol: &'static str| {
            let (gateway, alice) = (&gateway, alice.clone());
            async move {
                let answer = http_graphql(
                    gateway,
                    &alice,
                    "query($s: String!) { price(symbol: $s) { symbol price } }",
                    json!({"s": symbol}),
                )
                .await;
                assert!(answer["errors"].is_null(), "{answer}");
                answer["data"]["price"].clone()
            }
        };
        assert_eq!(last("AAPL").await, Value::Null);
        publish(&gateway, &quotes, "aapl", 1.5).await;
        publish(&gateway, &quotes, "MSFT", 9.0).await;
        publish(&gateway, &quotes, "AAPL", 2.5).await;
        assert_eq!(last("AAPL").await, json!({"symbol": "AAPL", "price": 2.5}));
        assert_eq!(last("msft").await, json!({"symbol": "MSFT", "price": 9.0}));
        // A refused publish saves nothing.
        let refused = publish(&gateway, &token(&gateway, "bob"), "AAPL", 3.0).await;
        assert!(refused["errors"].is_array(), "{refused}");
        assert_eq!(last("AAPL").await, json!({"symbol": "AAPL", "price": 2.5}));
        gateway.shutdown().await;
    }
}
