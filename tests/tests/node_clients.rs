//! Unmodified third-party clients against the local mode: the `graphql-ws` npm client
//! (graphql-transport-ws) and `subscriptions-transport-ws` (legacy graphql-ws), driven by the
//! scripts in `tests/node` (installed by `scripts/test-deps`).

use std::path::PathBuf;
use std::process::Stdio;

use broker::DeliveryMode;
use broker_tests::local::*;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Child;

fn node_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("node");
    assert!(
        dir.join("node_modules/graphql-ws").is_dir(),
        "the Node clients are not installed: run scripts/test-deps (scripts/test-all does)"
    );
    dir
}

async fn run_client(script: &str, mode: DeliveryMode) -> Value {
    let gateway = start(options(mode)).await;
    let alice = token(&gateway, "alice");
    let board = create_board(&gateway, &alice, "node").await;
    let output = tokio::process::Command::new("node")
        .arg(node_dir().join(script))
        .args(["--url", &gateway.websocket_url(), "--token", &alice])
        .args(["--board", &board, "--title", "from node"])
        .stdin(Stdio::null())
        .output()
        .await
        .expect("node runs");
    gateway.shutdown().await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    let result: Value = serde_json::from_str(line).unwrap_or_else(|_| {
        panic!(
            "{script} printed no result: {stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    assert!(output.status.success(), "{script}: {result}");
    assert_eq!(result["ok"], true, "{result}");
    assert_eq!(result["mutation"]["addCard"]["boardId"], board.as_str());
    result
}

fn assert_delivered(result: &Value) {
    let card = &result["subscription"]["cardAdded"];
    assert_eq!(card["title"], "from node");
    assert_eq!(card["name"], "from node", "aliases survive delivery");
    assert_eq!(card["id"], result["mutation"]["addCard"]["id"]);
}

#[tokio::test]
async fn the_graphql_ws_client_subscribes_and_receives() {
    for mode in [DeliveryMode::Stream, DeliveryMode::Direct] {
        assert_delivered(&run_client("graphql-ws-client.mjs", mode).await);
    }
}

#[tokio::test]
async fn the_subscriptions_transport_ws_client_subscribes_and_receives() {
    for mode in [DeliveryMode::Stream, DeliveryMode::Direct] {
        assert_delivered(&run_client("legacy-client.mjs", mode).await);
    }
}

/// Cards a reconnect script publishes while its socket is dropped again and again.
const RECONNECT_CARDS: usize = 50;

/// Runs `script` against a local mode that closes every socket 1.5 s after it opened (API
/// Gateway does after 2 hours), while the script publishes cards; returns its result.
async fn run_reconnect(script: &str, mode: DeliveryMode) -> Value {
    let mut options = options(mode);
    options.limits.max_duration = std::time::Duration::from_millis(1500);
    // The client's pings keep a socket open past the idle timeout.
    options.limits.idle_timeout = std::time::Duration::from_secs(1);
    // The script publishes faster than one user may and resumes on every reconnect: the
    // per-user limits are off here (tests/tests/user_limits.rs tests them).
    options.broker = options.broker.without_user_limits();
    options.broker.resume_settle = std::time::Duration::from_millis(200);
    let gateway = start(options).await;
    let alice = token(&gateway, "alice");
    let board = create_board(&gateway, &alice, "reconnects").await;
    let output = tokio::process::Command::new("node")
        .arg(node_dir().join(script))
        .args([
            "--url",
            &gateway.websocket_url(),
            "--http",
            &gateway.graphql_url(),
        ])
        .args(["--token", &alice, "--board", &board])
        .args(["--count", &RECONNECT_CARDS.to_string()])
        .stdin(Stdio::null())
        .output()
        .await
        .expect("node runs");
    gateway.shutdown().await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    let result: Value = serde_json::from_str(line).unwrap_or_else(|_| {
        panic!(
            "{script} printed no result: {stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    assert!(output.status.success(), "{script} ({mode:?}): {result}");
    result
}

/// Every card once, in the order published, across the reconnects.
fn assert_every_card_once_in_order(result: &Value) {
    let titles: Vec<&str> = result["received"]
        .as_array()
        .unwrap()
        .iter()
        .map(|card| card["title"].as_str().unwrap())
        .collect();
    let cards: Vec<&str> = titles
        .iter()
        .copied()
        .filter(|t| t.starts_with("card-"))
        .collect();
    let expected: Vec<String> = (0..RECONNECT_CARDS).map(|i| format!("card-{i}")).collect();
    assert_eq!(cards, expected, "{result}");
    // Warm-up cards too: none twice.
    let unique: std::collections::HashSet<&str> = titles.iter().copied().collect();
    assert_eq!(unique.len(), titles.len(), "{result}");
    // The socket was dropped while cards were published.
    let connections = result["connections"].as_u64().unwrap();
    assert!(connections >= 3, "only {connections} connections: {result}");
}

#[tokio::test]
async fn the_graphql_ws_client_resumes_through_forced_disconnects() {
    for mode in [DeliveryMode::Stream, DeliveryMode::Direct] {
        let result = run_reconnect("reconnect-graphql-ws.mjs", mode).await;
        assert_every_card_once_in_order(&result);
    }
}

#[tokio::test]
async fn apollo_graphql_ws_link_resumes_through_forced_disconnects() {
    for mode in [DeliveryMode::Stream, DeliveryMode::Direct] {
        let result = run_reconnect("reconnect-apollo.mjs", mode).await;
        assert_every_card_once_in_order(&result);
    }
}

/// `broker-local` as a process of its own on the database file `file`, listening on `addr`,
/// closing every socket 2 s after it opened; returns once it answers.
async fn start_local(addr: &str, file: &std::path::Path, mode: DeliveryMode) -> Child {
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_broker-local-under-test"))
        .args(["serve", "--listen", addr])
        .arg("--store")
        .arg(format!("file:{}", file.display()))
        .env("JWT_SECRET", SECRET)
        .env(
            "DELIVERY_MODE",
            if mode == DeliveryMode::Direct {
                "direct"
            } else {
                "stream"
            },
        )
        .env("STREAM_POLL_INTERVAL_MS", "0")
        // A publish gets 750 ms to store its event, fsync included.
        .env("RESUME_SETTLE_MS", "1000")
        .env("SOCKET_MAX_DURATION_SECS", "2")
        .env("SOCKET_IDLE_TIMEOUT_SECS", "1")
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
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the local mode did not start"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    child
}

/// [`run_reconnect`] against `broker-local` on its file, killed (SIGKILL) and started again
/// on the same address and file after 25 cards, when the script asks for it (and told on
/// its stdin when it is back).
async fn run_reconnect_with_restart(script: &str, mode: DeliveryMode) -> Value {
    let dir = std::env::temp_dir().join(format!("broker-reconnect-{}", ulid::Ulid::new()));
    let file = dir.join("state.redb");
    let addr = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("127.0.0.1:{}", probe.local_addr().unwrap().port())
    };
    let mut local = start_local(&addr, &file, mode).await;
    let alice = broker::Authenticator::new(broker::AuthConfig {
        secret: SECRET.to_owned(),
        issuer: None,
        audience: None,
        leeway_secs: broker::auth::DEFAULT_LEEWAY_SECS,
    })
    .mint("alice", 3600);
    let created: Value = reqwest::Client::new()
        .post(format!("http://{addr}/graphql"))
        .bearer_auth(&alice)
        .json(&serde_json::json!({"query": "mutation { createBoard(title: \"restarts\") { id } }"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let board = created["data"]["createBoard"]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let mut node = tokio::process::Command::new("node")
        .arg(node_dir().join(script))
        .args(["--url", &format!("ws://{addr}/graphql")])
        .args(["--http", &format!("http://{addr}/graphql")])
        .args(["--token", &alice, "--board", &board])
        .args([
            "--count",
            &RECONNECT_CARDS.to_string(),
            "--restart-after",
            "25",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs");
    let mut lines = BufReader::new(node.stdout.take().unwrap()).lines();
    let mut stdin = node.stdin.take().unwrap();
    let mut last = String::new();
    while let Some(line) = lines.next_line().await.unwrap() {
        if line.contains("\"restart\"") {
            local.start_kill().expect("SIGKILL");
            local.wait().await.expect("reaped");
            local = start_local(&addr, &file, mode).await;
            stdin.write_all(b"restarted\n").await.unwrap();
        } else {
            last = line;
        }
    }
    let status = node.wait().await.unwrap();
    local.start_kill().unwrap();
    local.wait().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let result: Value =
        serde_json::from_str(&last).unwrap_or_else(|_| panic!("{script} printed no result"));
    assert!(status.success(), "{script} ({mode:?}): {result}");
    assert_eq!(result["restarted"], true, "{result}");
    result
}

#[tokio::test]
async fn the_graphql_ws_client_resumes_through_a_restart_of_the_local_mode() {
    for mode in [DeliveryMode::Stream, DeliveryMode::Direct] {
        let result = run_reconnect_with_restart("reconnect-graphql-ws.mjs", mode).await;
        assert_every_card_once_in_order(&result);
    }
}

#[tokio::test]
async fn apollo_graphql_ws_link_resumes_through_a_restart_of_the_local_mode() {
    for mode in [DeliveryMode::Stream, DeliveryMode::Direct] {
        let result = run_reconnect_with_restart("reconnect-apollo.mjs", mode).await;
        assert_every_card_once_in_order(&result);
    }
}
