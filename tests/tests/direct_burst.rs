//! A burst of direct publishes: many mutations at once, each delivering inside its resolver.
//!
//! - The deliveries running at once share the broker's bound on posts in flight
//!   (`MAX_POSTS_IN_FLIGHT`): each delivery still posts `POST_CONCURRENCY` frames at a time,
//!   but together they never exceed the bound, where before they multiplied (a thousand
//!   deliveries of 64 posts, 64,000 connections to the Management API at once).
//! - Over real sockets: a client that reads is not closed for being behind a burst its own
//!   user caused. Its socket's outbox is bounded; the posts wait for room while the client
//!   drains it, where before the first frame finding it full closed the socket with 1013.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use boards::{Card, MemoryBoardStore, build_schema, card_topic};
use broker::memory::{
    MemoryConnectionStore, MemoryEventLog, MemoryPageMarks, MemoryQuotas, MemorySubscriptionStore,
};
use broker::{
    Audience, Broker, BrokerConfig, ConnectionGateway, ConnectionId, DeliveryMode, Event,
    GatewayError, Ports, Protocol, Subscription, SubscriptionKey, UserId,
};
use broker_tests::fixtures::fixture_authenticator;
use broker_tests::local::{CARD_ADDED, WsClient, add_card, create_board, options, start, token};
use serde_json::json;

/// A gateway whose posts take a while, counting how many are in flight at once.
#[derive(Default)]
struct CountingGateway {
    in_flight: AtomicUsize,
    most: AtomicUsize,
    posted: AtomicUsize,
}

#[async_trait]
impl ConnectionGateway for CountingGateway {
    async fn post(&self, _id: &ConnectionId, _frame: &str) -> Result<(), GatewayError> {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        // The clock is paused: every task runs until it waits before this sleep ends, so
        // every post that can start does so while this one is in flight.
        tokio::time::sleep(Duration::from_millis(10)).await;
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.posted.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    async fn close(
        &self,
        _id: &ConnectionId,
        _code: broker::CloseCode,
        _reason: &str,
    ) -> Result<(), GatewayError> {
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn deliveries_running_at_once_share_the_bound_on_posts_in_flight() {
    const DELIVERIES: usize = 40;
    const SUBSCRIBERS: usize = 100;
    let gateway = Arc::new(CountingGateway::default());
    let subscriptions = MemorySubscriptionStore::default();
    let events = Arc::new(MemoryEventLog::default());
    let ports = Ports {
        connections: Arc::new(MemoryConnectionStore::default()),
        replay_gate: Arc::new(subscriptions.replay_gate()),
        subscriptions: Arc::new(subscriptions),
        page_marks: Arc::new(MemoryPageMarks::default()),
        quotas: Arc::new(MemoryQuotas::default()),
        events: events.clone(),
        gateway: gateway.clone(),
        fanout: None,
    };
    let config = BrokerConfig::default();
    let bound = config.max_posts_in_flight;
    // Every delivery posts as many frames at once as it may, and together they could post
    // more than the bound.
    assert!(DELIVERIES * config.post_concurrency.min(SUBSCRIBERS) > bound);
    let broker = Broker::new(
        build_schema(Arc::new(MemoryBoardStore::new(&events.tables()))),
        ports,
        fixture_authenticator(),
        config,
    );
    let board = "burst-board";
    let subscribers: Vec<Subscription> = (0..SUBSCRIBERS)
        .map(|n| Subscription {
            key: SubscriptionKey {
                connection_id: ConnectionId::new(format!("tab-{n}")),
                operation_id: "cards".into(),
            },
            topic: card_topic(board),
            protocol: Protocol::GraphqlTransportWs,
            principal: UserId::new("alice"),
            document: CARD_ADDED.into(),
            operation_name: None,
            variables: json!({"b": board}),
            expires_at: u64::MAX,
            starts_at_ms: 0,
            replaying_until_ms: 0,
            public: false,
        })
        .collect();
    let reports = futures_util::future::join_all((0..DELIVERIES).map(|n| {
        let card = Card {
            id: format!("card-{n}").into(),
            board_id: board.into(),
            title: format!("Card {n}"),
        };
        let event = Event::new(
            card_topic(board),
            serde_json::to_value(&card).unwrap(),
            Audience::User(UserId::new("alice")),
        );
        broker.deliver_to(Arc::new(event), &subscribers)
    }))
    .await;
    for report in &reports {
        assert_eq!(report.delivered, SUBSCRIBERS, "{report:?}");
    }
    assert_eq!(
        gateway.posted.load(Ordering::SeqCst),
        DELIVERIES * SUBSCRIBERS
    );
    let most = gateway.most.load(Ordering::SeqCst);
    assert!(
        most <= bound,
        "{most} posts in flight at once, over {bound}"
    );
    // and the bound is used, not a lower one
    assert_eq!(most, bound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reading_socket_is_not_closed_for_being_behind_its_own_users_burst() {
    const MUTATIONS: usize = 60;
    const SUBSCRIPTIONS: usize = 8;
    let mut options = options(DeliveryMode::Direct);
    options.broker = options.broker.without_user_limits();
    // The smallest outbox: every frame arriving before the writer took the one before finds
    // it full. The client reads all the time, so the outbox is never full for long; the full
    // timeout is the longest a post may wait, so the test does not depend on the machine's
    // speed.
    options.limits.outbox_frames = 1;
    options.limits.full_timeout = Duration::from_secs(4);
    let gateway = start(options).await;
    let alice = token(&gateway, "alice");
    let board = create_board(&gateway, &alice, "Burst").await;
    // One tab whose page shows the board's cards in several places: every card is posted to
    // its socket once per subscription, concurrently.
    let mut tab = WsClient::ready(&gateway, "graphql-transport-ws", &alice).await;
    for n in 0..SUBSCRIPTIONS {
        tab.subscribe(&format!("cards-{n}"), CARD_ADDED, json!({"b": board}))
            .await;
    }
    tab.sync().await;
    let reader = tokio::spawn(async move {
        let mut received: HashMap<(String, String), usize> = HashMap::new();
        let mut ending = None;
        while received.values().sum::<usize>() < MUTATIONS * SUBSCRIPTIONS {
            match tab.recv().await {
                Ok(message) => {
                    assert_eq!(message["type"], "next", "{message}");
                    let id = message["id"].as_str().unwrap().to_owned();
                    let card = message["payload"]["data"]["cardAdded"]["title"]
                        .as_str()
                        .unwrap()
                        .to_owned();
                    *received.entry((id, card)).or_default() += 1;
                }
                Err(e) => {
                    ending = Some(e.to_string());
                    break;
                }
            }
        }
        (received, ending)
    });
    let titles: Vec<String> = (0..MUTATIONS).map(|n| format!("card {n}")).collect();
    let answers = futures_util::future::join_all(
        titles
            .iter()
            .map(|title| add_card(&gateway, &alice, &board, title)),
    )
    .await;
    for answer in &answers {
        assert!(answer["errors"].is_null(), "{answer}");
    }
    let (received, ending) = reader.await.unwrap();
    assert_eq!(ending, None, "the socket ended early");
    assert_eq!(gateway.sockets_closed_too_slow(), 0);
    for n in 0..SUBSCRIPTIONS {
        for card in 0..MUTATIONS {
            let key = (format!("cards-{n}"), format!("card {card}"));
            assert_eq!(received.get(&key), Some(&1), "{key:?}");
        }
    }
    gateway.shutdown().await;
}
