//! The local API Gateway: GraphQL over HTTP and WebSocket at `/graphql`, and the Management
//! API at `/@connections/{id}`, in one axum router.

use std::net::IpAddr;
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
use broker::{Broker, ConfigError, ConnectionId, settings};
use futures_util::{SinkExt, StreamExt};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc};
use tower_http::cors::CorsLayer;

use crate::cleanup::Cleanup;
use crate::events;
use crate::sockets::{Socket, Sockets, Uninitialised};

/// API Gateway's WebSocket frame limit.
const MAX_FRAME_BYTES: usize = 32 * 1024;
/// API Gateway's WebSocket message limit.
const MAX_MESSAGE_BYTES: usize = 128 * 1024;
/// A socket's read buffer. tungstenite's default (128 KiB) is allocated and zeroed for every
/// socket, idle or not; protocol messages are a few hundred bytes, and a larger frame is
/// read in several chunks.
const READ_BUFFER_BYTES: usize = 4 * 1024;
/// Bytes a socket's writer may hold when the client is not taking them (the outbox holds the
/// rest, bounded by frames): one message of the largest size, and then some.
const MAX_WRITE_BUFFER_BYTES: usize = 2 * MAX_MESSAGE_BYTES;

/// What every route of the server shares.
#[derive(Clone)]
#[expect(
    missing_debug_implementations,
    reason = "shared handles to the broker and the sockets, with nothing to print"
)]
pub struct AppState {
    /// The broker the routes call.
    pub broker: Broker,
    /// The open sockets, by connection id.
    pub sockets: Arc<Sockets>,
    /// The server's own bounds (connections, message sizes, rates).
    pub limits: Limits,
    /// Where closed sockets' `$disconnect`s wait their turn.
    pub cleanup: Cleanup,
}

/// What one client may hold of the local gateway. The defaults are API Gateway's where it has
/// one; every value can be set from the environment (`Limits::from_env`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// A socket without a frame from its client for this long is closed with 1001
    /// (`SOCKET_IDLE_TIMEOUT_SECS`, API Gateway: 10 minutes).
    pub idle_timeout: Duration,
    /// Every socket is closed with 1001 after this long (`SOCKET_MAX_DURATION_SECS`, API
    /// Gateway: 2 hours).
    pub max_duration: Duration,
    /// Frames queued for one socket (`SOCKET_OUTBOX_FRAMES`); while it is full, posts to
    /// the socket wait for room.
    pub outbox_frames: usize,
    /// A socket whose queue stays full this long is closed with 1013
    /// (`SOCKET_FULL_TIMEOUT_MS`; see [`crate::sockets::Sockets::send`]). Under the
    /// Management API client's 5 s per attempt, so a post never outwaits its client.
    pub full_timeout: Duration,
    /// Open TCP connections (HTTP and WebSocket); more are refused at once
    /// (`MAX_CONNECTIONS`).
    pub max_connections: usize,
    /// An HTTP request whose headers have not all arrived after this long is dropped
    /// (`HTTP_HEADER_TIMEOUT_SECS`).
    pub header_read_timeout: Duration,
    /// WebSockets one client address may hold before `connection_init` is accepted; one
    /// more upgrade from it is refused with 429, so sockets that never initialise cannot
    /// take [`Self::max_connections`] from everyone else (`MAX_UNINITIALISED_PER_ADDRESS`).
    /// 0: unlimited. The address is the TCP peer's: behind a reverse proxy every client has
    /// the proxy's, so raise it or set 0 there.
    pub max_uninitialised_per_address: usize,
    /// `$disconnect`s of closed sockets at work at once, at most (see [`crate::cleanup`]): a
    /// live socket's store writes wait behind at most this many (default 64).
    pub cleanup_concurrency: usize,
    /// Closed sockets whose `$disconnect` waits to run, at most; a socket closing while the
    /// queue is full waits for room, having let go of its TCP connection (default 65,536).
    pub cleanup_queue: usize,
}

