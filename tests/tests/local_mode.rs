//! End to end through the local mode: real sockets, real HTTP, the Lambda handlers, the
//! Management API client, the stream publisher. Every delivery test runs in both modes.

use broker::DeliveryMode;
use broker_tests::local::*;
use serde_json::{Value, json};

const MODES: [DeliveryMode; 2] = [DeliveryMode::Stream, DeliveryMode::Direct];

#[tokio::test]
async fn all_of_a_users_connections_receive_their_card_and_no_other_user_does() {
    for mode in MODES {
        let gateway = start(options(mode)).await;
        users_are_isolated(&gateway).await;
        gateway.shutdown().await;
    }
}

#[tokio::test]
async fn the_document_decides_fields_and_aliases() {
    for mode in MODES {
        let gateway = start(options(mode)).await;
        let alice = token(&gateway, "alice");
        let board = create_board(&gateway, &alice, "b").await;
        let mut tab = WsClient::ready(&gateway, "graphql-transport-ws", &alice).await;
        tab.subscribe(
            "s",
            "subscription Watch($b: ID!) { card: cardAdded(boardId: $b) { name: title } }",
            json!({"b": board}),
        )
        .await;
        tab.sync().await;
        add_card(&gateway, &alice, &board, "Aliased").await;
        let message = tab.recv().await.unwrap();
        assert_eq!(
            message["payload"]["data"],
            json!({"card": {"name": "Aliased"}}),
            "{mode:?}"
        );
        gateway.shutdown().await;
    }
}

