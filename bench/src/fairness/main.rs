//! `broker-fairness-bench`: whether one user's publish storm delays another user's delivery.
//!
//! Each case starts the local mode on the embedded store (stream or direct delivery). A
//! canary user has one board watched by one socket of his own; he adds a card, waits for it
//! to arrive on his socket, and adds the next, measuring each mutation-to-own-delivery
//! time. First alone (`quiet`), then while a flooding user keeps `--flood-in-flight` card
//! mutations in flight on his own board, watched by `--flood-subscribers` sockets of his
//! own (`flood`). The flood's sockets are read all along. A flood phase ends after
//! `--samples` canary cards or `--flood-seconds`, whichever comes first: a canary card that
//! arrives only after that is reported as such.
//!
//! Each case runs with the per-user limits off (the scheduling alone: what a backend's
//! publishes, which no user limit counts, or a raised limit would send) and on, at their
//! defaults: the flooder then floods at his limit, his refused mutations (`RATE_LIMITED`)
//! counted apart, and the canary keeps under his own, one card per `--paced-ms` at most.
//!
//! ```sh
//! cargo run --release -p broker-bench --bin broker-fairness-bench
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use broker::{AuthConfig, BrokerConfig, DeliveryMode};
use broker_bench::stats::Latencies;
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use local_gateway::stream::StreamOptions;
use local_gateway::{Backend, LocalGateway, Options};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "A canary user's delivery latency, quiet and while another user floods"
)]
struct Cli {
    /// Canary cards per phase.
    #[arg(long, default_value_t = 100)]
    samples: usize,
    /// Mutations the flooding user keeps in flight.
    #[arg(long, default_value_t = 64)]
    flood_in_flight: usize,
    /// Sockets of the flooding user watching his board.
    #[arg(long, default_value_t = 20)]
    flood_subscribers: usize,
    /// Longest flood phase, in seconds.
    #[arg(long, default_value_t = 25)]
    flood_seconds: u64,
    /// Flood mutations sent (accepted or refused) before the canary starts measuring.
    #[arg(long, default_value_t = 500)]
    flood_warmup: u64,
    /// The per-user limits: `off`, `on` (their defaults) or `both`.
    #[arg(long, default_value = "both")]
    limits: Limits,
    /// With the limits on, the canary's least time between two cards (his limit is 40
    /// publishes per 2 s).
    #[arg(long, default_value_t = 60)]
    paced_ms: u64,
    /// The local stream's records of one topic read ahead at most (`StreamOptions::per_topic`);
    /// as many as its whole window (10 000) is one window shared by every topic.
    #[arg(long, default_value_t = StreamOptions::default().per_topic)]
    per_topic: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Limits {
    Off,
    On,
    Both,
}

const SECRET: &str = "fairness-benchmark-secret-0123456789abcdef";
const CARD_ADDED: &str = "subscription($b: ID!) { cardAdded(boardId: $b) { id boardId title } }";
const ADD_CARD: &str = "mutation($b: ID!, $t: String!) { addCard(boardId: $b, title: $t) { id } }";

/// One phase's canary figures.
#[derive(Debug)]
struct Phase {
    latencies: Vec<Duration>,
    flood_mutations: u64,
    flood_refused: u64,
    flood_deliveries: u64,
    elapsed: Duration,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    println!(
        "canary: {} cards per phase; flood: {} mutations in flight, {} subscribers, at most {} s \
         ({} build, embedded store, {} records of one topic read ahead)",
        cli.samples,
        cli.flood_in_flight,
        cli.flood_subscribers,
        cli.flood_seconds,
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        cli.per_topic,
    );
    println!(
        "| mode | limits | phase | canary p50 | canary p99 | canary max | samples | flood mutations/s | flood refused/s | flood deliveries/s |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let limits: &[bool] = match cli.limits {
        Limits::Off => &[false],
        Limits::On => &[true],
        Limits::Both => &[false, true],
    };
    for mode in [DeliveryMode::Stream, DeliveryMode::Direct] {
        for (&limited, flood) in limits.iter().flat_map(|l| [(l, false), (l, true)]) {
            let phase = measure(&cli, mode, limited, flood)
                .await
                .with_context(|| format!("{mode:?} limits={limited} flood={flood}"))?;
            let mut latencies = Latencies::new();
            for latency in &phase.latencies {
                latencies.record(*latency);
            }
            let p = latencies.summary();
            let secs = phase.elapsed.as_secs_f64().max(f64::EPSILON);
            println!(
                "| {mode:?} | {} | {} | {:.1} ms | {:.1} ms | {:.1} ms | {} | {:.0} | {:.0} | {:.0} |",
                if limited { "on" } else { "off" },
                if flood { "flood" } else { "quiet" },
                p.p50,
                p.p99,
                p.max,
                p.count,
                phase.flood_mutations as f64 / secs,
                phase.flood_refused as f64 / secs,
                phase.flood_deliveries as f64 / secs,
            );
        }
    }
    Ok(())
}

fn options(cli: &Cli, mode: DeliveryMode, limited: bool) -> Options {
    let broker = BrokerConfig {
        delivery_mode: mode,
        ..BrokerConfig::default()
    };
    Options {
        app: Arc::new(boards::Boards),
        auth: AuthConfig {
            secret: SECRET.to_owned(),
            issuer: None,
            audience: None,
            leeway_secs: broker::auth::DEFAULT_LEEWAY_SECS,
        },
        key_set: None,
        broker: if limited {
            broker
        } else {
            broker.without_user_limits()
        },
        poll_interval: Duration::ZERO,
        stream: StreamOptions {
            per_topic: cli.per_topic,
            ..StreamOptions::default()
        },
        backend: Backend::Memory,
        web: local_gateway::WebOptions::default(),
        limits: local_gateway::server::Limits::default(),
    }
}

/// A GraphQL client of one user.
#[derive(Clone)]
struct User {
    http: reqwest::Client,
    url: String,
    token: String,
}

/// How a flood mutation ended.
enum Sent {
    Accepted,
    RateLimited,
    Failed,
}

impl User {
    async fn send(&self, query: &str, variables: Value) -> Sent {
        let body: Value = match self.post(query, variables).await {
            Ok(body) => body,
            Err(_) => return Sent::Failed,
        };
        match body["errors"][0]["extensions"]["code"].as_str() {
            None if body["errors"].is_null() => Sent::Accepted,
            Some(broker::RATE_LIMITED) => Sent::RateLimited,
            _ => Sent::Failed,
        }
    }