impl Default for Limits {
    /// The defaults declared in [`broker::settings`].
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(settings::SOCKET_IDLE_TIMEOUT_SECS.default_value()),
            max_duration: Duration::from_secs(settings::SOCKET_MAX_DURATION_SECS.default_value()),
            outbox_frames: settings::SOCKET_OUTBOX_FRAMES.default_value(),
            full_timeout: Duration::from_millis(settings::SOCKET_FULL_TIMEOUT_MS.default_value()),
            max_connections: settings::MAX_CONNECTIONS.default_value(),
            header_read_timeout: Duration::from_secs(
                settings::HTTP_HEADER_TIMEOUT_SECS.default_value(),
            ),
            max_uninitialised_per_address: settings::MAX_UNINITIALISED_PER_ADDRESS.default_value(),
            cleanup_concurrency: 64,
            cleanup_queue: 65_536,
        }
    }
}

impl Limits {
    /// The defaults, overridden by the environment variables named on each field.
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            idle_timeout: Duration::from_secs(settings::SOCKET_IDLE_TIMEOUT_SECS.value()?),
            max_duration: Duration::from_secs(settings::SOCKET_MAX_DURATION_SECS.value()?),
            outbox_frames: settings::SOCKET_OUTBOX_FRAMES.value()?,
            full_timeout: Duration::from_millis(settings::SOCKET_FULL_TIMEOUT_MS.value()?),
            max_connections: settings::MAX_CONNECTIONS.value()?,
            header_read_timeout: Duration::from_secs(settings::HTTP_HEADER_TIMEOUT_SECS.value()?),
            max_uninitialised_per_address: settings::MAX_UNINITIALISED_PER_ADDRESS.value()?,
            ..Self::default()
        })
    }
}

