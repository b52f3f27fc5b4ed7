//! The local mode, in-process on `127.0.0.1:0`, and clients for it.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use broker::{AuthConfig, BrokerConfig, DeliveryMode};
use futures_util::{SinkExt, StreamExt};
use local_gateway::{LocalGateway, Options};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long a test waits for a message it expects: generous, since machines are shared.
/// Never asserted as a performance bound.
pub const PATIENCE: Duration = Duration::from_secs(15);

pub const SECRET: &str = "test-secret-for-end-to-end-tests-0123456789";

/// The boards app, embedded, in `mode`.
pub fn options(mode: DeliveryMode) -> Options {
    Options {
        app: Arc::new(boards::Boards),
        auth: AuthConfig {
            secret: SECRET.to_owned(),
            issuer: None,
            audience: None,
            leeway_secs: broker::auth::DEFAULT_LEEWAY_SECS,
        },
        key_set: None,
        broker: BrokerConfig {
            delivery_mode: mode,
            ..BrokerConfig::default()
        },
        // Tests do not need Lambda's polling delay; the benchmark measures with it.
        poll_interval: Duration::ZERO,
        stream: Default::default(),
        backend: local_gateway::Backend::Memory,
        web: local_gateway::WebOptions::default(),
        limits: Default::default(),
    }
}

pub async fn start(options: Options) -> LocalGateway {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a free port");
    LocalGateway::start(listener, options)
        .await
        .expect("local gateway starts")
}

pub fn token(gateway: &LocalGateway, user: &str) -> String {
    gateway.broker().authenticator().mint(user, 3600)
}

/// GraphQL over HTTP as `token`'s user; returns the response body.
pub async fn http_graphql(
    gateway: &LocalGateway,
    token: &str,
    query: &str,
    variables: Value,
) -> Value {
    reqwest::Client::new()
        .post(gateway.graphql_url())
        .bearer_auth(token)
        .json(&json!({"query": query, "variables": variables}))
        .send()
        .await
        .expect("HTTP request")
        .json()
        .await
        .expect("JSON body")
}

/// Creates a board over HTTP and returns its id.
pub async fn create_board(gateway: &LocalGateway, token: &str, title: &str) -> String {
    let body = http_graphql(
        gateway,
        token,
        "mutation($t: String!) { createBoard(title: $t) { id } }",
        json!({"t": title}),
    )
    .await;
    body["data"]["createBoard"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("createBoard failed: {body}"))
        .to_owned()
}

pub async fn add_card(gateway: &LocalGateway, token: &str, board: &str, title: &str) -> Value {
    http_graphql(
        gateway,
        token,
        "mutation($b: ID!, $t: String!) { addCard(boardId: $b, title: $t) { id boardId title } }",
        json!({"b": board, "t": title}),
    )
    .await
}

/// A raw WebSocket client: frames in, frames out, as JSON.
pub struct WsClient {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub protocol: Option<String>,
}

/// How a connection attempt ended when the server refused the upgrade.
#[derive(Debug)]
pub struct Refused {
    pub status: u16,
}

impl WsClient {
    /// Connects offering `protocol` (if any), with `token` in the query string (if any).
    pub async fn connect(
        gateway: &LocalGateway,
        protocol: Option<&str>,
        token: Option<&str>,
    ) -> Result<Self, Refused> {
        let url = match token {
            Some(t) => format!("{}?token={t}", gateway.websocket_url()),
            None => gateway.websocket_url(),
        };
        let mut request = url.into_client_request().expect("valid URL");
        if let Some(p) = protocol {
            request
                .headers_mut()
                .insert("sec-websocket-protocol", HeaderValue::from_str(p).unwrap());
        }
        match tokio_tungstenite::connect_async(request).await {
            Ok((socket, response)) => Ok(Self {
                socket,
                protocol: response
                    .headers()
                    .get("sec-websocket-protocol")
                    .map(|v| v.to_str().unwrap().to_owned()),
            }),
            Err(WsError::Http(response)) => Err(Refused {
                status: response.status().as_u16(),
            }),
            Err(e) => panic!("connect failed: {e}"),
        }
    }

