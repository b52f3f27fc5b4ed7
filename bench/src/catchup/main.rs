//! `broker-catchup-bench`: how long a subscriber that was away while events were published
//! takes to catch up by resuming (`extensions.resumeFrom`), on each store of the local mode:
//! the database file, memory, and DynamoDB (moto) when an endpoint is given.
//!
//! One case: a board and one subscriber, which receives one card (its cursor) and
//! disconnects; `--events` cards are added while it is away; then a new socket subscribes
//! with `resumeFrom` set to the cursor. Measured from sending that `subscribe` to the first
//! and to the last replayed card (every card once, by event id).
//!
//! ```sh
//! scripts/with-moto cargo run --release -p broker-bench --bin broker-catchup-bench
//! ```

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use broker::aws::TableNames;
use broker::{AuthConfig, BrokerConfig, DeliveryMode};
use clap::Parser;
use futures_util::{SinkExt, StreamExt, TryStreamExt};
use local_gateway::aws::AwsBackend;
use local_gateway::{Backend, LocalGateway, Options};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

#[derive(Parser, Debug)]
#[command(version, about = "Catch-up time of a resuming subscriber, per store")]
struct Cli {
    /// Events published while the subscriber is away.
    #[arg(long, default_value_t = 1000)]
    events: usize,
    /// Cases per store; the table shows the median and the range.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// A DynamoDB endpoint (moto) to measure too; `scripts/with-moto` sets it.
    #[arg(long, env = "MOTO_ENDPOINT")]
    moto: Option<String>,
    /// Mutations in flight while publishing.
    #[arg(long, default_value_t = 8)]
    publish_concurrency: usize,
}

const SECRET: &str = "catch-up-benchmark-secret-0123456789abcdef";
const CARD_ADDED: &str = "subscription($b: ID!) { cardAdded(boardId: $b) { id boardId title } }";

#[derive(Clone, Copy, Debug, PartialEq)]
enum Store {
    File,
    Memory,
    DynamoDb,
}

impl Store {
    fn name(self) -> &'static str {
        match self {
            Store::File => "file (redb)",
            Store::Memory => "memory",
            Store::DynamoDb => "DynamoDB (moto)",
        }
    }
}

struct Case {
    first: Duration,
    last: Duration,
    repeats: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut stores = vec![Store::File, Store::Memory];
    if cli.moto.is_some() {
        stores.push(Store::DynamoDb);
    }
    let dir = std::env::temp_dir().join(format!("broker-catchup-{}", ulid::Ulid::new()));
    println!(
        "catch-up of {} events, {} runs per store ({} build)",
        cli.events,
        cli.runs,
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
    println!(
        "| store | first replayed event | last replayed event (all {}) | repeats |",
        cli.events
    );
    println!("|---|---|---|---|");
    for store in stores {
        let mut cases = Vec::new();
        for run in 0..cli.runs {
            let backend = match store {
                Store::File => Backend::File(dir.join(format!("run-{run}.redb"))),
                Store::Memory => Backend::Memory,
                Store::DynamoDb => {
                    let prefix =
                        format!("catchup-{}", ulid::Ulid::new().to_string().to_lowercase());
                    Backend::Aws(AwsBackend {
                        endpoint: cli.moto.clone(),
                        tables: TableNames::new(
                            format!("{prefix}-connections"),
                            format!("{prefix}-subscriptions"),
                            format!("{prefix}-events"),
                        ),
                        app_tables: AwsBackend::app_table_names(
                            &boards::Boards,
                            &format!("{prefix}-"),
                        ),
                        fanout_queue_url: None,
                        create_tables: true,
                    })
                }
            };
            let case = measure(&cli, backend)
                .await
                .with_context(|| format!("{} run {run}", store.name()))?;
            cases.push(case);
        }
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let summary = |pick: fn(&Case) -> Duration| {
            let mut values: Vec<f64> = cases.iter().map(|c| ms(pick(c))).collect();
            values.sort_by(f64::total_cmp);
            format!(
                "{:.0} ms ({:.0}–{:.0})",
                values[values.len() / 2],
                values[0],
                values[values.len() - 1]
            )
        };
        println!(
            "| {} | {} | {} | {} |",
            store.name(),
            summary(|c| c.first),
            summary(|c| c.last),
            cases.iter().map(|c| c.repeats).max().unwrap_or_default()
        );
    }
    std::fs::remove_dir_all(&dir).ok();
    Ok(())
}

fn options(backend: Backend) -> Options {
    Options {
        app: Arc::new(boards::Boards),
        auth: AuthConfig {
            secret: SECRET.to_owned(),
            issuer: None,
            audience: None,
            leeway_secs: broker::auth::DEFAULT_LEEWAY_SECS,
        },
        key_set: None,
        // One user resumes many times over: what a replay costs, not the per-user rate
        // that bounds how often one user may pay it.
        broker: BrokerConfig {
            delivery_mode: DeliveryMode::Stream,
            ..BrokerConfig::default().without_user_limits()
        },
        poll_interval: Duration::ZERO,
        stream: Default::default(),
        backend,
        web: local_gateway::WebOptions::default(),
        // The local gateway's own limits, from the environment as `broker-local` reads them
        // (SOCKET_OUTBOX_FRAMES: a replay sends as fast as the store answers, and a client
        // more than that many frames behind is closed with 1013, then resumes again).
        limits: local_gateway::server::Limits::from_env().unwrap_or_else(|error| {
            eprintln!("ignoring the local gateway's limits from the environment: {error}");
            Default::default()
        }),
    }
}

async fn measure(cli: &Cli, backend: Backend) -> anyhow::Result<Case> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let gateway = LocalGateway::start(listener, options(backend)).await?;
    let token = gateway.broker().authenticator().mint("alice", 3600);
    let http = reqwest::Client::new();
    let graphql = async |query: &str, variables: Value| -> anyhow::Result<Value> {
        let body: Value = http
            .post(gateway.graphql_url())
            .bearer_auth(&token)
            .json(&json!({"query": query, "variables": variables}))
            .send()
            .await?
            .json()
            .await?;
        if !body["errors"].is_null() {
            bail!("GraphQL errors: {body}");
        }
        Ok(body["data"].clone())
    };
    let board = graphql(
        r#"mutation { createBoard(title: "away") { id } }"#,
        json!({}),
    )
    .await?["createBoard"]["id"]
        .as_str()
        .context("a board id")?
        .to_owned();
    let add_card = "mutation($b: ID!, $t: String!) { addCard(boardId: $b, title: $t) { id } }";

