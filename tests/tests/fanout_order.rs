//! Order per subscriber above the fan-out threshold, end to end in the local mode: many
//! subscribers of one board, each event split into fan-out pages handled by several workers
//! at once, and every subscriber gets every card once, in the order they were published.
//! On the embedded queue, and on a FIFO queue on moto polled by two pollers.

use broker::{BrokerConfig, DeliveryMode};
use broker_tests::aws::{fresh_fifo_queue, fresh_tables, moto_endpoint};
use broker_tests::local::*;
use futures_util::future::join_all;
use local_gateway::aws::AwsBackend;
use local_gateway::{Backend, LocalGateway, Options};
use serde_json::json;

/// Stream mode with a threshold well below the subscriber count and small pages: every
/// event goes out as a dozen pages.
fn fanning_out() -> Options {
    let mut options = options(DeliveryMode::Stream);
    options.broker = BrokerConfig {
        fanout_threshold: 3,
        fanout_page_size: 2,
        ..options.broker
    };
    options
}

/// `subscribers` sockets of alice watch one board; `cards` cards are added one after
/// another; each socket must receive exactly those cards, in that order.
async fn every_subscriber_gets_every_card_once_in_order(
    gateway: &LocalGateway,
    subscribers: usize,
    cards: usize,
) {
    let alice = token(gateway, "alice");
    let board = create_board(gateway, &alice, "busy").await;
    let mut tabs = Vec::new();
    for i in 0..subscribers {
        let protocol = if i % 2 == 0 {
            "graphql-transport-ws"
        } else {
            "graphql-ws"
        };
        let mut tab = WsClient::ready(gateway, protocol, &alice).await;
        tab.subscribe("cards", CARD_ADDED, json!({"b": board}))
            .await;
        tab.sync().await;
        tabs.push(tab);
    }

    let titles: Vec<String> = (0..cards).map(|n| format!("card-{n:03}")).collect();
    for title in &titles {
        let added = add_card(gateway, &alice, &board, title).await;
        assert_eq!(added["data"]["addCard"]["title"], title.as_str(), "{added}");
    }

    let received = join_all(tabs.iter_mut().map(|tab| async {
        let mut seen = Vec::new();
        for _ in 0..cards {
            let message = tab.recv().await.expect("a card");
            let kind = message["type"].as_str().unwrap_or_default();
            assert!(kind == "next" || kind == "data", "{message}");
            seen.push(
                message["payload"]["data"]["cardAdded"]["title"]
                    .as_str()
                    .unwrap_or_else(|| panic!("a card in {message}"))
                    .to_owned(),
            );
        }
        // Nothing more: a repeat would come before the answer to a later frame.
        tab.sync().await;
        seen
    }))
    .await;
    for (i, seen) in received.iter().enumerate() {
        assert_eq!(
            seen, &titles,
            "subscriber {i} got the cards out of order or twice"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn embedded_queue_above_the_threshold_keeps_each_subscribers_order() {
    let gateway = start(fanning_out()).await;
    every_subscriber_gets_every_card_once_in_order(&gateway, 24, 40).await;
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifo_queue_on_moto_above_the_threshold_keeps_each_subscribers_order() {
    let tables = fresh_tables().await;
    let (_sqs, url) = fresh_fifo_queue().await;
    let mut options = fanning_out();
    options.backend = Backend::Aws(AwsBackend {
        endpoint: Some(moto_endpoint()),
        tables: tables.names.clone(),
        app_tables: tables.app_tables(),
        fanout_queue_url: Some(url),
        create_tables: false,
    });
    let gateway = start(options).await;
    // Fewer than on the embedded queue: moto takes a few milliseconds a request.
    every_subscriber_gets_every_card_once_in_order(&gateway, 12, 24).await;
    gateway.shutdown().await;
}
