//! A recording HTTP proxy: one function's AWS endpoint (`AWS_ENDPOINT_URL`, or its
//! `MANAGEMENT_ENDPOINT`) points at it, and it forwards every request to the real endpoint
//! (moto, the Management API stand-in) and keeps what was asked. What a function asked of
//! AWS is then known per function, as its role is per function, whatever else shares moto.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;

/// One request as the proxy received it.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    /// `GET`, `POST`, ...
    pub method: String,
    /// Path and query, as the client sent them (the endpoint's path included).
    pub path: String,
    /// Names in lower case.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Bytes,
    /// The status the client received.
    pub status: u16,
}

impl RecordedRequest {
    /// The value of the header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

struct Shared {
    upstream: String,
    prefix: String,
    client: reqwest::Client,
    seen: Mutex<Vec<RecordedRequest>>,
    /// Paths containing the first string are answered with the status, not forwarded.
    refusals: Mutex<Vec<(String, u16)>>,
}

/// A proxy on a free loopback port in front of one upstream. Stops with the runtime.
pub struct RecordingProxy {
    /// What to configure the client with: `http://127.0.0.1:<port>` and the prefix.
    pub endpoint: String,
    shared: Arc<Shared>,
}

impl RecordingProxy {
    /// A proxy forwarding to `upstream` (`http://host:port`), as it is.
    pub async fn start(upstream: &str) -> Self {
        Self::start_with_prefix(upstream, "").await
    }

    /// A proxy whose endpoint ends in `prefix` (e.g. `/dev`, a stage), which it removes
    /// from each path before forwarding to `upstream`.
    pub async fn start_with_prefix(upstream: &str, prefix: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a free port");
        let address = listener.local_addr().expect("local address");
        let shared = Arc::new(Shared {
            upstream: upstream.trim_end_matches('/').to_owned(),
            prefix: prefix.to_owned(),
            client: reqwest::Client::new(),
            seen: Mutex::new(Vec::new()),
            refusals: Mutex::new(Vec::new()),
        });
        let routes = Router::new().fallback(forward).with_state(shared.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, routes).await;
        });
        Self {
            endpoint: format!("http://{address}{prefix}"),
            shared,
        }
    }

    /// From now on, answers every request whose path contains `fragment` with `status`
    /// itself (a Management API's 410 Gone for one connection, say), still recording it.
    pub fn refuse(&self, fragment: &str, status: u16) {
        self.shared
            .refusals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((fragment.to_owned(), status));
    }

    /// The requests received so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared
            .seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Hop-by-hop headers and the ones the forwarding client sets itself.
fn forwarded(name: &HeaderName) -> bool {
    !matches!(
        name.as_str(),
        "host" | "content-length" | "connection" | "transfer-encoding" | "keep-alive"
    )
}

async fn forward(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(body) => body,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    let path = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path().to_owned(), |p| p.as_str().to_owned());
    let mut record = RecordedRequest {
        method: parts.method.to_string(),
        path: path.clone(),
        headers: parts
            .headers
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: body.clone(),
        status: 0,
    };
    let refusal = shared
        .refusals
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .find(|(fragment, _)| path.contains(fragment.as_str()))
        .map(|(_, status)| *status);
    let response = match refusal {
        Some(status) => {
            let status = StatusCode::from_u16(status).expect("a status code");
            (status, r#"{"message":"refused by the test"}"#).into_response()
        }
        None => relay(&shared, &parts, &path, body).await,
    };
    record.status = response.status().as_u16();
    shared
        .seen
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(record);
    response
}

async fn relay(
    shared: &Shared,
    parts: &axum::http::request::Parts,
    path: &str,
    body: Bytes,
) -> Response {
    let rest = path.strip_prefix(shared.prefix.as_str()).unwrap_or(path);
    let url = format!("{}{rest}", shared.upstream);
    let mut headers = HeaderMap::new();
    for (name, value) in &parts.headers {
        if forwarded(name) {
            headers.append(name.clone(), value.clone());
        }
    }
    let sent = shared
        .client
        .request(parts.method.clone(), url)
        .headers(headers)
        .body(body)
        .send()
        .await;
    let answer = match sent {
        Ok(answer) => answer,
        Err(e) => return (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    };
    let status = answer.status();
    let mut headers = HeaderMap::new();
    for (name, value) in answer.headers() {
        if forwarded(name) {
            headers.append(name.clone(), value.clone());
        }
    }
    let body = answer.bytes().await.unwrap_or_default();
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}
