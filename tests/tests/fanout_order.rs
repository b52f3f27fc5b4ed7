//! Order per subscriber above the fan-out threshold, end to end in the local mode: many
//! subscribers of one board, each event split into fan-out pages handled by several workers
//! at once, and every subscriber gets every card once, in the order they were published.
//! On the embedded queue, and on a FIFO queue on moto polled by two pollers; and the
//! embedded queue's worker retrying a failed page before the later pages of its group.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use boards::{Board, BoardStore, MemoryBoardStore, build_schema, card_topic};
use broker::domain::{CONNECTION_LIFETIME_SECS, now_secs};
use broker::memory::{
    ChannelFanoutQueue, MemoryConnectionStore, MemoryEventLog, MemoryPageMarks,
    MemorySubscriptionStore,
};
use broker::{
    Audience, AuthConfig, Authenticator, Broker, BrokerConfig, CloseCode, ConnectionGateway,
    ConnectionId, DeliveryMode, Event, FanoutQueue, GatewayError, Ports, Protocol, Subscription,
    SubscriptionKey, UserId,
};
use broker_tests::aws::{fresh_fifo_queue, fresh_tables, moto_endpoint};
use broker_tests::local::*;
use futures_util::future::join_all;
use local_gateway::aws::AwsBackend;
use local_gateway::{Backend, LocalGateway, Options};
use serde_json::{Value, json};

