//! The local stream over real sockets: a record that keeps failing steps aside while the
//! other topics' events go out, is given up after its retries and kept where it can be
//! seen, and never reorders its own topic.
//!
//! The stream's batch handler is the stream publisher wrapped to fail the records whose
//! card title holds `poison` (and, as the publisher does, the later records of their topic
//! in the batch), as Lambda would see an invocation fail on them.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use aws_lambda_events::dynamodb::Event as StreamEvent;
use aws_lambda_events::streams::DynamoDbBatchItemFailure;
use broker::{Broker, DeliveryMode};
use broker_tests::local::*;
use local_gateway::LocalGateway;
use local_gateway::stream::{Handler, StreamOptions};
use serde_json::{Value, json};

/// The stream publisher, failing each batch with a `poison` card from that card on, the
/// first `times` such batches (every one when `None`); `attempts` counts those batches.
fn poisoned(times: Option<usize>, attempts: Arc<AtomicUsize>) -> Handler {
    Arc::new(move |broker: Broker, mut batch: StreamEvent| {
        let attempts = attempts.clone();
        Box::pin(async move {
            let poisoned = batch
                .records
                .iter()
                .position(|r| format!("{:?}", r.change.new_image).contains("poison"));
            let Some(at) = poisoned else {
                return publisher::stream::handle(&broker, batch).await;
            };
            let attempt = attempts.fetch_add(1, Ordering::SeqCst);
            if times.is_some_and(|times| attempt >= times) {
                return publisher::stream::handle(&broker, batch).await;
            }
            let failing = batch.records.split_off(at);
            let mut response = publisher::stream::handle(&broker, batch).await;
            for record in failing {
                let mut failure = DynamoDbBatchItemFailure::default();
                failure.item_identifier = record.change.sequence_number;
                response.batch_item_failures.push(failure);
            }
            response
        })
    })
}

async fn start_with(stream: StreamOptions) -> LocalGateway {
    let mut options = options(DeliveryMode::Stream);
    options.stream = stream;
    // What the stream's scheduling does when publishes are not limited (a backend's
    // `Broker::publish`, or a limit set high): the per-user limits are off here.
    options.broker = options.broker.without_user_limits();
    start(options).await
}

/// A socket of `user` watching a new board of his; returns it and the board.
async fn watcher(gateway: &LocalGateway, user: &str) -> (WsClient, String, String) {
    let token = token(gateway, user);
    let board = create_board(gateway, &token, user).await;
    let mut socket = WsClient::ready(gateway, "graphql-transport-ws", &token).await;
    socket
        .subscribe("cards", CARD_ADDED, json!({"b": board}))
        .await;
    socket.sync().await;
    (socket, token, board)
}

fn title(message: &Value) -> &str {
    message["payload"]["data"]["cardAdded"]["title"]
        .as_str()
        .unwrap_or_default()
}

async fn added(gateway: &LocalGateway, token: &str, board: &str, title: &str) {
    let answer = add_card(gateway, token, board, title).await;
    assert!(answer["errors"].is_null(), "{answer}");
}

#[tokio::test]
async fn a_record_failing_every_time_does_not_hold_up_other_users_events() {
    let attempts = Arc::new(AtomicUsize::new(0));
    let gateway = start_with(StreamOptions {
        // Never given up during the test: everything below happens while it is retried.
        max_retries: u32::MAX,
        retry_delay: Duration::from_millis(1),
        handler: Some(poisoned(None, attempts.clone())),
        ..StreamOptions::default()
    })
    .await;
    let (mut alice, alice_token, alice_board) = watcher(&gateway, "alice").await;
    let (mut bob, bob_token, bob_board) = watcher(&gateway, "bob").await;

    // GIVEN alice's card that fails every time, retried at least twice already...
    added(&gateway, &alice_token, &alice_board, "poison").await;
    assert!(eventually(async || attempts.load(Ordering::SeqCst) >= 2).await);
    // ...and a card of hers behind it,
    added(&gateway, &alice_token, &alice_board, "behind").await;

    // WHEN bob adds cards to his board, THEN he receives them, in order,
    for n in 0..3 {
        added(&gateway, &bob_token, &bob_board, &format!("bob {n}")).await;
    }
    for n in 0..3 {
        let message = bob.recv().await.unwrap();
        assert_eq!(title(&message), format!("bob {n}"), "{message}");
    }
    // while alice's record is still being retried, not given up...
    let retried = attempts.load(Ordering::SeqCst);
    assert!(eventually(async || attempts.load(Ordering::SeqCst) > retried).await);
    assert_eq!(gateway.stream_given_up().total(), 0);
    // ...and her later card still held behind it: nothing reached her socket before the
    // answer to a ping sent now.
    alice.send(json!({"type": "ping"})).await;
    let first = alice.recv().await.unwrap();
    assert_eq!(first["type"], "pong", "{first}");
    gateway.shutdown().await;
}

