//! The local mode on its database file, killed with SIGKILL in the middle of a fan-out and
//! started again on the same file: the saved state is there, and every event accepted
//! before the kill reaches every subscriber that reconnects and resumes, in order.
//!
//! The local mode runs as a process of its own (`broker-local-under-test`, the
//! `broker-local` command line serving the boards app), so the kill is a real one.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use broker::resume::RESUME_FROM;
use broker::{AuthConfig, Authenticator};
use broker_tests::local::{CARD_ADDED, PATIENCE, SECRET};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

/// Subscribers of the board: enough that delivering one event to all takes a while.
const SUBSCRIBERS: usize = 200;
/// Cards added after every subscriber has its cursor.
const CARDS: usize = 10;

struct Local {
    child: Child,
    addr: String,
}

impl Local {
    /// Starts the local mode on `file` and waits until it answers.
    async fn start(file: &Path) -> Self {
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap().port()
        };
        let addr = format!("127.0.0.1:{port}");
        let child = Command::new(env!("CARGO_BIN_EXE_broker-local-under-test"))
            .args(["serve", "--listen", &addr])
            .arg("--store")
            .arg(format!("file:{}", file.display()))
            .env("JWT_SECRET", SECRET)
            .env("STREAM_POLL_INTERVAL_MS", "0")
            // The default: a publish gets 1.5 s to store its event, fsync included, while
            // 2,000 subscribers are being served.
            .env("RESUME_SETTLE_MS", "2000")
            // The stream publisher delivers to every subscriber itself, event after event,
            // which keeps a topic's order (fan-out pages of different events run
            // concurrently, and order only by event id).
            .env("FANOUT_THRESHOLD", "1000")
            // One user plays every subscriber, from one address: no per-user or per-address
            // limit applies (tests/tests/user_limits.rs tests them).
            .env("MAX_SOCKETS_PER_USER", "0")
            .env("MAX_SUBSCRIPTIONS_PER_USER", "0")
            .env("PUBLISH_RATE_MAX", "0")
            .env("REPLAY_RATE_MAX", "0")
            .env("MAX_UNINITIALISED_PER_ADDRESS", "0")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start broker-local-under-test");
        let local = Self { child, addr };
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while tokio::net::TcpStream::connect(&local.addr).await.is_err() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the local mode did not start"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        local
    }

    /// SIGKILL: no shutdown, no flush.
    async fn kill(mut self) {
        self.child.start_kill().expect("SIGKILL");
        self.child.wait().await.expect("reaped");
    }

    async fn graphql(&self, token: &str, query: &str, variables: Value) -> Value {
        let body: Value = reqwest::Client::new()
            .post(format!("http://{}/graphql", self.addr))
            .bearer_auth(token)
            .json(&json!({"query": query, "variables": variables}))
            .send()
            .await
            .expect("HTTP request")
            .json()
            .await
            .expect("JSON body");
        assert!(body["errors"].is_null(), "{body}");
        body["data"].clone()
    }

    /// A `graphql-transport-ws` socket, initialised, subscribed to the board's cards (from
    /// `resume_from` when given), the subscription stored when this returns. Every `next`
    /// it receives is pushed to `seen` as (event id, card id).
    async fn subscriber(
        &self,
        token: &str,
        board: &str,
        resume_from: Option<&str>,
        seen: Seen,
    ) -> tokio::task::JoinHandle<()> {
        let mut request = format!("ws://{}/graphql", self.addr)
            .into_client_request()
            .unwrap();
        request.headers_mut().insert(
            "sec-websocket-protocol",
            HeaderValue::from_static("graphql-transport-ws"),
        );
        let (mut socket, _) = tokio_tungstenite::connect_async(request)
            .await
            .expect("socket");
        let mut payload = json!({"query": CARD_ADDED, "variables": {"b": board}});
        if let Some(cursor) = resume_from {
            payload["extensions"] = json!({ RESUME_FROM: cursor });
        }
        for frame in [
            json!({"type": "connection_init", "payload": {"token": token}}),
            json!({"id": "cards", "type": "subscribe", "payload": payload}),
            json!({"type": "ping"}),
        ] {
            socket
                .send(Message::Text(frame.to_string().into()))
                .await
                .unwrap();
        }
        // Frames of one connection are handled in order: the pong says the subscription
        // is stored (a resuming one has replayed by then too).
        loop {
            let frame = tokio::time::timeout(PATIENCE, socket.next())
                .await
                .expect("an answer in time");
            let Some(Ok(Message::Text(text))) = frame else {
                panic!("socket ended before the pong: {frame:?}");
            };
            let message: Value = serde_json::from_str(&text).unwrap();
            match message["type"].as_str() {
                Some("connection_ack") => {}
                Some("pong") => break,
                Some("next") => record(&seen, &message),
                _ => panic!("unexpected {message}"),
            }
        }
        tokio::spawn(async move {
            while let Some(Ok(frame)) = socket.next().await {
                if let Message::Text(text) = frame {
                    let message: Value = serde_json::from_str(&text).unwrap();
                    assert_eq!(message["type"], "next", "{message}");
                    record(&seen, &message);
                }
            }
        })
    }
}

/// What one subscriber received: (event id, card id) of each `next`.
type Seen = Arc<Mutex<Vec<(String, String)>>>;

