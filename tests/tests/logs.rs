//! The Lambda functions' logs: one JSON object a line, no ANSI colour codes, and never a
//! token, at any level, whether the token is good or bad, in the query string, in
//! `connection_init` or in an `Authorization` header.

use std::io::Write;
use std::sync::{Arc, Mutex};

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayWebsocketProxyRequest};
use broker::{AuthConfig, Authenticator};
use broker_tests::fixtures::*;
use graphql_api::runtime::json_logs;
use graphql_api::{http_api, websocket};
use tracing_subscriber::EnvFilter;

/// Everything the subscriber writes, shared with the test.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).expect("logs are UTF-8")
    }
}

/// A token for the same user, signed with another secret: refused, and still never logged.
fn foreign_token() -> String {
    Authenticator::new(AuthConfig {
        secret: "another-secret-that-signs-nothing-here-0123".into(),
        issuer: None,
        audience: None,
        leeway_secs: broker::auth::DEFAULT_LEEWAY_SECS,
    })
    .mint(USER, 600)
}

#[tokio::test(flavor = "current_thread")]
async fn logs_are_json_lines_without_colour_and_without_tokens() {
    let captured = Captured::default();
    let writer = captured.clone();
    // Every level: a debug line that printed a frame or a header would show here.
    let _logs = tracing::subscriber::set_default(json_logs(
        move || writer.clone(),
        EnvFilter::new("trace"),
    ));
    let h = harness().await;
    let foreign = foreign_token();

    for token in [&h.token, &foreign] {
        for name in [
            "connect.json",
            "connection-init.json",
            "subscribe.json",
            "disconnect.json",
        ] {
            let event: ApiGatewayWebsocketProxyRequest = fixture(name, token);
            let _ = websocket::handle(&h.broker, event).await;
        }
        for name in ["http-query.json", "http-mutation.json"] {
            let event: ApiGatewayV2httpRequest = fixture(name, token);
            let _ = http_api::handle(&h.broker, event).await;
        }
    }

    let logs = captured.text();
    let lines: Vec<&str> = logs.lines().collect();
    // The refused token and the refused init are logged: the check below reads real lines.
    assert!(
        lines.iter().any(|l| l.contains("connect refused")),
        "expected the refused $connect in the logs:\n{logs}"
    );
    for line in &lines {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        assert!(value.is_object(), "{line}");
        assert!(value.get("level").is_some(), "{line}");
        assert!(!line.contains('\u{1b}'), "ANSI escape in {line}");
    }
    for token in [&h.token, &foreign] {
        // A JWT's signature alone identifies it; its header is the same for every token.
        let signature = token.rsplit('.').next().unwrap();
        assert!(
            !logs.contains(token.as_str()),
            "a token was logged:\n{logs}"
        );
        assert!(
            !logs.contains(signature),
            "a token's signature was logged:\n{logs}"
        );
    }
}