#[tokio::test]
async fn a_record_given_up_is_kept_and_its_topic_goes_on_in_order() {
    let attempts = Arc::new(AtomicUsize::new(0));
    let gateway = start_with(StreamOptions {
        max_retries: 2,
        retry_delay: Duration::from_millis(1),
        handler: Some(poisoned(None, attempts.clone())),
        ..StreamOptions::default()
    })
    .await;
    let (mut alice, token, board) = watcher(&gateway, "alice").await;

    // GIVEN a card before, one that fails every time, and two after, on one board...
    for title in ["before", "poison", "after 1", "after 2"] {
        added(&gateway, &token, &board, title).await;
    }
    // THEN the others arrive in order, without the failing one...
    for expected in ["before", "after 1", "after 2"] {
        let message = alice.recv().await.unwrap();
        assert_eq!(title(&message), expected, "{message}");
    }
    // ...which was tried once and retried twice, then given up and kept, with its ids.
    assert_eq!(attempts.load(Ordering::SeqCst), 3);
    let given_up = gateway.stream_given_up().records();
    assert_eq!(gateway.stream_given_up().total(), 1);
    assert_eq!(given_up.len(), 1, "{given_up:?}");
    assert_eq!(given_up[0].attempts, 3);
    assert_eq!(given_up[0].topic, format!("board/{board}/cardAdded"));
    assert!(!given_up[0].record.event_id.is_empty());
    assert!(format!("{:?}", given_up[0].record.change.new_image).contains("poison"));
    gateway.shutdown().await;
}

#[tokio::test]
async fn events_of_one_topic_stay_in_order_through_retries_beside_another_users_flood() {
    let attempts = Arc::new(AtomicUsize::new(0));
    let gateway = start_with(StreamOptions {
        retry_delay: Duration::from_millis(1),
        // The poison card fails its first three attempts, then goes through.
        handler: Some(poisoned(Some(3), attempts.clone())),
        ..StreamOptions::default()
    })
    .await;
    let (mut alice, alice_token, alice_board) = watcher(&gateway, "alice").await;
    let (mut bob, bob_token, bob_board) = watcher(&gateway, "bob").await;
    const ALICE: usize = 20;
    const BOB: usize = 320;
    const BOB_WORKERS: usize = 8;
    let alice_title = |n: usize| {
        if n == 5 {
            "poison 5".to_owned()
        } else {
            format!("alice {n}")
        }
    };

    // WHEN alice adds cards one after another (one fails its first attempts) while bob
    // floods his own board with eight mutations in flight...
    let alice_adds = async {
        for n in 0..ALICE {
            added(&gateway, &alice_token, &alice_board, &alice_title(n)).await;
        }
    };
    let bob_adds = async {
        let worker = async |w: usize| {
            for k in 0..BOB / BOB_WORKERS {
                added(&gateway, &bob_token, &bob_board, &format!("bob {w} {k}")).await;
            }
        };
        futures_util::future::join_all((0..BOB_WORKERS).map(worker)).await;
    };
    tokio::join!(alice_adds, bob_adds);

    // THEN alice receives each of hers once, in the order she added them,
    for n in 0..ALICE {
        let message = alice.recv().await.unwrap();
        assert_eq!(title(&message), alice_title(n), "{message}");
    }
    assert_eq!(attempts.load(Ordering::SeqCst), 4);
    // and bob all of his, each of his workers' cards in the order that worker added them
    // (one after another: each was in the log before the next was published).
    let mut next = [0usize; BOB_WORKERS];
    for _ in 0..BOB {
        let message = bob.recv().await.unwrap();
        let numbers: Vec<usize> = title(&message)
            .split(' ')
            .skip(1)
            .map(|n| n.parse().unwrap())
            .collect();
        let [w, k] = numbers[..] else {
            panic!("{message}")
        };
        assert_eq!(k, next[w], "worker {w}'s cards out of order: {message}");
        next[w] += 1;
    }
    gateway.shutdown().await;
}

