//! `broker-local` without a secret of its own: `JWT_SECRET` unset and `JWT_SECRET=""` are one
//! case. Both warn at start that the development secret is in use and turn the development
//! sign-in (`POST /dev/token`) on; a secret of its own turns both off.

use std::process::Stdio;
use std::time::Duration;

use broker_tests::local::PATIENCE;
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;
use tokio::process::Command;

const WARNING: &str = "JWT_SECRET is not set or empty: using the documented development secret";

/// What `broker-local` did with `secret` (`None`: unset): whether it warned, and the status
/// of a development sign-in with the token it answered, if any.
async fn run_with(secret: Option<&str>) -> (bool, u16, Option<String>) {
    let dir = std::env::temp_dir().join(format!("broker-secret-{}", ulid::Ulid::new()));
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let addr = format!("127.0.0.1:{port}");
    let mut command = Command::new(env!("CARGO_BIN_EXE_broker-local-under-test"));
    command
        .args(["serve", "--listen", &addr, "--store", "memory"])
        .env("BROKER_DATA_DIR", &dir)
        .env("RUST_LOG", "warn")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    match secret {
        Some(secret) => command.env("JWT_SECRET", secret),
        None => command.env_remove("JWT_SECRET"),
    };
    let mut child = command.spawn().expect("start broker-local-under-test");
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while tokio::net::TcpStream::connect(&addr).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the local mode did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let response = reqwest::Client::new()
        .post(format!("http://{addr}/dev/token"))
        .json(&json!({"user": "alice"}))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let token = if status == 200 {
        let body: Value = response.json().await.unwrap();
        body["token"].as_str().map(str::to_owned)
    } else {
        None
    };
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    let mut logs = String::new();
    for pipe in [
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn tokio::io::AsyncRead + Unpin>),
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn tokio::io::AsyncRead + Unpin>),
    ]
    .into_iter()
    .flatten()
    {
        let mut pipe = pipe;
        pipe.read_to_string(&mut logs).await.unwrap();
    }
    let _ = std::fs::remove_dir_all(dir);
    (logs.contains(WARNING), status, token)
}

/// Whether `token` verifies with the documented development secret.
fn signed_with_development_secret(token: &str) -> bool {
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.validate_aud = false;
    jsonwebtoken::decode::<Value>(
        token,
        &jsonwebtoken::DecodingKey::from_secret(broker::auth::DEVELOPMENT_SECRET.as_bytes()),
        &validation,
    )
    .is_ok()
}

#[tokio::test]
async fn an_empty_secret_is_the_unset_secret_with_its_warning() {
    for secret in [None, Some("")] {
        let (warned, status, token) = run_with(secret).await;
        assert!(warned, "{secret:?}: no warning");
        assert_eq!(status, 200, "{secret:?}");
        let token = token.expect("a development token");
        assert!(signed_with_development_secret(&token), "{secret:?}");
    }
}

#[tokio::test]
async fn a_secret_of_its_own_neither_warns_nor_signs_anyone_in() {
    let (warned, status, token) =
        run_with(Some("a-secret-of-its-own-at-least-thirty-two-bytes")).await;
    assert!(!warned);
    // No such route: the web app's static files answer, and they take no POST.
    assert!(matches!(status, 404 | 405), "{status}");
    assert!(token.is_none());
}