/// Serves `app` on `listener`: HTTP/1.1 with upgrades, at most `limits.max_connections` open
/// connections (one over the limit is closed as soon as it is accepted), and a deadline for
/// each request's headers, so half-sent requests cannot hold file descriptors.
pub async fn serve(listener: TcpListener, app: Router, limits: Limits) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors, most likely: wait for some to be given back.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::warn!(%peer, limit = limits.max_connections, "connection limit reached");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone().layer(axum::Extension(ClientAddress(peer.ip())));
        let service = TowerToHyperService::new(app);
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout);
        tokio::spawn(async move {
            let connection = builder
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            if let Err(e) = connection.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
}

/// The routes of GraphQL over HTTP, the WebSocket API and the Management API.
pub fn router(state: AppState, cors: CorsLayer) -> Router {
    Router::new()
        .route("/graphql", get(graphql_get).post(graphql_post).layer(cors))
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
    let client = parts.extensions.get::<ClientAddress>().map(|a| a.0);
    match WebSocketUpgrade::from_request_parts(&mut parts, &state).await {
        Ok(upgrade) => connect(state, client, parts.headers, parts.uri.query(), upgrade).await,
        Err(rejection) => rejection.into_response(),
    }
}

async fn graphql_post(State(state): State<AppState>, request: Request) -> Response {
    http_request(state, request).await
}

/// GraphQL over HTTP: the HTTP API event, the same handler as on Lambda.
async fn http_request(state: AppState, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    // The handler's request limit bounds what is read: a declared length over it is refused
    // before any of the body is read, and a body without one stops being read there.
    let limit = state.broker.config().max_request_bytes;
    let declared = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return body_too_large(limit);
    }
    let Ok(body) = axum::body::to_bytes(body, limit).await else {
        return body_too_large(limit);
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

/// 413 with a GraphQL error, as the handler answers a body over the limit; the connection
/// is closed after it, since the rest of the body is not read.
fn body_too_large(limit: usize) -> Response {
    let body = json!({"errors": [{"message": format!("the request body is over {limit} bytes")}]});
    let mut response = (StatusCode::PAYLOAD_TOO_LARGE, axum::Json(body)).into_response();
    response
        .headers_mut()
        .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
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
    client: Option<IpAddr>,
    headers: HeaderMap,
    query: Option<&str>,
    upgrade: WebSocketUpgrade,
) -> Response {
    if state.sockets.len() >= state.limits.max_connections {
        return (StatusCode::SERVICE_UNAVAILABLE, "too many connections").into_response();
    }
    // Counted until `connection_init` is accepted or the socket ends.
    let limit = state.limits.max_uninitialised_per_address;
    let uninitialised = match client {
        Some(address) => match state.sockets.hold_uninitialised(address, limit) {
            Some(held) => Some(held),
            None => {
                tracing::info!(%address, limit, "too many uninitialised sockets from one address");
                let reason = format!(
                    "too many sockets not initialised yet from this address (at most {limit})"
                );
                return (StatusCode::TOO_MANY_REQUESTS, reason).into_response();
            }
        },
        None => None,
    };
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
        .read_buffer_size(READ_BUFFER_BYTES)
        // Every frame is flushed as it is sent: nothing to gather in a write buffer.
        .write_buffer_size(0)
        .max_write_buffer_size(MAX_WRITE_BUFFER_BYTES)
        .on_upgrade(move |socket| run_socket(state, id, connected_at_ms, uninitialised, socket))
}

/// The TCP peer's address of a request, set on every request of its connection by
/// [`serve`].
#[derive(Clone, Copy, Debug)]
struct ClientAddress(IpAddr);

/// One socket's life: a writer task drains its outbox (frames posted through the Management
/// API); this task reads frames and runs `$default` for each, one at a time and in order, and
/// keeps the socket's timers (API Gateway's idle timeout and maximum duration, the token's
/// expiry).
async fn run_socket(
    state: AppState,
    id: ConnectionId,
    connected_at_ms: u64,
    mut uninitialised: Option<Uninitialised>,
    socket: WebSocket,
) {
    let (mut sink, mut stream) = socket.split();
    let limits = state.limits.clone();
    let (outbox, mut pending) = mpsc::channel::<Message>(limits.outbox_frames);
    let overflow = Arc::new(tokio::sync::Notify::new());
    state.sockets.insert(
        id.clone(),
        Socket::new(outbox, overflow.clone(), connected_at_ms),
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
        loop {
            let message = tokio::select! {
                message = pending.recv() => message,
                // The outbox stayed full: the client reads too slowly. Its queued frames
                // are dropped; it gets a close frame if it reads at all.
                () = overflow.notified() => Some(close_frame(1013, "client too slow")),
            };
            let Some(message) = message else { break };
            let is_close = matches!(message, Message::Close(_));
            let sent = if is_close {
                // A client that stopped reading cannot hold the close back for long.
                tokio::time::timeout(CLOSE_GRACE, sink.send(message))
                    .await
                    .is_ok_and(|r| r.is_ok())
            } else {
                sink.send(message).await.is_ok()
            };
            if !sent || is_close {
                break;
            }
        }
        let _ = closed_tx.send(true);
    });

    let started = tokio::time::Instant::now();
    let max_duration = tokio::time::sleep(limits.max_duration);
    tokio::pin!(max_duration);
    let idle = tokio::time::sleep(limits.idle_timeout);
    tokio::pin!(idle);
    // The token's expiry, once the connection has a principal (at `$connect` or after
    // `connection_init`); it cannot change afterwards.
    let mut authority: Option<tokio::time::Instant> = authority_deadline(&state.broker, &id).await;
    let expiry = tokio::time::sleep_until(authority.unwrap_or(started + limits.max_duration));
    tokio::pin!(expiry);

    loop {
        let frame = tokio::select! {
            frame = stream.next() => frame,
            // The server closed the socket: give the client a moment to answer the close.
            _ = closed.changed() => {
                let _ = tokio::time::timeout(CLOSE_GRACE, stream.next()).await;
                break;
            }
            () = &mut idle => {
                state.sockets.send(&id, close_frame(1001, "Going away: idle timeout")).await;
                continue_until_closed(&mut closed, &mut stream).await;
                break;
            }
            () = &mut max_duration => {
                state.sockets.send(&id, close_frame(1001, "Going away: maximum connection duration")).await;
                continue_until_closed(&mut closed, &mut stream).await;
                break;
            }
            () = &mut expiry, if authority.is_some() => {
                if let Err(e) = state.broker.enforce_token_expiry(&id).await {
                    tracing::warn!(connection = %id, error = %e, "token expiry check failed");
                }
                // The close (if any) arrives through the outbox; re-arm in case the clock
                // of the store disagreed by a fraction of a second.
                expiry.as_mut().reset(tokio::time::Instant::now() + Duration::from_millis(250));
                continue;
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
            Some(Ok(Message::Close(frame))) => {
                // Answer the client's close with the same code, as RFC 6455 asks; without
                // an answer the client reports 1006.
                let echo = frame.map_or(Message::Close(None), |f| close_frame(f.code, ""));
                state.sockets.send(&id, echo).await;
                continue_until_closed(&mut closed, &mut stream).await;
                break;
            }
            Some(Err(e)) => {
                if let Some((code, reason)) = close_for_read_error(&e) {
                    tracing::info!(connection = %id, code, error = %e, "closing on a bad frame");
                    state.sockets.send(&id, close_frame(code, reason)).await;
                    continue_until_closed(&mut closed, &mut stream).await;
                }
                break;
            }
            None => break,
        };
        state.sockets.touch(&id);
        idle.as_mut()
            .reset(tokio::time::Instant::now() + limits.idle_timeout);
        let event = events::websocket(
            "$default",
            &id,
            connected_at_ms,
            HeaderMap::new(),
            QueryMap::default(),
            Some(body),
        );
        run_default(&state, &id, event).await;
        // No longer counted against its address once `connection_init` was accepted.
        if uninitialised.is_some() && is_initialised(&state.broker, &id).await {
            uninitialised = None;
        }
        if authority.is_none() {
            authority = authority_deadline(&state.broker, &id).await;
            if let Some(at) = authority {
                expiry.as_mut().reset(at);
            }
        }
    }

    state.sockets.remove(&id);
    init_timer.abort();
    // Let a queued close reach the client before the socket is dropped.
    let _ = tokio::time::timeout(CLOSE_GRACE, closed.wait_for(|c| *c)).await;
    writer.abort();
    drop(stream);
    drop(uninitialised);
    // `$disconnect` waits its turn in the clean-up, behind the sockets that closed before,
    // and never ahead of what the open sockets ask.
    state.cleanup.disconnected(id, connected_at_ms).await;
}

/// Whether the connection's `connection_init` was accepted; `false` when it cannot be read.
async fn is_initialised(broker: &Broker, id: &ConnectionId) -> bool {
    match broker.ports().connections.get(id).await {
        Ok(connection) => connection.is_some_and(|c| c.initialised),
        Err(e) => {
            tracing::warn!(connection = %id, error = %e, "reading the connection failed");
            false
        }
    }
}

/// How long a closing socket waits for the other side.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

fn close_frame(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.to_owned().into(),
    }))
}

