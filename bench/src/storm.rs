//! Two storms against `broker-local` started as a child process (the release binary next to
//! this one, or `--gateway-bin`), on a fresh database file (or `--store memory`):
//!
//! - `--close-storm N`: opens N subscribed `graphql-transport-ws` sockets, drops them all at
//!   once (their TCP connections end without a close handshake), and right away, one after
//!   another for `--probe-secs`, opens a socket of another user and times its upgrade and
//!   its `connection_init` round trip (to `connection_ack`). Reports their p50/p99/max, the
//!   first probe's, and the gateway's CPU time over the window.
//! - `--mutation-burst N` (per `--modes`, direct and stream): a few subscribers on a board,
//!   then N `addCard` mutations sent all at once over HTTP. Reports how many failed with
//!   `PUBLISH_TIMEOUT` (and otherwise), the mutations per second, their latency p50/p99/max,
//!   and every subscriber's deliveries: lost and duplicated ones are counted.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use broker::{AuthConfig, Authenticator};
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use crate::client::{Counters, GraphqlHttp, Subscriber, Titles};
use crate::config::Mode;
use crate::limits;
use crate::stats::{Latencies, Percentiles};

/// What the storms run against.
#[derive(Clone, Debug)]
pub struct StormConfig {
    /// `broker-local` to start.
    pub gateway_bin: PathBuf,
    /// `memory`, or `None` for a fresh database file in a temporary folder.
    pub store: Option<String>,
    /// Sockets being opened at once.
    pub connect_concurrency: usize,
}

/// Kills the child, and removes the database folder, on every way out.
struct Gateway {
    child: Child,
    dir: Option<PathBuf>,
    listen: String,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

impl Gateway {
    fn start(config: &StormConfig, mode: &str) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let listen = format!("127.0.0.1:{port}");
        let (store, dir) = match &config.store {
            Some(store) => (store.clone(), None),
            None => {
                let dir = std::env::temp_dir().join(format!("broker-storm-{}", ulid::Ulid::new()));
                let file = dir.join("storm.redb");
                (format!("file:{}", file.display()), Some(dir))
            }
        };
        let child = Command::new(&config.gateway_bin)
            .args(["serve", "--listen", &listen, "--store", &store])
            .env_remove("JWT_SECRET")
            .env("DELIVERY_MODE", mode)
            .env("STREAM_POLL_INTERVAL_MS", "0")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", config.gateway_bin.display()))?;
        Ok(Self { child, dir, listen })
    }

    /// User and system CPU time of the gateway so far.
    fn cpu(&self) -> Duration {
        cpu_of(self.child.id()).unwrap_or_default()
    }
}

/// `utime + stime` of `/proc/PID/stat`.
fn cpu_of(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // `USER_HZ`, which Linux fixes at 100 for user space.
    Some(Duration::from_millis(ticks * 10))
}

async fn wait_healthy(base: &str) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(r) = client.get(format!("{base}/health")).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("the gateway did not answer /health in 30 s")
}

fn mint(user: &str) -> String {
    Authenticator::new(AuthConfig {
        secret: broker::auth::DEVELOPMENT_SECRET.to_owned(),
        issuer: None,
        audience: None,
        leeway_secs: broker::auth::DEFAULT_LEEWAY_SECS,
    })
    .mint(user, 3_600)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

async fn open_many(
    url: &str,
    token: &str,
    board: &str,
    n: usize,
    concurrency: usize,
) -> anyhow::Result<Vec<Subscriber>> {
    let opened: Vec<anyhow::Result<Subscriber>> = futures_util::stream::iter(0..n)
        .map(|_| Subscriber::open(url, token, board))
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    let mut subscribers = Vec::with_capacity(n);
    for result in opened {
        subscribers.push(result?);
    }
    Ok(subscribers)
}

/// What `--close-storm` measured.
#[derive(Clone, Debug)]
pub struct CloseStormReport {
    /// The store the gateway ran on.
    pub store: String,
    /// Sockets dropped at once.
    pub sockets: usize,
    /// Probes run in the window.
    pub probes: usize,
    /// Probes that failed (refused, closed, or no ack in 60 s).
    pub failed: usize,
    /// The upgrade (`$connect`) of the probes.
    pub upgrade: Percentiles,
    /// Their `connection_init` round trip.
    pub init: Percentiles,
    /// The first probe's `connection_init` round trip, in ms.
    pub first_init_ms: f64,
    /// Milliseconds from the drop until a probe's round trip was last above 100 ms.
    pub slow_until_ms: f64,
    /// The gateway's CPU seconds over the window.
    pub cpu_secs: f64,
    /// The window, in seconds.
    pub window_secs: f64,
}

impl CloseStormReport {
    /// The figures as a Markdown table row, after [`CloseStormReport::HEADER`].
    pub fn markdown(&self) -> String {
        format!(
            "| {store} | {n} | {probes} ({failed} failed) | {up50:.1} / {upmax:.1} | \
             {p50:.1} / {p99:.1} / {max:.1} | {first:.1} | {slow:.0} | {cpu:.1} s in {window:.0} s |",
            store = self.store,
            n = self.sockets,
            probes = self.probes,
            failed = self.failed,
            up50 = self.upgrade.p50,
            upmax = self.upgrade.max,
            p50 = self.init.p50,
            p99 = self.init.p99,
            max = self.init.max,
            first = self.first_init_ms,
            slow = self.slow_until_ms,
            cpu = self.cpu_secs,
            window = self.window_secs,
        )
    }

    /// The header of [`CloseStormReport::markdown`]'s table.
    pub const HEADER: &str = "| store | sockets dropped | probes | upgrade p50 / max (ms) | \
        connection_init p50 / p99 / max (ms) | first init (ms) | last init > 100 ms at (ms) | \
        gateway CPU |\n|---|---:|---:|---:|---:|---:|---:|---:|";
}

/// One socket of another user: the upgrade, and the `connection_init` round trip.
async fn probe(url: &str, token: &str) -> anyhow::Result<(Duration, Duration)> {
    let mut request = url.into_client_request()?;
    request.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_static("graphql-transport-ws"),
    );
    let started = Instant::now();
    let (mut socket, _) = tokio::time::timeout(
        Duration::from_secs(60),
        tokio_tungstenite::connect_async(request),
    )
    .await
    .context("upgrade timed out")??;
    let upgraded = started.elapsed();
    let init = json!({"type": "connection_init", "payload": {"token": token}});
    let sent = Instant::now();
    socket.send(Message::Text(init.to_string().into())).await?;
    let acked = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(frame) = socket.next().await {
            if let Message::Text(text) = frame? {
                let message: Value = serde_json::from_str(&text)?;
                if message["type"] == "connection_ack" {
                    return Ok(sent.elapsed());
                }
                bail!("expected connection_ack, got {message}");
            }
        }
        bail!("closed before connection_ack")
    })
    .await
    .context("no connection_ack in 60 s")??;
    let _ = tokio::time::timeout(Duration::from_secs(5), socket.close(None)).await;
    Ok((upgraded, acked))
}