    async fn post(&self, query: &str, variables: Value) -> anyhow::Result<Value> {
        Ok(self
            .http
            .post(&self.url)
            .bearer_auth(&self.token)
            .json(&json!({"query": query, "variables": variables}))
            .send()
            .await?
            .json()
            .await?)
    }

    async fn graphql(&self, query: &str, variables: Value) -> anyhow::Result<Value> {
        let body = self.post(query, variables).await?;
        if !body["errors"].is_null() {
            bail!("GraphQL errors: {body}");
        }
        Ok(body["data"].clone())
    }

    async fn board(&self, title: &str) -> anyhow::Result<String> {
        let data = self
            .graphql(
                "mutation($t: String!) { createBoard(title: $t) { id } }",
                json!({ "t": title }),
            )
            .await?;
        Ok(data["createBoard"]["id"]
            .as_str()
            .context("a board id")?
            .to_owned())
    }
}

async fn measure(
    cli: &Cli,
    mode: DeliveryMode,
    limited: bool,
    flood: bool,
) -> anyhow::Result<Phase> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let gateway = LocalGateway::start(listener, options(cli, mode, limited)).await?;
    let user = |name: &str| User {
        http: reqwest::Client::new(),
        url: gateway.graphql_url(),
        token: gateway.broker().authenticator().mint(name, 3600),
    };
    let canary = user("canary");
    let flooder = user("flooder");
    let canary_board = canary.board("canary").await?;
    let mut canary_socket = subscribe(&gateway, &canary.token, &canary_board).await?;