/// The stream publisher, except that batches of the topic `held` names wait for `gate` to
/// open; `handled` counts their records.
fn held_back(
    held: Arc<std::sync::Mutex<String>>,
    gate: Arc<tokio::sync::Semaphore>,
    handled: Arc<AtomicUsize>,
) -> Handler {
    Arc::new(move |broker: Broker, batch: StreamEvent| {
        let (held, gate, handled) = (held.clone(), gate.clone(), handled.clone());
        Box::pin(async move {
            let topic = batch
                .records
                .first()
                .and_then(|r| match r.change.keys.get("topic") {
                    Some(serde_dynamo::AttributeValue::S(topic)) => Some(topic.clone()),
                    _ => None,
                });
            let of_topic = topic.is_some_and(|topic| *held.lock().unwrap() == topic);
            if of_topic {
                let _open = gate.acquire().await;
                handled.fetch_add(batch.records.len(), Ordering::SeqCst);
            }
            publisher::stream::handle(&broker, batch).await
        })
    })
}

/// One topic's backlog, far past its share of the read window, while its batches are held:
/// another topic's event is still read and delivered, and once the backlog moves every one
/// of its events arrives once, in order.
async fn a_backlog_on_one_topic_leaves_room_for_the_others(backend: local_gateway::Backend) {
    const BACKLOG: usize = 700;
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let handled = Arc::new(AtomicUsize::new(0));
    let held = Arc::new(std::sync::Mutex::new(String::new()));
    let mut options = options(DeliveryMode::Stream);
    options.backend = backend;
    options.broker = options.broker.without_user_limits();
    options.stream = StreamOptions {
        read_ahead: 300,
        per_topic: 100,
        handler: Some(held_back(held.clone(), gate.clone(), handled.clone())),
        ..StreamOptions::default()
    };
    let gateway = start(options).await;
    let (mut alice, alice_token, alice_board) = watcher(&gateway, "alice").await;
    let (mut bob, bob_token, bob_board) = watcher(&gateway, "bob").await;
    *held.lock().unwrap() = format!("board/{bob_board}/cardAdded");

    // GIVEN bob's topic with a backlog of 700 events, seven times its share of a read window
    // of 300, while its batches are held...
    let workers = (0..4).map(|w| {
        let (gateway, token, board) = (&gateway, &bob_token, &bob_board);
        async move {
            for k in 0..BACKLOG / 4 {
                added(gateway, token, board, &format!("bob {w} {k}")).await;
            }
        }
    });
    futures_util::future::join_all(workers).await;

    // WHEN alice adds a card to her board, THEN she receives it while bob's are held,
    added(&gateway, &alice_token, &alice_board, "alice").await;
    let message = alice.recv().await.unwrap();
    assert_eq!(title(&message), "alice", "{message}");
    assert_eq!(handled.load(Ordering::SeqCst), 0);

    // and once bob's batches go, he receives each of his cards once, each worker's in order.
    gate.add_permits(usize::MAX >> 4);
    let mut next = [0usize; 4];
    for _ in 0..BACKLOG {
        let message = bob.recv().await.unwrap();
        let numbers: Vec<usize> = title(&message)
            .split(' ')
            .skip(1)
            .map(|n| n.parse().unwrap())
            .collect();
        let [w, k] = numbers[..] else {
            panic!("{message}")
        };
        assert_eq!(k, next[w], "worker {w}'s cards out of order: {message}");
        next[w] += 1;
    }
    bob.send(json!({"type": "ping"})).await;
    let after = bob.recv().await.unwrap();
    assert_eq!(after["type"], "pong", "a card came twice: {after}");
    assert_eq!(handled.load(Ordering::SeqCst), BACKLOG);
    gateway.shutdown().await;
}

#[tokio::test]
async fn a_backlog_on_one_topic_leaves_room_for_the_others_embedded() {
    a_backlog_on_one_topic_leaves_room_for_the_others(local_gateway::Backend::Memory).await;
}

#[tokio::test]
async fn a_backlog_on_one_topic_leaves_room_for_the_others_in_the_database_file() {
    let dir = std::env::temp_dir().join(format!("broker-fair-stream-{}", ulid::Ulid::new()));
    let file = dir.join("state.redb");
    a_backlog_on_one_topic_leaves_room_for_the_others(local_gateway::Backend::File(file)).await;
    let _ = std::fs::remove_dir_all(dir);
}
