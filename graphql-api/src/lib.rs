//! The GraphQL API on Lambda, for any app.
//!
//! - [`websocket`]: the WebSocket API routes -> [`broker::Broker`]'s session calls.
//! - [`http_api`]: GraphQL over HTTP (API Gateway HTTP API).
//! - [`runtime`]: the functions' JSON logs, and [`runtime::run_websocket`] /
//!   [`runtime::run_http`], the mains an app's binaries call with the app.

pub mod http_api;
pub mod runtime;
pub mod websocket;

/// A request body as text, decoding API Gateway's base64 for binary payloads.
fn body_text(body: Option<&str>, is_base64_encoded: bool) -> Option<String> {
    use base64::Engine;
    let body = body.unwrap_or_default();
    if !is_base64_encoded {
        return Some(body.to_owned());
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(body)
        .ok()?;
    String::from_utf8(bytes).ok()
}