/// `--close-storm N`.
pub fn close_storm(
    config: &StormConfig,
    sockets: usize,
    window: Duration,
) -> anyhow::Result<CloseStormReport> {
    limits::raise_open_files(2 * sockets as u64 + 1_024);
    let gateway = Gateway::start(config, "stream")?;
    runtime()?.block_on(async {
        let base = format!("http://{}", gateway.listen);
        wait_healthy(&base).await?;
        let token = mint("storm-user");
        let http = GraphqlHttp::new(&format!("{base}/graphql"), &token)?;
        let board = http.create_board("close storm").await?;
        let url = format!("ws://{}/graphql", gateway.listen);
        let probe_token = mint("probe-user");
        // Warm: the probe's path once before the storm.
        probe(&url, &probe_token).await?;
        let subscribers =
            open_many(&url, &token, &board, sockets, config.connect_concurrency).await?;
        tokio::time::sleep(Duration::from_secs(1)).await;

        let cpu_before = gateway.cpu();
        let dropped = Instant::now();
        drop(subscribers);
        let (mut upgrade, mut init) = (Latencies::new(), Latencies::new());
        let (mut probes, mut failed) = (0, 0);
        let mut first_init_ms = None;
        let mut slow_until_ms = 0.0;
        while dropped.elapsed() < window {
            probes += 1;
            match probe(&url, &probe_token).await {
                Ok((up, ack)) => {
                    upgrade.record(up);
                    init.record(ack);
                    let ms = ack.as_secs_f64() * 1000.0;
                    first_init_ms.get_or_insert(ms);
                    if ms > 100.0 {
                        slow_until_ms = dropped.elapsed().as_secs_f64() * 1000.0;
                    }
                }
                Err(e) => {
                    failed += 1;
                    eprintln!("probe failed: {e:#}");
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let window_secs = dropped.elapsed().as_secs_f64();
        Ok(CloseStormReport {
            store: config.store.clone().unwrap_or_else(|| "file".to_owned()),
            sockets,
            probes,
            failed,
            upgrade: upgrade.summary(),
            init: init.summary(),
            first_init_ms: first_init_ms.unwrap_or_default(),
            slow_until_ms,
            cpu_secs: (gateway.cpu() - cpu_before).as_secs_f64(),
            window_secs,
        })
    })
}

/// What `--mutation-burst` measured in one delivery mode.
#[derive(Clone, Debug)]
pub struct BurstReport {
    /// The store the gateway ran on.
    pub store: String,
    /// The delivery mode.
    pub mode: Mode,
    /// Mutations sent at once.
    pub mutations: usize,
    /// Refused with `PUBLISH_TIMEOUT`.
    pub publish_timeouts: usize,
    /// Failed otherwise.
    pub other_errors: usize,
    /// Mutations answered per second, from the first sent to the last answered.
    pub per_sec: f64,
    /// Mutation latency.
    pub latency: Percentiles,
    /// Subscribers listening.
    pub subscribers: usize,
    /// Deliveries expected (accepted mutations times subscribers) and received.
    pub expected: usize,
    /// Deliveries of accepted mutations that never arrived.
    pub lost: usize,
    /// Deliveries that arrived more than once.
    pub duplicated: usize,
}

impl BurstReport {
    /// The figures as a Markdown table row, after [`BurstReport::HEADER`].
    pub fn markdown(&self) -> String {
        format!(
            "| {store} | {mode} | {n} | {timeouts} | {other} | {rate:.0} | {p50:.0} / {p99:.0} / {max:.0} | \
             {expected} to {subs} | {lost} | {dup} |",
            store = self.store,
            mode = self.mode,
            n = self.mutations,
            timeouts = self.publish_timeouts,
            other = self.other_errors,
            rate = self.per_sec,
            p50 = self.latency.p50,
            p99 = self.latency.p99,
            max = self.latency.max,
            expected = self.expected,
            subs = self.subscribers,
            lost = self.lost,
            dup = self.duplicated,
        )
    }

    /// The header of [`BurstReport::markdown`]'s table.
    pub const HEADER: &str = "| store | mode | mutations at once | PUBLISH_TIMEOUT | other errors | \
        mutations/s | latency p50 / p99 / max (ms) | deliveries expected | lost | duplicated |\n\
        |---|---|---:|---:|---:|---:|---:|---:|---:|---:|";
}

/// `--mutation-burst N` in `mode`, with `subscribers` listening.
pub fn mutation_burst(
    config: &StormConfig,
    mode: Mode,
    mutations: usize,
    subscribers: usize,
) -> anyhow::Result<BurstReport> {
    limits::raise_open_files(2 * (mutations + subscribers) as u64 + 1_024);
    let gateway = Gateway::start(config, &mode.to_string())?;
    runtime()?.block_on(async {
        let base = format!("http://{}", gateway.listen);
        wait_healthy(&base).await?;
        let token = mint("burst-user");
        let http = GraphqlHttp::new(&format!("{base}/graphql"), &token)?;
        let board = http.create_board("mutation burst").await?;
        let url = format!("ws://{}/graphql", gateway.listen);
        let listening = open_many(
            &url,
            &token,
            &board,
            subscribers,
            config.connect_concurrency,
        )
        .await?;
        let titles = Titles::new(&ulid::Ulid::new().to_string());
        let counters = Arc::new(Counters::default());
        let (stop, stopped) = watch::channel(false);
        let clock = Instant::now();
        let listeners: Vec<_> = listening
            .into_iter()
            .map(|s| {
                tokio::spawn(s.listen(titles.clone(), clock, stopped.clone(), counters.clone()))
            })
            .collect();

        let started = Instant::now();
        let sent = futures_util::future::join_all((0..mutations).map(|seq| {
            let (http, board, title) = (http.clone(), board.clone(), titles.title(seq));
            async move {
                let at = Instant::now();
                let result = http.add_card(&board, &title).await;
                (seq, result, at.elapsed())
            }
        }))
        .await;
        let per_sec = mutations as f64 / started.elapsed().as_secs_f64();
        let mut latency = Latencies::new();
        let (mut publish_timeouts, mut other_errors) = (0, 0);
        let mut accepted = Vec::new();
        for (seq, result, took) in sent {
            latency.record(took);
            match result {
                Ok(()) => accepted.push(seq),
                Err(e) if e.to_string().contains("PUBLISH_TIMEOUT") => publish_timeouts += 1,
                Err(e) => {
                    other_errors += 1;
                    if other_errors <= 3 {
                        eprintln!("mutation failed: {e:#}");
                    }
                }
            }
        }
        // Every accepted mutation reaches every subscriber; stop once none arrived for 5 s.
        let expected = accepted.len() * subscribers;
        let mut last = (0, Instant::now());
        loop {
            let received = counters.received.load(std::sync::atomic::Ordering::Relaxed) as usize;
            if received >= expected && last.1.elapsed() > Duration::from_millis(500) {
                break;
            }
            if received != last.0 {
                last = (received, Instant::now());
            } else if last.1.elapsed() > Duration::from_secs(5) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = stop.send(true);
        let (mut lost, mut duplicated) = (0, 0);
        for listener in listeners {
            let listened = listener.await?;
            let mut seen: HashMap<usize, usize> = HashMap::new();
            for (seq, _) in &listened.deliveries {
                *seen.entry(*seq).or_default() += 1;
            }
            lost += accepted.iter().filter(|s| !seen.contains_key(s)).count();
            duplicated += seen.values().map(|n| n - 1).sum::<usize>();
        }
        Ok(BurstReport {
            store: config.store.clone().unwrap_or_else(|| "file".to_owned()),
            mode,
            mutations,
            publish_timeouts,
            other_errors,
            per_sec,
            latency: latency.summary(),
            subscribers,
            expected,
            lost,
            duplicated,
        })
    })
}

/// `broker-local` next to the running executable.
pub fn default_gateway_bin() -> PathBuf {
    crate::idle::default_gateway_bin()
}

/// Whether `path` exists, with a hint to build it when not.
pub fn check_gateway_bin(path: &Path) -> anyhow::Result<()> {
    if !path.exists() {
        bail!(
            "{} not found: build it with `cargo build --release -p local-gateway`",
            path.display()
        );
    }
    Ok(())
}