    /// Connects as [`Self::connect`] does, from the local address `from` (any of
    /// `127.0.0.0/8` reaches the gateway on Linux): a client of another address.
    pub async fn connect_from(
        gateway: &LocalGateway,
        from: std::net::IpAddr,
        protocol: Option<&str>,
    ) -> Result<Self, Refused> {
        let url = gateway.websocket_url();
        let mut request = url.as_str().into_client_request().expect("valid URL");
        if let Some(p) = protocol {
            request
                .headers_mut()
                .insert("sec-websocket-protocol", HeaderValue::from_str(p).unwrap());
        }
        let authority = request.uri().authority().expect("an authority").to_string();
        let server: std::net::SocketAddr = authority.parse().expect("host:port");
        let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
        socket
            .bind(std::net::SocketAddr::new(from, 0))
            .expect("bind the client address");
        let stream = socket.connect(server).await.expect("TCP connect");
        match tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(stream)).await {
            Ok((socket, response)) => Ok(Self {
                socket,
                protocol: response
                    .headers()
                    .get("sec-websocket-protocol")
                    .map(|v| v.to_str().unwrap().to_owned()),
            }),
            Err(WsError::Http(response)) => Err(Refused {
                status: response.status().as_u16(),
            }),
            Err(e) => panic!("connect failed: {e}"),
        }
    }

    /// Sends `connection_init` with the token and waits for the ack.
    pub async fn init(&mut self, token: &str) {
        self.send(json!({"type": "connection_init", "payload": {"token": token}}))
            .await;
        let ack = self.recv().await.expect("ack");
        assert_eq!(ack["type"], "connection_ack", "{ack}");
    }

    /// Connects, sends `connection_init` with the token and waits for the ack.
    pub async fn ready(gateway: &LocalGateway, protocol: &str, token: &str) -> Self {
        let mut client = Self::connect(gateway, Some(protocol), None)
            .await
            .expect("upgrade accepted");
        client
            .send(json!({"type": "connection_init", "payload": {"token": token}}))
            .await;
        let ack = client.recv().await.expect("ack");
        assert_eq!(ack["type"], "connection_ack", "{ack}");
        client
    }

    pub async fn send(&mut self, message: Value) {
        self.send_text(message.to_string()).await;
    }

    pub async fn send_text(&mut self, text: String) {
        self.socket
            .send(Message::Text(text.into()))
            .await
            .expect("send");
    }

    /// The next text frame as JSON; an error if the socket closes or nothing comes.
    pub async fn recv(&mut self) -> anyhow::Result<Value> {
        loop {
            let frame = tokio::time::timeout(PATIENCE, self.socket.next())
                .await
                .context("no message in time")?;
            match frame {
                Some(Ok(Message::Text(text))) => return Ok(serde_json::from_str(&text)?),
                Some(Ok(Message::Close(frame))) => {
                    bail!("closed: {frame:?}")
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(anyhow!(e)),
                None => bail!("stream ended"),
            }
        }
    }

    /// Waits for the server to close the socket; returns the close code.
    pub async fn closed(&mut self) -> anyhow::Result<u16> {
        loop {
            let frame = tokio::time::timeout(PATIENCE, self.socket.next())
                .await
                .context("not closed in time")?;
            match frame {
                Some(Ok(Message::Close(Some(frame)))) => return Ok(u16::from(frame.code)),
                Some(Ok(Message::Close(None))) => return Ok(u16::from(CloseCode::Status)),
                Some(Ok(Message::Text(text))) => bail!("expected a close, got {text}"),
                Some(Ok(_)) => continue,
                Some(Err(e)) => bail!("socket error instead of a close: {e}"),
                None => bail!("stream ended without a close frame"),
            }
        }
    }

    pub async fn subscribe(&mut self, id: &str, query: &str, variables: Value) {
        let kind = if self.protocol.as_deref() == Some("graphql-ws") {
            "start"
        } else {
            "subscribe"
        };
        self.send(
            json!({"id": id, "type": kind, "payload": {"query": query, "variables": variables}}),
        )
        .await;
    }

    /// The underlying socket, for frames the JSON helpers cannot express.
    pub fn socket_mut(&mut self) -> &mut WebSocketStream<MaybeTlsStream<TcpStream>> {
        &mut self.socket
    }

    /// Drops the TCP connection without a close handshake.
    pub async fn drop_abruptly(self) {
        drop(self.socket);
    }

    pub async fn close(mut self) {
        let _ = self.socket.close(None).await;
    }
}