    // The subscriber's cursor: the one card it received before going away.
    let mut socket = subscribe(&gateway, &token, &board, None).await?;
    // A subscription receives only events published after it was stored: the pong says
    // it is (one connection's frames are handled in order).
    let ping = json!({"type": "ping"});
    socket.send(Message::Text(ping.to_string().into())).await?;
    while next(&mut socket).await?["type"] != "pong" {}
    graphql(add_card, json!({"b": board, "t": "seen"})).await?;
    let cursor = loop {
        let message = next(&mut socket).await?;
        if message["type"] == "next" {
            break event_id(&message)?;
        }
    };
    socket.close(None).await.ok();

    futures_util::stream::iter(0..cli.events)
        .map(|n| graphql(add_card, json!({"b": board, "t": format!("missed {n}")})))
        .buffer_unordered(cli.publish_concurrency)
        .try_collect::<Vec<_>>()
        .await?;

    let started = Instant::now();
    let mut socket = subscribe(&gateway, &token, &board, Some(&cursor)).await?;
    let mut seen = HashSet::new();
    let mut first = None;
    let mut repeats = 0;
    while seen.len() < cli.events {
        let message = next(&mut socket).await?;
        if message["type"] != "next" {
            continue;
        }
        first.get_or_insert_with(|| started.elapsed());
        if !seen.insert(event_id(&message)?) {
            repeats += 1;
        }
    }
    let last = started.elapsed();
    socket.close(None).await.ok();
    gateway.shutdown().await;
    Ok(Case {
        first: first.unwrap_or(last),
        last,
        repeats,
    })
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A `graphql-transport-ws` socket, initialised, with its `subscribe` sent.
async fn subscribe(
    gateway: &LocalGateway,
    token: &str,
    board: &str,
    resume_from: Option<&str>,
) -> anyhow::Result<Socket> {
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
    let mut payload = json!({"query": CARD_ADDED, "variables": {"b": board}});
    if let Some(cursor) = resume_from {
        payload["extensions"] = json!({ "resumeFrom": cursor });
    }
    let subscribe = json!({"id": "cards", "type": "subscribe", "payload": payload});
    socket
        .send(Message::Text(subscribe.to_string().into()))
        .await?;
    Ok(socket)
}

async fn next(socket: &mut Socket) -> anyhow::Result<Value> {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(60), socket.next())
            .await
            .context("no message for 60 s")?
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

fn event_id(message: &Value) -> anyhow::Result<String> {
    Ok(message["payload"]["extensions"]["eventId"]
        .as_str()
        .with_context(|| format!("no event id in {message}"))?
        .to_owned())
}
