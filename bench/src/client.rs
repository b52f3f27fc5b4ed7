//! The clients: subscribers over WebSocket (`graphql-transport-ws`) and the mutation client
//! over HTTP.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The subscription every subscriber sends: the board's new cards.
pub const SUBSCRIPTION: &str = "subscription($b: ID!) { cardAdded(boardId: $b) { id title } }";
/// The mutation whose deliveries are measured.
pub const ADD_CARD: &str =
    "mutation($b: ID!, $t: String!) { addCard(boardId: $b, title: $t) { id } }";
const CREATE_BOARD: &str = "mutation($t: String!) { createBoard(title: $t) { id } }";

/// How long one step of opening a subscriber may take before it counts as failed.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Card titles carry the run's tag and the mutation's sequence number, so a delivery is
/// matched to its mutation (and cards of other runs on a shared board are told apart).
#[derive(Clone, Debug)]
pub struct Titles {
    prefix: String,
    warm_up: String,
}

impl Titles {
    /// Titles tagged with `tag`.
    pub fn new(tag: &str) -> Self {
        Self {
            prefix: format!("bench {tag} #"),
            warm_up: format!("bench {tag} warm-up"),
        }
    }

    /// The title of the mutations sent before measuring (they open the HTTP connections
    /// on both sides); their deliveries are counted apart.
    pub fn warm_up(&self) -> &str {
        &self.warm_up
    }

    /// The title of mutation number `seq`.
    pub fn title(&self, seq: usize) -> String {
        format!("{}{seq}", self.prefix)
    }

    /// The sequence number of a title of this run, `None` for any other title.
    pub fn seq(&self, title: &str) -> Option<usize> {
        title.strip_prefix(&self.prefix)?.parse().ok()
    }
}

/// A subscriber whose subscription the server has handled.
pub struct Subscriber {
    socket: Socket,
}

impl std::fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscriber").finish_non_exhaustive()
    }
}

impl Subscriber {
    /// Connects, authenticates with `connection_init`, subscribes to the board's cards,
    /// and proves the subscribe was handled with a `ping`/`pong` round trip (the server
    /// handles one connection's frames in order).
    pub async fn open(url: &str, token: &str, board: &str) -> anyhow::Result<Self> {
        let mut request = url.into_client_request().context("WebSocket URL")?;
        request.headers_mut().insert(
            "sec-websocket-protocol",
            HeaderValue::from_static("graphql-transport-ws"),
        );
        // Small buffers: thousands of these share the machine with the broker.
        let config = WebSocketConfig::default()
            .read_buffer_size(8 * 1024)
            .write_buffer_size(0);
        let (socket, _) = tokio::time::timeout(
            STEP_TIMEOUT,
            tokio_tungstenite::connect_async_with_config(request, Some(config), true),
        )
        .await
        .context("connect timed out")?
        .context("connect")?;
        let mut subscriber = Self { socket };
        subscriber
            .send(json!({"type": "connection_init", "payload": {"token": token}}))
            .await?;
        subscriber.expect("connection_ack").await?;
        subscriber
            .send(json!({
                "id": "1",
                "type": "subscribe",
                "payload": {"query": SUBSCRIPTION, "variables": {"b": board}},
            }))
            .await?;
        subscriber.send(json!({"type": "ping"})).await?;
        subscriber.expect("pong").await?;
        Ok(subscriber)
    }