fn record(seen: &Mutex<Vec<(String, String)>>, message: &Value) {
    let event = message["payload"]["extensions"]["eventId"]
        .as_str()
        .expect("an event id")
        .to_owned();
    let card = message["payload"]["data"]["cardAdded"]["id"]
        .as_str()
        .expect("a card")
        .to_owned();
    seen.lock().unwrap().push((event, card));
}

/// The distinct cards of `seen`, in the order first seen; panics when one card came with
/// two event ids (a repeat must carry the id the client already has).
fn distinct_cards(seen: &[(String, String)]) -> Vec<String> {
    let mut event_of: HashMap<&str, &str> = HashMap::new();
    let mut cards = Vec::new();
    for (event, card) in seen {
        match event_of.insert(card, event) {
            None => cards.push(card.clone()),
            Some(earlier) => assert_eq!(earlier, event, "card {card} came with two event ids"),
        }
    }
    cards
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_mid_fan_out_loses_no_saved_change_and_no_accepted_event() {
    let dir = std::env::temp_dir().join(format!("broker-durable-{}", ulid::Ulid::new()));
    let file = dir.join("state.redb");
    let token = Authenticator::new(AuthConfig {
        secret: SECRET.to_owned(),
        issuer: None,
        audience: None,
        leeway_secs: broker::auth::DEFAULT_LEEWAY_SECS,
    })
    .mint("alice", 3600);

    // GIVEN a board, its subscribers, and one card every subscriber has received.
    let local = Local::start(&file).await;
    let board = local
        .graphql(
            &token,
            r#"mutation { createBoard(title: "Durable") { id } }"#,
            json!({}),
        )
        .await["createBoard"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let add_card = "mutation($b: ID!, $t: String!) { addCard(boardId: $b, title: $t) { id } }";
    let mut seen = Vec::new();
    for _ in 0..SUBSCRIBERS {
        let log = Arc::new(Mutex::new(Vec::new()));
        local.subscriber(&token, &board, None, log.clone()).await;
        seen.push(log);
    }
    let mut published = Vec::new();
    let first = local
        .graphql(&token, add_card, json!({"b": board, "t": "card 0"}))
        .await;
    published.push(first["addCard"]["id"].as_str().unwrap().to_owned());
    let deadline = tokio::time::Instant::now() + PATIENCE * 4;
    while seen.iter().any(|log| log.lock().unwrap().is_empty()) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the first card did not reach everyone"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // WHEN more cards are added (each accepted: the mutation answered) and the process is
    // killed while they are being delivered.
    for n in 1..=CARDS {
        let added = local
            .graphql(
                &token,
                add_card,
                json!({"b": board, "t": format!("card {n}")}),
            )
            .await;
        published.push(added["addCard"]["id"].as_str().unwrap().to_owned());
    }
    local.kill().await;
    let before: Vec<Vec<(String, String)>> =
        seen.iter().map(|log| log.lock().unwrap().clone()).collect();
    let short = before
        .iter()
        .filter(|got| distinct_cards(got).len() < published.len())
        .count();
    assert!(
        short > 0,
        "every subscriber had every card before the kill: the kill did not land mid-fan-out"
    );

    // THEN after a restart on the same file the saved state is there ...
    let local = Local::start(&file).await;
    let boards = local
        .graphql(&token, "{ boards { id title } }", json!({}))
        .await;
    assert_eq!(boards["boards"], json!([{"id": board, "title": "Durable"}]));
    let cards = local
        .graphql(
            &token,
            "query($b: ID!) { cards(boardId: $b) { id } }",
            json!({"b": board}),
        )
        .await;
    let stored: HashSet<&str> = cards["cards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(stored, published.iter().map(String::as_str).collect());

    // ... and every subscriber that reconnects and resumes from the last event it saw (the
    // highest id) receives every card it missed, in order, each with the event id it was
    // published with.
    // All at once: each resume is answered after its last read of the log.
    let after: Vec<Seen> = before.iter().map(|_| Arc::default()).collect();
    futures_util::future::join_all(before.iter().zip(&after).map(|(got, log)| {
        let cursor = got.iter().map(|(event, _)| event.clone()).max();
        let (local, token, board, log) = (&local, &token, &board, log.clone());
        async move {
            let cursor = cursor.expect("every subscriber had the first card");
            // The reader task runs on its own; its handle is not needed.
            drop(local.subscriber(token, board, Some(&cursor), log).await);
        }
    }))
    .await;
    let deadline = tokio::time::Instant::now() + PATIENCE * 4;
    loop {
        let complete = before.iter().zip(&after).all(|(got, log)| {
            let mut all = got.clone();
            all.extend(log.lock().unwrap().iter().cloned());
            distinct_cards(&all).len() >= published.len()
        });
        if complete || tokio::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (i, (got, log)) in before.iter().zip(&after).enumerate() {
        let mut all = got.clone();
        all.extend(log.lock().unwrap().iter().cloned());
        assert_eq!(
            distinct_cards(&all),
            published,
            "subscriber {i}: every card once, in order ({} before the kill)",
            distinct_cards(got).len()
        );
    }
    eprintln!(
        "{short} of {SUBSCRIBERS} subscribers had not received every card when the process was killed"
    );
    local.kill().await;
    std::fs::remove_dir_all(&dir).ok();
}