/// Stream mode with a threshold well below the subscriber count and small pages: every
/// event goes out as a dozen pages.
fn fanning_out() -> Options {
    let mut options = options(DeliveryMode::Stream);
    // One user's many sockets and quick cards: no per-user limit.
    options.broker = BrokerConfig {
        fanout_threshold: 3,
        fanout_page_size: 2,
        ..options.broker.without_user_limits()
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

/// A gateway whose first posts to some connections fail as a gateway that is down would;
/// it records the rest in order.
#[derive(Default)]
struct FlakyGateway {
    failures_left: Mutex<HashMap<ConnectionId, usize>>,
    frames: Mutex<HashMap<ConnectionId, Vec<Value>>>,
}

impl FlakyGateway {
    fn titles(&self, id: &ConnectionId) -> Vec<String> {
        let frames = self.frames.lock().unwrap();
        frames
            .get(id)
            .into_iter()
            .flatten()
            .map(|f| {
                f["payload"]["data"]["cardAdded"]["title"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    }
}

#[async_trait]
impl ConnectionGateway for FlakyGateway {
    async fn post(&self, id: &ConnectionId, frame: &str) -> Result<(), GatewayError> {
        if let Some(left) = self.failures_left.lock().unwrap().get_mut(id)
            && *left > 0
        {
            *left -= 1;
            return Err(GatewayError::backend("down for now"));
        }
        let frame = serde_json::from_str(frame).unwrap();
        self.frames
            .lock()
            .unwrap()
            .entry(id.clone())
            .or_default()
            .push(frame);
        Ok(())
    }

    async fn close(&self, _: &ConnectionId, _: CloseCode, _: &str) -> Result<(), GatewayError> {
        Ok(())
    }
}

/// Alice's board watched on connections `x` (whose first `x_failures` posts fail) and `y`,
/// on an ordered embedded queue.
struct Watched {
    broker: Broker,
    gateway: Arc<FlakyGateway>,
    queue: Arc<ChannelFanoutQueue>,
    pages: tokio::sync::mpsc::UnboundedReceiver<broker::FanoutPage>,
    x: ConnectionId,
    y: ConnectionId,
}

async fn watched_board(x_failures: usize, config: BrokerConfig) -> Watched {
    let gateway = Arc::new(FlakyGateway::default());
    let x = ConnectionId::new("x");
    let y = ConnectionId::new("y");
    gateway
        .failures_left
        .lock()
        .unwrap()
        .insert(x.clone(), x_failures);
    let (queue, pages) = ChannelFanoutQueue::ordered();
    let queue = Arc::new(queue);
    assert!(queue.ordered());
    let subscriptions = MemorySubscriptionStore::default();
    let ports = Ports {
        connections: Arc::new(MemoryConnectionStore::default()),
        replay_gate: Arc::new(subscriptions.replay_gate()),
        subscriptions: Arc::new(subscriptions),
        page_marks: Arc::new(MemoryPageMarks::default()),
        quotas: Arc::new(broker::memory::MemoryQuotas::default()),
        events: Arc::new(MemoryEventLog::default()),
        gateway: gateway.clone(),
        fanout: Some(queue.clone()),
    };
    let boards = Arc::new(MemoryBoardStore::new(&Default::default()));
    boards
        .create_board(&Board {
            id: "b1".into(),
            title: "Busy".into(),
            owner: "alice".into(),
        })
        .await
        .unwrap();
    let auth = Authenticator::new(AuthConfig {
        secret: "fanout-order-secret-0123456789-0123456789".into(),
        issuer: None,
        audience: None,
        leeway_secs: broker::auth::DEFAULT_LEEWAY_SECS,
    });
    let broker = Broker::new(build_schema(boards), ports, auth, config);
    for connection in [&x, &y] {
        let subscription = Subscription {
            key: SubscriptionKey {
                connection_id: connection.clone(),
                operation_id: "cards".into(),
            },
            topic: card_topic("b1"),
            protocol: Protocol::GraphqlTransportWs,
            principal: UserId::new("alice"),
            document: CARD_ADDED.into(),
            operation_name: None,
            variables: json!({"b": "b1"}),
            expires_at: now_secs() + CONNECTION_LIFETIME_SECS,
            starts_at_ms: 0,
            replaying_until_ms: 0,
            public: false,
        };
        broker
            .ports()
            .subscriptions
            .insert(&subscription)
            .await
            .unwrap();
    }
    Watched {
        broker,
        gateway,
        queue,
        pages,
        x,
        y,
    }
}

#[tokio::test]
async fn the_embedded_queue_retries_a_failed_page_before_the_later_pages_of_its_group() {
    // GIVEN alice's board watched on connection `x`, whose first three posts fail (one
    // page's post and both its retries), and on `y`; an ordered embedded queue and its worker
    let Watched {
        broker,
        gateway,
        queue,
        pages,
        x,
        y,
    } = watched_board(3, BrokerConfig::default()).await;
    let worker = tokio::spawn(local_gateway::fanout::work_embedded(broker.clone(), pages));

    // WHEN five events' pages are enqueued at once, each event a page per subscriber
    let titles: Vec<String> = (0..5).map(|n| format!("card-{n}")).collect();
    let mut all_pages = Vec::new();
    for title in &titles {
        let event = Event::new(
            card_topic("b1"),
            json!({"id": ulid::Ulid::new().to_string(), "boardId": "b1", "title": title}),
            Audience::User(UserId::new("alice")),
        );
        broker.ports().events.append(&event).await.unwrap();
        let keys = [&x, &y].map(|c| SubscriptionKey {
            connection_id: c.clone(),
            operation_id: "cards".into(),
        });
        all_pages.extend(broker::fanout::pages(&event.topic, &event.id, keys, 32, 1));
    }
    queue.enqueue(&all_pages).await.unwrap();

    // THEN both connections get the five cards in order, `x` too: its first page was
    // retried before any later page of its group was delivered
    let both = eventually(async || {
        gateway.titles(&x).len() >= titles.len() && gateway.titles(&y).len() >= titles.len()
    })
    .await;
    worker.abort();
    assert!(
        both,
        "x: {:?}, y: {:?}",
        gateway.titles(&x),
        gateway.titles(&y)
    );
    assert_eq!(gateway.titles(&x), titles);
    assert_eq!(gateway.titles(&y), titles);
}

#[tokio::test]
async fn a_page_the_embedded_queue_gives_up_on_holds_its_topic_no_longer() {
    // GIVEN an event in pages on the ordered embedded queue, one of them to `x`, whose
    // posts always fail
    let config = BrokerConfig {
        fanout_threshold: 0,
        fanout_page_size: 1,
        ..BrokerConfig::default()
    };
    let w = watched_board(usize::MAX, config).await;
    let worker = tokio::spawn(local_gateway::fanout::work_embedded(
        w.broker.clone(),
        w.pages,
    ));
    let event = Event::new(
        card_topic("b1"),
        json!({"id": "c1", "boardId": "b1", "title": "given up"}),
        Audience::User(UserId::new("alice")),
    );
    w.broker.ports().events.append(&event).await.unwrap();
    let report = w.broker.deliver_event(event).await.unwrap();
    assert_eq!(report.pages_enqueued, 2, "{report:?}");
    // WHEN the worker has tried `x`'s page as often as the queue allows
    // THEN its mark is gone with the delivered one: the topic's next events may go inline
    let topic = card_topic("b1");
    let page_marks = w.broker.ports().page_marks.clone();
    let freed = eventually(async || !page_marks.pages_in_flight(&topic).await.unwrap()).await;
    worker.abort();
    assert!(freed, "a page given up on still holds the topic");
    assert_eq!(w.gateway.titles(&w.y), ["given up"]);
    assert!(w.gateway.titles(&w.x).is_empty());
}
