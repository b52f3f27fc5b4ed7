//! The local API Gateway: GraphQL over HTTP and WebSocket at `/graphql`, and the Management
//! API at `/@connections/{id}`, in one axum router.

use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::query_map::QueryMap;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use broker::aws::{CLOSE_CODE_HEADER, CLOSE_REASON_HEADER};
use broker::{Broker, ConnectionId};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::sync::mpsc;

use crate::events;
use crate::sockets::{Socket, Sockets};

/// API Gateway's WebSocket frame limit.
const MAX_FRAME_BYTES: usize = 32 * 1024;
/// API Gateway's WebSocket message limit.
const MAX_MESSAGE_BYTES: usize = 128 * 1024;

#[derive(Clone)]
pub struct AppState {
    pub broker: Broker,
    pub sockets: Arc<Sockets>,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/graphql", get(graphql_get).post(graphql_post))
        .route(
            "/@connections/{id}",
            post(post_to_connection)
                .get(get_connection)
                .delete(delete_connection),
        )
        .route("/health", get(|| async { "ok" }))
        .with_state(state)
}

async fn graphql_get(State(state): State<AppState>, request: Request) -> Response {
    let (mut parts, body) = request.into_parts();
    let wants_upgrade = parts
        .headers
        .get(http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if !wants_upgrade {
        return http_request(state, Request::from_parts(parts, body)).await;
    }
    match WebSocketUpgrade::from_request_parts(&mut parts, &state).await {
        Ok(upgrade) => connect(state, parts.headers, parts.uri.query(), upgrade).await,
        Err(rejection) => rejection.into_response(),
    }
}

async fn graphql_post(State(state): State<AppState>, request: Request) -> Response {
    http_request(state, request).await
}

/// GraphQL over HTTP: the HTTP API event, the same handler as on Lambda.
async fn http_request(state: AppState, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, 6 * 1024 * 1024).await {
        Ok(bytes) => bytes,
        Err(_) => return (StatusCode::PAYLOAD_TOO_LARGE, "body too large").into_response(),
    };
    let body = (!body.is_empty()).then(|| String::from_utf8_lossy(&body).into_owned());
    let event = events::http(
        parts.method,
        parts.uri.path(),
        parts.uri.query(),
        parts.headers,
        body,
    );
    let reply = graphql_api::http_api::handle(&state.broker, event).await;
    let mut response = Response::new(Body::from(body_bytes(reply.body)));
    *response.status_mut() =
        StatusCode::from_u16(reply.status_code as u16).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    *response.headers_mut() = reply.headers;
    response
}

fn body_bytes(body: Option<aws_lambda_events::encodings::Body>) -> Vec<u8> {
    use aws_lambda_events::encodings::Body as LambdaBody;
    match body {
        Some(LambdaBody::Text(text)) => text.into_bytes(),
        Some(LambdaBody::Binary(bytes)) => bytes,
        _ => Vec::new(),
    }
}