pub const CARD_ADDED: &str =
    "subscription($b: ID!) { cardAdded(boardId: $b) { id boardId title } }";
pub const BOARD_CREATED: &str = "subscription { boardCreated { id title } }";

/// Waits until `condition` holds, polling; for state that changes after a socket event
/// (cleanup on disconnect). Fails after [`PATIENCE`].
pub async fn eventually(mut condition: impl AsyncFnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while tokio::time::Instant::now() < deadline {
        if condition().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

impl WsClient {
    /// Returns once the server has handled every frame sent before: each connection's
    /// frames are handled in order, so an answered ping (or, in the legacy protocol, which
    /// has no ping, an answered query) means earlier subscribes are registered.
    pub async fn sync(&mut self) {
        if self.protocol.as_deref() == Some("graphql-ws") {
            self.send(
                json!({"id": "sync", "type": "start", "payload": {"query": "{ boards { id } }"}}),
            )
            .await;
            let data = self.recv().await.expect("sync data");
            assert_eq!(
                (data["id"].as_str(), data["type"].as_str()),
                (Some("sync"), Some("data")),
                "{data}"
            );
            let complete = self.recv().await.expect("sync complete");
            assert_eq!(complete["type"], "complete", "{complete}");
        } else {
            self.send(json!({"type": "ping"})).await;
            let pong = self.recv().await.expect("pong");
            assert_eq!(pong["type"], "pong", "{pong}");
        }
    }
}

/// The scenario every backend must pass: all of Alice's frontends (one per subprotocol)
/// receive her new card, in their protocol's frame, with the event id; Bob, watching his own
/// boards, receives nothing of hers.
pub async fn users_are_isolated(gateway: &LocalGateway) {
    let (alice, bob) = (token(gateway, "alice"), token(gateway, "bob"));
    let board = create_board(gateway, &alice, "Alice's board").await;
    let mut tabs = Vec::new();
    for protocol in ["graphql-transport-ws", "graphql-ws"] {
        let mut tab = WsClient::ready(gateway, protocol, &alice).await;
        tab.subscribe("cards", CARD_ADDED, json!({"b": board}))
            .await;
        tab.sync().await;
        tabs.push(tab);
    }
    let mut bob_tab = WsClient::ready(gateway, "graphql-transport-ws", &bob).await;
    bob_tab.subscribe("boards", BOARD_CREATED, json!({})).await;
    bob_tab.sync().await;

    let added = add_card(gateway, &alice, &board, "Buy milk").await;
    let card = &added["data"]["addCard"];
    assert_eq!(card["title"], "Buy milk", "{added}");
    for (tab, kind) in tabs.iter_mut().zip(["next", "data"]) {
        let message = tab.recv().await.unwrap();
        assert_eq!(message["type"], kind, "{message}");
        assert_eq!(message["id"], "cards");
        assert_eq!(&message["payload"]["data"]["cardAdded"], card);
        assert!(message["payload"]["extensions"]["eventId"].is_string());
    }
    // Bob's first message is his own board, not Alice's card: events reach subscribers in
    // publish order, so hers would have come first.
    let bobs_board = create_board(gateway, &bob, "Bob's board").await;
    let message = bob_tab.recv().await.unwrap();
    assert_eq!(
        message["payload"]["data"]["boardCreated"]["id"],
        bobs_board.as_str(),
        "{message}"
    );
}