/// After a close was queued: wait for the writer to send it, reading (and dropping) what the
/// client still sends, for at most [`CLOSE_GRACE`].
async fn continue_until_closed(
    closed: &mut tokio::sync::watch::Receiver<bool>,
    stream: &mut futures_util::stream::SplitStream<WebSocket>,
) {
    let drain = async {
        loop {
            tokio::select! {
                _ = closed.wait_for(|c| *c) => break,
                frame = stream.next() => if frame.is_none() { break },
            }
        }
    };
    let _ = tokio::time::timeout(CLOSE_GRACE, drain).await;
}

/// The close code API Gateway answers a bad frame with: 1009 for a frame or message over
/// its limits, 1007 for text that is not UTF-8. Other read errors end the socket silently
/// (the connection is already broken).
fn close_for_read_error(error: &axum::Error) -> Option<(u16, &'static str)> {
    use tungstenite::error::{CapacityError, Error};
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        match e.downcast_ref::<Error>() {
            Some(Error::Capacity(CapacityError::MessageTooLong { .. })) => {
                return Some((1009, "Message too big"));
            }
            Some(Error::Capacity(_)) => return Some((1009, "Frame too big")),
            Some(Error::Utf8(_)) => return Some((1007, "Invalid UTF-8")),
            Some(_) => return None,
            None => source = e.source(),
        }
    }
    None
}

/// When the connection's token expires, as an instant of the tokio clock.
async fn authority_deadline(broker: &Broker, id: &ConnectionId) -> Option<tokio::time::Instant> {
    let now = tokio::time::Instant::now();
    let exp_secs = broker.authority_deadline(id).await.ok().flatten()?;
    let left_ms = (exp_secs * 1000).saturating_sub(broker::domain::now_ms());
    Some(now + Duration::from_millis(left_ms))
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
        .await
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
    if state.sockets.send(&ConnectionId::new(id), close).await {
        StatusCode::NO_CONTENT.into_response()
    } else {
        gone()
    }
}