#[tokio::test]
async fn another_users_board_can_be_neither_watched_nor_written() {
    let gateway = start(options(DeliveryMode::Stream)).await;
    let (alice, bob) = (token(&gateway, "alice"), token(&gateway, "bob"));
    let board = create_board(&gateway, &alice, "private").await;

    for protocol in ["graphql-transport-ws", "graphql-ws"] {
        let mut tab = WsClient::ready(&gateway, protocol, &bob).await;
        tab.subscribe("spy", CARD_ADDED, json!({"b": board})).await;
        let error = tab.recv().await.unwrap();
        assert_eq!(error["type"], "error", "{protocol}: {error}");
        assert_eq!(error["id"], "spy");
        assert!(error.to_string().contains("not found"), "{error}");
    }

    let write = add_card(&gateway, &bob, &board, "graffiti").await;
    assert!(write["data"].is_null(), "{write}");
    assert!(
        write["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("not found")
    );

    // Nothing was stored for Bob's attempt.
    let topic = boards::card_topic(&board);
    assert!(
        gateway
            .broker()
            .ports()
            .subscriptions
            .by_topic(&topic)
            .await
            .unwrap()
            .is_empty()
    );
    gateway.shutdown().await;
}

#[tokio::test]
async fn a_boards_cards_are_listed_in_order_to_its_owner_only() {
    let gateway = start(options(DeliveryMode::Stream)).await;
    let (alice, bob) = (token(&gateway, "alice"), token(&gateway, "bob"));
    let board = create_board(&gateway, &alice, "listed").await;
    let other = create_board(&gateway, &alice, "other").await;
    for title in ["first", "second", "third"] {
        add_card(&gateway, &alice, &board, title).await;
    }
    add_card(&gateway, &alice, &other, "elsewhere").await;
    let cards = "query($b: ID!) { cards(boardId: $b) { boardId title } }";

    let listed = http_graphql(&gateway, &alice, cards, json!({"b": board})).await;
    let titles: Vec<&str> = listed["data"]["cards"]
        .as_array()
        .unwrap_or_else(|| panic!("{listed}"))
        .iter()
        .map(|card| {
            assert_eq!(card["boardId"], board.as_str());
            card["title"].as_str().unwrap()
        })
        .collect();
    assert_eq!(titles, ["first", "second", "third"]);

    let spied = http_graphql(&gateway, &bob, cards, json!({"b": board})).await;
    assert!(spied["data"].is_null(), "{spied}");
    assert!(spied.to_string().contains("not found"), "{spied}");
    gateway.shutdown().await;
}

#[tokio::test]
async fn complete_stops_delivery() {
    for mode in MODES {
        let gateway = start(options(mode)).await;
        let alice = token(&gateway, "alice");
        let board = create_board(&gateway, &alice, "b").await;
        for protocol in ["graphql-transport-ws", "graphql-ws"] {
            let mut tab = WsClient::ready(&gateway, protocol, &alice).await;
            tab.subscribe("cards", CARD_ADDED, json!({"b": board}))
                .await;
            tab.subscribe("boards", BOARD_CREATED, json!({})).await;
            let stop = if protocol == "graphql-ws" {
                "stop"
            } else {
                "complete"
            };
            tab.send(json!({"id": "cards", "type": stop})).await;
            if protocol == "graphql-ws" {
                // A legacy `stop` is answered by `complete`.
                assert_eq!(
                    tab.recv().await.unwrap(),
                    json!({"id": "cards", "type": "complete"})
                );
            }
            tab.sync().await;

            add_card(&gateway, &alice, &board, "unseen").await;
            let sentinel = create_board(&gateway, &alice, "sentinel").await;
            let message = tab.recv().await.unwrap();
            assert_eq!(message["id"], "boards", "{mode:?} {protocol}: {message}");
            assert_eq!(
                message["payload"]["data"]["boardCreated"]["id"],
                sentinel.as_str()
            );
            tab.close().await;
        }
        gateway.shutdown().await;
    }
}

#[tokio::test]
async fn a_dropped_socket_is_cleaned_up() {
    let gateway = start(options(DeliveryMode::Stream)).await;
    let alice = token(&gateway, "alice");
    let board = create_board(&gateway, &alice, "b").await;
    let mut tab = WsClient::ready(&gateway, "graphql-transport-ws", &alice).await;
    tab.subscribe("cards", CARD_ADDED, json!({"b": board}))
        .await;
    tab.sync().await;
    let topic = boards::card_topic(&board);
    let ports = gateway.broker().ports().clone();
    assert_eq!(ports.subscriptions.by_topic(&topic).await.unwrap().len(), 1);
    assert_eq!(
        ports
            .connections
            .by_user(&"alice".into())
            .await
            .unwrap()
            .len(),
        1
    );

    tab.drop_abruptly().await;

    assert!(
        eventually(async || {
            ports
                .subscriptions
                .by_topic(&topic)
                .await
                .unwrap()
                .is_empty()
                && ports
                    .connections
                    .by_user(&"alice".into())
                    .await
                    .unwrap()
                    .is_empty()
        })
        .await,
        "the connection and its subscription were not removed"
    );
    assert_eq!(gateway.open_sockets(), 0);
    // Publishing to the topic now reaches no one and fails nothing.
    let added = add_card(&gateway, &alice, &board, "after").await;
    assert!(added["errors"].is_null(), "{added}");
    gateway.shutdown().await;
}

#[tokio::test]
async fn a_backend_can_push_to_and_disconnect_all_of_a_users_frontends() {
    let gateway = start(options(DeliveryMode::Stream)).await;
    let (alice, bob) = (token(&gateway, "alice"), token(&gateway, "bob"));
    let mut a1 = WsClient::ready(&gateway, "graphql-transport-ws", &alice).await;
    let mut a2 = WsClient::ready(&gateway, "graphql-ws", &alice).await;
    let mut b1 = WsClient::ready(&gateway, "graphql-transport-ws", &bob).await;
    let broker = gateway.broker();

    let frame = json!({"type": "ping", "payload": {"notice": "maintenance"}}).to_string();
    assert_eq!(
        broker.send_to_user(&"alice".into(), &frame).await.unwrap(),
        2
    );
    for tab in [&mut a1, &mut a2] {
        assert_eq!(
            tab.recv().await.unwrap()["payload"]["notice"],
            "maintenance"
        );
    }

    let closed = broker
        .disconnect_user(&"alice".into(), broker::CloseCode::Forbidden)
        .await
        .unwrap();
    assert_eq!(closed, 2);
    assert_eq!(a1.closed().await.unwrap(), 4403);
    assert_eq!(a2.closed().await.unwrap(), 4403);
    // Bob is untouched.
    b1.sync().await;
    gateway.shutdown().await;
}

#[tokio::test]
async fn deleting_a_board_completes_every_subscription_to_its_cards() {
    for mode in MODES {
        let gateway = start(options(mode)).await;
        let (alice, bob) = (token(&gateway, "alice"), token(&gateway, "bob"));
        let board = create_board(&gateway, &alice, "Doomed").await;
        let mut tabs = Vec::new();
        for protocol in ["graphql-transport-ws", "graphql-ws"] {
            let mut tab = WsClient::ready(&gateway, protocol, &alice).await;
            tab.subscribe("cards", CARD_ADDED, json!({"b": board}))
                .await;
            tab.subscribe("boards", BOARD_CREATED, json!({})).await;
            tab.sync().await;
            tabs.push(tab);
        }
        let delete = "mutation($b: ID!) { deleteBoard(boardId: $b) }";

        // Only the owner may delete it.
        let refused = http_graphql(&gateway, &bob, delete, json!({"b": board})).await;
        assert!(
            refused["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains("not found")
        );

        let deleted = http_graphql(&gateway, &alice, delete, json!({"b": board})).await;
        assert_eq!(deleted["data"]["deleteBoard"], true, "{deleted}");
        for tab in &mut tabs {
            assert_eq!(
                tab.recv().await.unwrap(),
                json!({"type": "complete", "id": "cards"}),
                "{mode:?}"
            );
        }
        // The board is gone, and the tabs' other subscriptions still deliver.
        let added = add_card(&gateway, &alice, &board, "too late").await;
        assert!(added["errors"].is_array(), "{added}");
        let next = create_board(&gateway, &alice, "Next").await;
        for tab in &mut tabs {
            let message = tab.recv().await.unwrap();
            assert_eq!(message["id"], "boards", "{message}");
            assert_eq!(
                message["payload"]["data"]["boardCreated"]["id"],
                next.as_str()
            );
        }
        gateway.shutdown().await;
    }
}

#[tokio::test]
async fn a_backend_can_end_one_users_subscriptions() {
    for mode in MODES {
        let gateway = start(options(mode)).await;
        let (alice, bob) = (token(&gateway, "alice"), token(&gateway, "bob"));
        let mut tabs = Vec::new();
        for (user, protocol) in [
            (&alice, "graphql-transport-ws"),
            (&alice, "graphql-ws"),
            (&bob, "graphql-transport-ws"),
        ] {
            let mut tab = WsClient::ready(&gateway, protocol, user).await;
            tab.subscribe("boards", BOARD_CREATED, json!({})).await;
            tab.sync().await;
            tabs.push(tab);
        }

        let ended = gateway
            .broker()
            .end_subscriptions(broker::SubscriptionsOf::User("alice".into()))
            .await
            .unwrap();
        assert_eq!(ended, 2);
        for tab in &mut tabs[..2] {
            assert_eq!(
                tab.recv().await.unwrap(),
                json!({"type": "complete", "id": "boards"})
            );
        }
        // Bob still listens, and Alice's sockets stay open for new subscriptions.
        let bobs = create_board(&gateway, &bob, "Bob's").await;
        let message = tabs[2].recv().await.unwrap();
        assert_eq!(
            message["payload"]["data"]["boardCreated"]["id"],
            bobs.as_str()
        );
        tabs[0].subscribe("again", BOARD_CREATED, json!({})).await;
        tabs[0].sync().await;
        create_board(&gateway, &alice, "Mine").await;
        assert_eq!(tabs[0].recv().await.unwrap()["id"], "again");
        gateway.shutdown().await;
    }
}

#[tokio::test]
async fn queries_and_mutations_work_over_the_socket() {
    let gateway = start(options(DeliveryMode::Stream)).await;
    let alice = token(&gateway, "alice");
    for (protocol, op, next) in [
        ("graphql-transport-ws", "subscribe", "next"),
        ("graphql-ws", "start", "data"),
    ] {
        let mut tab = WsClient::ready(&gateway, protocol, &alice).await;
        tab.send(json!({"id": "m", "type": op, "payload": {"query": "mutation { createBoard(title: \"ws\") { title } }"}}))
            .await;
        let result = tab.recv().await.unwrap();
        assert_eq!(result["type"], next);
        assert_eq!(result["payload"]["data"]["createBoard"]["title"], "ws");
        assert_eq!(
            tab.recv().await.unwrap(),
            json!({"id": "m", "type": "complete"})
        );

        tab.send(json!({"id": "q", "type": op, "payload": {"query": "{ boards { nope } }"}}))
            .await;
        let result = tab.recv().await.unwrap();
        assert!(
            result["payload"]["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains("nope"),
            "{result}"
        );
        assert_eq!(tab.recv().await.unwrap()["type"], "complete");
    }
    gateway.shutdown().await;
}

#[tokio::test]
async fn http_requires_a_valid_bearer_token_and_get_refuses_mutations() {
    let gateway = start(options(DeliveryMode::Stream)).await;
    let client = reqwest::Client::new();
    let query = json!({"query": "{ boards { id } }"});

    let missing = client
        .post(gateway.graphql_url())
        .json(&query)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 401);
    let bad = client
        .post(gateway.graphql_url())
        .bearer_auth("not.a.jwt")
        .json(&query)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 401);
    let body: Value = bad.json().await.unwrap();
    assert!(body["errors"][0]["message"].is_string());

    let alice = token(&gateway, "alice");
    let get = client
        .get(format!("{}?query={{boards{{id}}}}", gateway.graphql_url()))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 200);
    assert_eq!(
        get.json::<Value>().await.unwrap(),
        json!({"data": {"boards": []}})
    );

    let mutation = client
        .get(format!(
            "{}?query=mutation{{createBoard(title:\"x\"){{id}}}}",
            gateway.graphql_url()
        ))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(mutation.status(), 405);

    let garbage = client
        .post(gateway.graphql_url())
        .bearer_auth(&alice)
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(garbage.status(), 400);
    gateway.shutdown().await;
}