    /// Closes the socket and waits (at most 5 s) for the server's answer.
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            if self.socket.close(None).await.is_ok() {
                while let Some(Ok(_)) = self.socket.next().await {}
            }
        })
        .await;
    }

    async fn send(&mut self, message: Value) -> anyhow::Result<()> {
        self.socket
            .send(Message::Text(message.to_string().into()))
            .await
            .context("send")
    }

    /// Waits for a message of type `kind`; anything else but a ping is an error.
    async fn expect(&mut self, kind: &str) -> anyhow::Result<()> {
        loop {
            let frame = tokio::time::timeout(STEP_TIMEOUT, self.socket.next())
                .await
                .with_context(|| format!("no {kind} in {STEP_TIMEOUT:?}"))?;
            let text = match frame {
                Some(Ok(Message::Text(text))) => text,
                Some(Ok(Message::Close(close))) => bail!("closed waiting for {kind}: {close:?}"),
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(anyhow!(e).context(format!("waiting for {kind}"))),
                None => bail!("socket ended waiting for {kind}"),
            };
            let message: Value = serde_json::from_str(&text).context("frame is not JSON")?;
            match message["type"].as_str() {
                Some(t) if t == kind => return Ok(()),
                Some("ping") => self.send(json!({"type": "pong"})).await?,
                _ => bail!("expected {kind}, got {message}"),
            }
        }
    }

    /// Records every `next` until `stop` turns true, then closes the socket.
    pub async fn listen(
        mut self,
        titles: Titles,
        clock: Instant,
        mut stop: watch::Receiver<bool>,
        counters: Arc<Counters>,
    ) -> Listened {
        let mut listened = Listened::default();
        loop {
            let frame = tokio::select! {
                frame = self.socket.next() => frame,
                _ = stop.wait_for(|stop| *stop) => break,
            };
            let at_us = clock.elapsed().as_micros() as u64;
            let text = match frame {
                Some(Ok(Message::Text(text))) => text,
                Some(Ok(Message::Close(close))) => {
                    listened.error = Some(format!("closed by the server: {close:?}"));
                    return listened;
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => {
                    listened.error = Some(e.to_string());
                    return listened;
                }
                None => {
                    listened.error = Some("socket ended".to_owned());
                    return listened;
                }
            };
            let Ok(message) = serde_json::from_str::<Value>(&text) else {
                listened.unexpected += 1;
                continue;
            };
            match message["type"].as_str() {
                Some("next") => {
                    let title = message["payload"]["data"]["cardAdded"]["title"].as_str();
                    if title == Some(titles.warm_up()) {
                        counters.warm_up.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    counters.received.fetch_add(1, Ordering::Relaxed);
                    match title.and_then(|t| titles.seq(t)) {
                        Some(seq) => listened.deliveries.push((seq, at_us)),
                        None => listened.unexpected += 1,
                    }
                }
                Some("ping") => {
                    let pong = Message::Text(json!({"type": "pong"}).to_string().into());
                    let _ = self.socket.send(pong).await;
                }
                Some("pong") => {}
                _ => {
                    listened.error = Some(format!("unexpected message: {message}"));
                }
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), self.socket.close(None)).await;
        listened
    }
}

/// Deliveries received so far by every subscriber of a case.
#[derive(Debug, Default)]
pub struct Counters {
    /// Deliveries of measured mutations (and frames that could not be matched).
    pub received: AtomicU64,
    /// Deliveries of warm-up mutations.
    pub warm_up: AtomicU64,
}

/// What one subscriber received.
#[derive(Debug, Default)]
pub struct Listened {
    /// `(sequence number, microseconds since the case's clock started)` per `next`.
    pub deliveries: Vec<(usize, u64)>,
    /// Frames that were not a delivery of this run.
    pub unexpected: u64,
    /// The socket failed, or the server said something the benchmark did not expect.
    pub error: Option<String>,
}

/// GraphQL over HTTP as one user.
#[derive(Clone)]
pub struct GraphqlHttp {
    client: reqwest::Client,
    url: String,
    token: String,
}

impl std::fmt::Debug for GraphqlHttp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        f.debug_struct("GraphqlHttp")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl GraphqlHttp {
    /// A client posting to `url` with `token` as the bearer.
    pub fn new(url: &str, token: &str) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()?;
        Ok(Self {
            client,
            url: url.to_owned(),
            token: token.to_owned(),
        })
    }

    async fn execute(&self, query: &str, variables: Value) -> anyhow::Result<Value> {
        let response = self
            .client
            .post(&self.url)
            .bearer_auth(&self.token)
            .json(&json!({"query": query, "variables": variables}))
            .send()
            .await
            .context("POST /graphql")?;
        let status = response.status();
        let body: Value = response.json().await.context("response is not JSON")?;
        if let Some(errors) = body.get("errors") {
            bail!("HTTP {status}: {errors}");
        }
        if !status.is_success() {
            bail!("HTTP {status}: {body}");
        }
        Ok(body)
    }

    /// Creates a board titled `title`; its id.
    pub async fn create_board(&self, title: &str) -> anyhow::Result<String> {
        let body = self.execute(CREATE_BOARD, json!({"t": title})).await?;
        body["data"]["createBoard"]["id"]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("createBoard returned no id: {body}"))
    }

    /// Adds a card; `Ok` once the response says the card was added.
    pub async fn add_card(&self, board: &str, title: &str) -> anyhow::Result<()> {
        let body = self
            .execute(ADD_CARD, json!({"b": board, "t": title}))
            .await?;
        match body["data"]["addCard"]["id"].as_str() {
            Some(_) => Ok(()),
            None => bail!("addCard returned no id: {body}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_round_trip_and_ignore_other_runs() {
        let titles = Titles::new("abc");
        assert_eq!(titles.seq(&titles.title(42)), Some(42));
        assert_eq!(Titles::new("other").seq(&titles.title(42)), None);
        assert_eq!(titles.seq("bench abc #x"), None);
    }
}
