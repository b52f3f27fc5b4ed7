//! Unmodified third-party clients against the local mode: the `graphql-ws` npm client
//! (graphql-transport-ws) and `subscriptions-transport-ws` (legacy graphql-ws), driven by the
//! scripts in `tests/node` (installed by `scripts/test-deps`).

use std::path::PathBuf;
use std::process::Stdio;

use broker::DeliveryMode;
use broker_tests::local::*;
use serde_json::Value;

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