    let stop = Arc::new(AtomicBool::new(false));
    let mutations = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let deliveries = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    if flood {
        let board = flooder.board("flood").await?;
        for _ in 0..cli.flood_subscribers {
            let mut socket = subscribe(&gateway, &flooder.token, &board).await?;
            let deliveries = deliveries.clone();
            tasks.push(tokio::spawn(async move {
                while let Some(Ok(frame)) = socket.next().await {
                    if matches!(frame, Message::Text(_)) {
                        deliveries.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
        for worker in 0..cli.flood_in_flight {
            let (flooder, board, stop, mutations, refused) = (
                flooder.clone(),
                board.clone(),
                stop.clone(),
                mutations.clone(),
                refused.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let title = format!("flood {worker}-{n}");
                    match flooder
                        .send(ADD_CARD, json!({"b": board, "t": title}))
                        .await
                    {
                        Sent::Accepted => mutations.fetch_add(1, Ordering::Relaxed),
                        Sent::RateLimited => refused.fetch_add(1, Ordering::Relaxed),
                        Sent::Failed => 0,
                    };
                    n += 1;
                }
            }));
        }
        while mutations.load(Ordering::Relaxed) + refused.load(Ordering::Relaxed) < cli.flood_warmup
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    let started = Instant::now();
    let (mutations_before, refused_before, deliveries_before) = (
        mutations.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed),
        deliveries.load(Ordering::Relaxed),
    );
    let pace = Duration::from_millis(if limited { cli.paced_ms } else { 0 });
    let limit = Duration::from_secs(cli.flood_seconds);
    let mut latencies = Vec::new();
    for n in 0..cli.samples {
        if flood && started.elapsed() >= limit {
            break;
        }
        let title = format!("canary {n}");
        let sent = Instant::now();
        let next_send = sent + pace;
        canary
            .graphql(ADD_CARD, json!({"b": canary_board, "t": title}))
            .await?;
        // Wait for this card, however long it takes: the phase's limit only stops new ones.
        loop {
            let message = next(&mut canary_socket).await?;
            if message["type"] == "next"
                && message["payload"]["data"]["cardAdded"]["title"] == title.as_str()
            {
                latencies.push(sent.elapsed());
                break;
            }
        }
        tokio::time::sleep_until(next_send.into()).await;
    }
    let elapsed = started.elapsed();
    let phase = Phase {
        latencies,
        flood_mutations: mutations.load(Ordering::Relaxed) - mutations_before,
        flood_refused: refused.load(Ordering::Relaxed) - refused_before,
        flood_deliveries: deliveries.load(Ordering::Relaxed) - deliveries_before,
        elapsed,
    };
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.abort();
    }
    canary_socket.close(None).await.ok();
    gateway.shutdown().await;
    Ok(phase)
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A `graphql-transport-ws` socket subscribed to `board`'s cards, once the subscription is
/// stored (the pong after it says so: one connection's frames are handled in order).
async fn subscribe(gateway: &LocalGateway, token: &str, board: &str) -> anyhow::Result<Socket> {
    let mut request = gateway.websocket_url().into_client_request()?;
    request.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_static("graphql-transport-ws"),
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await?;
    let init = json!({"type": "connection_init", "payload": {"token": token}});
    socket.send(Message::Text(init.to_string().into())).await?;
    let ack = next(&mut socket).await?;
    if ack["type"] != "connection_ack" {
        bail!("expected connection_ack, got {ack}");
    }
    let payload = json!({"query": CARD_ADDED, "variables": {"b": board}});
    let subscribe = json!({"id": "cards", "type": "subscribe", "payload": payload});
    socket
        .send(Message::Text(subscribe.to_string().into()))
        .await?;
    socket
        .send(Message::Text(json!({"type": "ping"}).to_string().into()))
        .await?;
    while next(&mut socket).await?["type"] != "pong" {}
    Ok(socket)
}

async fn next(socket: &mut Socket) -> anyhow::Result<Value> {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(120), socket.next())
            .await
            .context("no message for 120 s")?
            .context("socket ended")??;
        if let Message::Text(text) = frame {
            let message: Value = serde_json::from_str(&text)?;
            if message["type"] == "error" {
                bail!("error message: {message}");
            }
            return Ok(message);
        }
    }
}