/// `$connect`: the handler decides, as on API Gateway, before the upgrade completes.
async fn connect(
    state: AppState,
    headers: HeaderMap,
    query: Option<&str>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let id = new_connection_id();
    let connected_at_ms = broker::domain::now_ms();
    let query: QueryMap = query.and_then(|q| q.parse().ok()).unwrap_or_default();
    let event = events::websocket("$connect", &id, connected_at_ms, headers, query, None);
    let reply = match graphql_api::websocket::handle(&state.broker, event).await {
        Ok(reply) => reply,
        Err(e) => {
            tracing::error!(connection = %id, error = %e, "$connect failed");
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
    };
    if reply.status_code != 200 {
        let status = StatusCode::from_u16(reply.status_code as u16)
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return (status, body_bytes(reply.body)).into_response();
    }
    let protocol = reply
        .headers
        .get("sec-websocket-protocol")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let upgrade = match protocol {
        Some(p) => upgrade.protocols([p]),
        None => upgrade,
    };
    upgrade
        .max_frame_size(MAX_FRAME_BYTES)
        .max_message_size(MAX_MESSAGE_BYTES)
        .on_upgrade(move |socket| run_socket(state, id, connected_at_ms, socket))
}

/// One socket's life: a writer task drains its outbox (frames posted through the Management
/// API); this task reads frames and runs `$default` for each, one at a time and in order.
async fn run_socket(state: AppState, id: ConnectionId, connected_at_ms: u64, socket: WebSocket) {
    let (mut sink, mut stream) = socket.split();
    let (outbox, mut pending) = mpsc::unbounded_channel::<Message>();
    state.sockets.insert(
        id.clone(),
        Socket {
            outbox,
            connected_at_ms,
            last_active_ms: connected_at_ms,
        },
    );

    let init_timer = {
        let broker = state.broker.clone();
        let id = id.clone();
        tokio::spawn(async move {
            tokio::time::sleep(broker.config().init_timeout).await;
            if let Err(e) = broker.enforce_init_timeout(&id).await {
                tracing::warn!(connection = %id, error = %e, "init timeout check failed");
            }
        })
    };

    let (closed_tx, mut closed) = tokio::sync::watch::channel(false);
    let writer = tokio::spawn(async move {
        while let Some(message) = pending.recv().await {
            let is_close = matches!(message, Message::Close(_));
            if sink.send(message).await.is_err() || is_close {
                break;
            }
        }
        let _ = closed_tx.send(true);
    });

    loop {
        let frame = tokio::select! {
            frame = stream.next() => frame,
            // The server closed the socket: give the client a moment to answer the close.
            _ = closed.changed() => {
                let _ = tokio::time::timeout(Duration::from_secs(1), stream.next()).await;
                break;
            }
        };
        let body = match frame {
            Some(Ok(Message::Text(text))) => text.to_string(),
            Some(Ok(Message::Binary(_))) => {
                // API Gateway hands binary frames over base64-encoded; neither protocol
                // uses them, and the handler refuses them with 4400.
                let mut event = events::websocket(
                    "$default",
                    &id,
                    connected_at_ms,
                    HeaderMap::new(),
                    QueryMap::default(),
                    Some("//8=".to_owned()),
                );
                event.is_base64_encoded = true;
                run_default(&state, &id, event).await;
                continue;
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
        };
        state.sockets.touch(&id);
        let event = events::websocket(
            "$default",
            &id,
            connected_at_ms,
            HeaderMap::new(),
            QueryMap::default(),
            Some(body),
        );
        run_default(&state, &id, event).await;
    }

    state.sockets.remove(&id);
    init_timer.abort();
    writer.abort();
    let event = events::websocket(
        "$disconnect",
        &id,
        connected_at_ms,
        HeaderMap::new(),
        QueryMap::default(),
        None,
    );
    if let Err(e) = graphql_api::websocket::handle(&state.broker, event).await {
        tracing::error!(connection = %id, error = %e, "$disconnect failed");
    }
}

async fn run_default(
    state: &AppState,
    id: &ConnectionId,
    event: aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest,
) {
    if let Err(e) = graphql_api::websocket::handle(&state.broker, event).await {
        // On AWS the client would see an internal error message; the socket stays open.
        tracing::error!(connection = %id, error = %e, "$default failed");
    }
}

/// Ids shaped like API Gateway's: 12 random bytes, base64 (URL-safe here, so they can stand
/// in a path unescaped).
fn new_connection_id() -> ConnectionId {
    use base64::Engine;
    let random = ulid::Ulid::new().0.to_be_bytes();
    ConnectionId::new(base64::engine::general_purpose::URL_SAFE.encode(&random[4..16]))
}

fn gone() -> Response {
    let mut response = (StatusCode::GONE, axum::Json(json!({"message": null}))).into_response();
    response.headers_mut().insert(
        "x-amzn-errortype",
        HeaderValue::from_static("GoneException"),
    );
    response
}

async fn post_to_connection(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    if body.len() > MAX_MESSAGE_BYTES {
        return (
            StatusCode::PAYLOAD_TOO_LARGE,
            axum::Json(json!({"message": "message exceeds 128 KB"})),
        )
            .into_response();
    }
    let Ok(text) = String::from_utf8(body.to_vec()) else {
        // Binary posts are legal on API Gateway; the protocols here are text only.
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"message": "not UTF-8"})),
        )
            .into_response();
    };
    if state
        .sockets
        .send(&ConnectionId::new(id), Message::Text(text.into()))
    {
        StatusCode::OK.into_response()
    } else {
        gone()
    }
}

async fn get_connection(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let Some(socket) = state.sockets.get(&ConnectionId::new(id)) else {
        return gone();
    };
    // RFC 3339, as API Gateway answers.
    let iso = |ms: u64| {
        aws_smithy_types::DateTime::from_millis(ms as i64)
            .fmt(aws_smithy_types::date_time::Format::DateTime)
            .unwrap_or_default()
    };
    axum::Json(json!({
        "connectedAt": iso(socket.connected_at_ms),
        "lastActiveAt": iso(socket.last_active_ms),
        "identity": {"sourceIp": "127.0.0.1", "userAgent": null},
    }))
    .into_response()
}

async fn delete_connection(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let code = headers
        .get(CLOSE_CODE_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u16>().ok())
        .unwrap_or(1000);
    let reason = headers
        .get(CLOSE_REASON_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let close = Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }));
    if state.sockets.send(&ConnectionId::new(id), close) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        gone()
    }
}
