//! The per-user limits (`broker::limits`) and the local gateway's limit of uninitialised
//! sockets per client address, over real sockets and HTTP on the local mode: each is
//! refused with its exact close code, HTTP status or `extensions.code`, and another user
//! (or another address) is served all the while.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use broker::resume::RESUME_FROM;
use broker::{DeliveryMode, MIN_RESUME_SETTLE_MS, RATE_LIMITED, RateLimit, Topic};
use broker_tests::local::*;
use futures_util::StreamExt;
use local_gateway::{LocalGateway, Options};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const TRANSPORT: &str = "graphql-transport-ws";

/// A window no test run crosses the boundary of (they are aligned to the epoch).
const LONG: Duration = Duration::from_secs(10 * 365 * 24 * 60 * 60);

/// The boards app with no per-user limit but those `set` sets.
fn limited(set: impl FnOnce(&mut Options)) -> Options {
    let mut options = options(DeliveryMode::Stream);
    options.broker = options.broker.without_user_limits();
    options.broker.resume_settle = Duration::from_millis(MIN_RESUME_SETTLE_MS);
    set(&mut options);
    options
}

/// Connects and sends `connection_init`: the client once acknowledged, or the close code.
async fn try_ready(gateway: &LocalGateway, token: &str) -> Result<WsClient, u16> {
    let mut client = WsClient::connect(gateway, Some(TRANSPORT), None)
        .await
        .expect("upgrade accepted");
    client
        .send(json!({"type": "connection_init", "payload": {"token": token}}))
        .await;
    let frame = tokio::time::timeout(PATIENCE, client.socket_mut().next())
        .await
        .expect("an answer in time");
    match frame {
        Some(Ok(Message::Text(text))) => {
            let ack: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(ack["type"], "connection_ack", "{ack}");
            Ok(client)
        }
        Some(Ok(Message::Close(Some(close)))) => Err(u16::from(close.code)),
        other => panic!("neither an ack nor a close: {other:?}"),
    }
}

/// The `extensions.code` of the first error of an `error` frame.
fn error_code(frame: &Value) -> &str {
    assert_eq!(frame["type"], "error", "{frame}");
    frame["payload"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or_default()
}

/// `user` opens a socket, subscribes to a new board's cards, adds a card over HTTP and
/// receives it: whatever another user did, this one is served.
async fn is_served(gateway: &LocalGateway, user: &str) {
    let token = token(gateway, user);
    let board = create_board(gateway, &token, &format!("{user}'s board")).await;
    let mut tab = WsClient::ready(gateway, TRANSPORT, &token).await;
    tab.subscribe("cards", CARD_ADDED, json!({"b": board}))
        .await;
    tab.sync().await;
    let added = add_card(gateway, &token, &board, "served").await;
    assert!(added["errors"].is_null(), "{added}");
    let next = tab.recv().await.unwrap();
    assert_eq!(next["type"], "next", "{next}");
    assert_eq!(next["payload"]["data"]["cardAdded"]["title"], "served");
    tab.close().await;
}

#[tokio::test]
async fn a_users_sockets_over_the_limit_are_refused_with_4429_or_429_and_others_connect() {
    let gateway = start(limited(|o| o.broker.max_sockets_per_user = 2)).await;
    let alice = token(&gateway, "alice");
    let first = WsClient::ready(&gateway, TRANSPORT, &alice).await;
    let _second = WsClient::ready(&gateway, TRANSPORT, &alice).await;

    // A third gets its user at `connection_init`: closed with 4429.
    assert_eq!(try_ready(&gateway, &alice).await.err(), Some(4429));
    // A third with its token at `$connect`: the upgrade is refused with 429.
    let refused = WsClient::connect(&gateway, Some(TRANSPORT), Some(&alice)).await;
    assert_eq!(refused.err().map(|r| r.status), Some(429));

    // Bob is not counted with Alice.
    is_served(&gateway, "bob").await;

    // A closed socket gives its slot back.
    first.close().await;
    let mut third = None;
    assert!(
        eventually(async || {
            third = try_ready(&gateway, &alice).await.ok();
            third.is_some()
        })
        .await,
        "the closed socket's slot was not given back"
    );
    gateway.shutdown().await;
}

#[tokio::test]
async fn subscriptions_over_the_users_limit_across_connections_are_rate_limited() {
    let gateway = start(limited(|o| o.broker.max_subscriptions_per_user = 3)).await;
    let alice = token(&gateway, "alice");
    let board = create_board(&gateway, &alice, "Alice's board").await;
    let mut tab1 = WsClient::ready(&gateway, TRANSPORT, &alice).await;
    let mut tab2 = WsClient::ready(&gateway, TRANSPORT, &alice).await;
    tab1.subscribe("s1", CARD_ADDED, json!({"b": board})).await;
    tab1.subscribe("s2", CARD_ADDED, json!({"b": board})).await;
    tab1.sync().await;
    tab2.subscribe("s3", CARD_ADDED, json!({"b": board})).await;
    tab2.sync().await;

    // The fourth, on either connection (each far below its own limit), is refused.
    tab2.subscribe("s4", CARD_ADDED, json!({"b": board})).await;
    let refused = tab2.recv().await.unwrap();
    assert_eq!(refused["id"], "s4", "{refused}");
    assert_eq!(error_code(&refused), RATE_LIMITED);

    // Bob subscribes and receives as ever.
    is_served(&gateway, "bob").await;

    // One event reaches Alice's three subscriptions, not a fourth.
    add_card(&gateway, &alice, &board, "one").await;
    let mut ids = Vec::new();
    for _ in 0..2 {
        ids.push(tab1.recv().await.unwrap()["id"].clone());
    }
    ids.push(tab2.recv().await.unwrap()["id"].clone());
    ids.sort_by_key(|id| id.to_string());
    assert_eq!(ids, [json!("s1"), json!("s2"), json!("s3")]);

    // A completed subscription gives its slot back.
    tab1.send(json!({"id": "s1", "type": "complete"})).await;
    tab1.sync().await;
    tab2.subscribe("s5", CARD_ADDED, json!({"b": board})).await;
    tab2.sync().await;
    add_card(&gateway, &alice, &board, "two").await;
    let mut ids = vec![
        tab2.recv().await.unwrap()["id"].clone(),
        tab2.recv().await.unwrap()["id"].clone(),
    ];
    ids.sort_by_key(|id| id.to_string());
    assert_eq!(ids, [json!("s3"), json!("s5")]);
    gateway.shutdown().await;
}

#[tokio::test]
async fn publishes_over_the_callers_rate_are_rate_limited_and_publish_nothing() {
    let gateway = start(limited(|o| o.broker.publish_rate = RateLimit::new(3, LONG))).await;
    let alice = token(&gateway, "alice");
    // Creating the board publishes `boardCreated`: one of three.
    let board = create_board(&gateway, &alice, "Alice's board").await;
    let mut tab = WsClient::ready(&gateway, TRANSPORT, &alice).await;
    tab.subscribe("cards", CARD_ADDED, json!({"b": board}))
        .await;
    tab.sync().await;
    for title in ["one", "two"] {
        let added = add_card(&gateway, &alice, &board, title).await;
        assert!(added["errors"].is_null(), "{added}");
    }
    let over = add_card(&gateway, &alice, &board, "three").await;
    assert_eq!(
        over["errors"][0]["extensions"]["code"], RATE_LIMITED,
        "{over}"
    );

    // Bob publishes: his card reaches his subscriber.
    is_served(&gateway, "bob").await;

    // Nothing of the refused mutation was published: the log holds two cards, and the
    // subscriber received those two.
    let topic = Topic::new(format!("board/{board}/cardAdded"));
    let logged = gateway
        .broker()
        .ports()
        .events
        .after(&topic, "", 100)
        .await
        .unwrap();
    let titles: Vec<_> = logged
        .iter()
        .map(|e| e.payload["title"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(titles, ["one", "two"]);
    for title in ["one", "two"] {
        let next = tab.recv().await.unwrap();
        assert_eq!(
            next["payload"]["data"]["cardAdded"]["title"], title,
            "{next}"
        );
    }
    gateway.shutdown().await;
}

#[tokio::test]
async fn resumes_over_the_users_rate_are_rate_limited_and_live_subscribes_still_work() {
    let gateway = start(limited(|o| o.broker.replay_rate = RateLimit::new(2, LONG))).await;
    let alice = token(&gateway, "alice");
    let board = create_board(&gateway, &alice, "Alice's board").await;
    let before = ulid::Ulid::new().to_string();
    add_card(&gateway, &alice, &board, "missed").await;
    let resume = |id: &str, cursor: &str| {
        json!({"id": id, "type": "subscribe", "payload": {
            "query": CARD_ADDED,
            "variables": {"b": board},
            "extensions": {RESUME_FROM: cursor},
        }})
    };

    let mut tab = WsClient::ready(&gateway, TRANSPORT, &alice).await;
    for id in ["r1", "r2"] {
        tab.send(resume(id, &before)).await;
        let replayed = tab.recv().await.unwrap();
        assert_eq!(replayed["id"], id, "{replayed}");
        assert_eq!(replayed["payload"]["data"]["cardAdded"]["title"], "missed");
    }
    tab.send(resume("r3", &before)).await;
    let refused = tab.recv().await.unwrap();
    assert_eq!(refused["id"], "r3", "{refused}");
    assert_eq!(error_code(&refused), RATE_LIMITED);

    // A live subscribe of Alice's is no replay: stored, and served.
    tab.subscribe("live", CARD_ADDED, json!({"b": board})).await;
    tab.sync().await;

    // Bob resumes: he has replays of his own.
    let bob = token(&gateway, "bob");
    let bobs_board = create_board(&gateway, &bob, "Bob's board").await;
    let bobs_before = ulid::Ulid::new().to_string();
    add_card(&gateway, &bob, &bobs_board, "bob missed").await;
    let mut bobs_tab = WsClient::ready(&gateway, TRANSPORT, &bob).await;
    bobs_tab
        .send(json!({"id": "r", "type": "subscribe", "payload": {
            "query": CARD_ADDED,
            "variables": {"b": bobs_board},
            "extensions": {RESUME_FROM: bobs_before},
        }}))
        .await;
    let replayed = bobs_tab.recv().await.unwrap();
    assert_eq!(
        replayed["payload"]["data"]["cardAdded"]["title"], "bob missed",
        "{replayed}"
    );

    add_card(&gateway, &alice, &board, "live").await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let next = tab.recv().await.unwrap();
        assert_eq!(
            next["payload"]["data"]["cardAdded"]["title"], "live",
            "{next}"
        );
        ids.push(next["id"].as_str().unwrap().to_owned());
    }
    ids.sort();
    assert_eq!(ids, ["live", "r1", "r2"]);
    gateway.shutdown().await;
}

#[tokio::test]
async fn uninitialised_sockets_over_the_limit_of_one_address_are_refused_with_429() {
    let gateway = start(limited(|o| {
        o.limits.max_uninitialised_per_address = 3;
        o.limits.max_connections = 8;
    }))
    .await;
    let here = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
    let elsewhere = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    let mut anonymous = Vec::new();
    for _ in 0..3 {
        let socket = WsClient::connect_from(&gateway, here, Some(TRANSPORT)).await;
        anonymous.push(socket.expect("below the limit"));
    }
    let refused = WsClient::connect_from(&gateway, here, Some(TRANSPORT)).await;
    assert_eq!(refused.err().map(|r| r.status), Some(429));

    // Another address is not counted with this one: it connects, initialises, subscribes.
    let bob = token(&gateway, "bob");
    let board = create_board(&gateway, &bob, "Bob's board").await;
    let mut tab = WsClient::connect_from(&gateway, elsewhere, Some(TRANSPORT))
        .await
        .expect("another address connects");
    tab.init(&bob).await;
    tab.subscribe("cards", CARD_ADDED, json!({"b": board}))
        .await;
    tab.sync().await;
    add_card(&gateway, &bob, &board, "elsewhere").await;
    let next = tab.recv().await.unwrap();
    assert_eq!(next["payload"]["data"]["cardAdded"]["title"], "elsewhere");

    // Once one of them is initialised it no longer counts: the address connects again.
    let alice = token(&gateway, "alice");
    anonymous[0].init(&alice).await;
    anonymous[0].sync().await;
    let again = WsClient::connect_from(&gateway, here, Some(TRANSPORT)).await;
    assert!(again.is_ok(), "an initialised socket still counted");
    gateway.shutdown().await;
}

#[tokio::test]
async fn a_full_gauge_whose_releases_were_lost_is_recounted_from_the_stores() {
    let gateway = start(limited(|o| o.broker.max_sockets_per_user = 2)).await;
    let alice = token(&gateway, "alice");
    let _open = WsClient::ready(&gateway, TRANSPORT, &alice).await;
    // Two sockets counted whose releases never came (one of them is open).
    let quotas = &gateway.broker().ports().quotas;
    let far = broker::domain::now_secs() + 3600;
    quotas.set("sockets/alice", 2, far).await.unwrap();

    // Full by the counter, but the stores hold one socket: recounted, and accepted.
    let second = try_ready(&gateway, &alice).await;
    assert!(
        second.is_ok(),
        "not recounted: closed with {:?}",
        second.err()
    );
    assert_eq!(quotas.get("sockets/alice").await.unwrap(), 2);
    // Now truly full: refused.
    assert_eq!(try_ready(&gateway, &alice).await.err(), Some(4429));
    gateway.shutdown().await;
}
