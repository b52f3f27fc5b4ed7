//! Memory of idle subscribed sockets in the local gateway: `broker-bench --idle-sockets N`.
//!
//! Starts `broker-local serve` (the release binary next to this one, or `--gateway-bin`) as a
//! child process on a free loopback port, so its resident memory is its own. Then, from this
//! process: creates a board, opens N `graphql-transport-ws` sockets that each send
//! `connection_init`, subscribe to the board's cards and prove the subscription stored with a
//! `ping`/`pong`, and leaves them idle. The gateway's `VmRSS` (from `/proc/PID/status`) is read
//! at start, with the N sockets open, after one event delivered to all of them, after they
//! closed, and with N sockets open again (memory given back is reused, not grown).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use broker::{AuthConfig, Authenticator};
use futures_util::StreamExt as _;

use crate::client::{GraphqlHttp, Subscriber};
use crate::limits;

/// How long the gateway is left alone before each reading, so that work in flight (the
/// `$disconnect`s, the close handshakes) is done.
const SETTLE: Duration = Duration::from_secs(3);

/// What `--idle-sockets` measures.
#[derive(Clone, Debug)]
pub struct IdleConfig {
    /// Subscribed sockets opened (twice: open, close, open again).
    pub sockets: usize,
    /// `broker-local` to start.
    pub gateway_bin: PathBuf,
    /// Sockets being opened at once.
    pub connect_concurrency: usize,
}

/// The gateway's resident memory at each step, in bytes.
#[derive(Clone, Debug)]
pub struct IdleReport {
    /// Subscribed sockets opened.
    pub sockets: usize,
    /// The descriptor limit in force, and where it came from.
    pub open_files: String,
    /// Once the gateway started and one socket was opened and closed.
    pub started: u64,
    /// With every socket open, subscribed and idle.
    pub open: u64,
    /// After one event was delivered to every socket (unread by the clients).
    pub after_event: u64,
    /// After every socket was closed.
    pub closed: u64,
    /// With every socket open again.
    pub reopened: u64,
    /// Seconds it took to open every socket the first time.
    pub open_secs: f64,
}

impl IdleReport {
    /// The readings as a Markdown table, in MiB and KiB per socket above the start.
    pub fn markdown(&self) -> String {
        let mib = |b: u64| b as f64 / (1 << 20) as f64;
        let per = |b: u64| b.saturating_sub(self.started) as f64 / self.sockets as f64 / 1024.0;
        format!(
            "Idle subscribed sockets in broker-local: {n} (opened in {secs:.1} s; open files: {files})\n\n\
             | step | gateway RSS | per socket above start |\n|---|---:|---:|\n\
             | started, one board | {:.1} MiB | |\n\
             | {n} sockets open, subscribed, idle | {:.1} MiB | {:.1} KiB |\n\
             | after one event delivered to each | {:.1} MiB | {:.1} KiB |\n\
             | all closed | {:.1} MiB | {:.1} KiB |\n\
             | {n} open again | {:.1} MiB | {:.1} KiB |\n",
            mib(self.started),
            mib(self.open),
            per(self.open),
            mib(self.after_event),
            per(self.after_event),
            mib(self.closed),
            per(self.closed),
            mib(self.reopened),
            per(self.reopened),
            n = self.sockets,
            secs = self.open_secs,
            files = self.open_files,
        )
    }
}

/// `broker-local` next to the running executable (both are built into the same directory).
pub fn default_gateway_bin() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.join("broker-local")))
        .unwrap_or_else(|| PathBuf::from("broker-local"))
}

/// Kills the child on every way out.
struct Gateway(Child);

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_gateway(bin: &Path) -> anyhow::Result<(Gateway, String)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let listen = format!("127.0.0.1:{port}");
    let child = Command::new(bin)
        .args(["serve", "--listen", &listen])
        .env_remove("JWT_SECRET")
        .env("DELIVERY_MODE", "stream")
        .env("STREAM_POLL_INTERVAL_MS", "0")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    Ok((Gateway(child), listen))
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

async fn open_all(
    config: &IdleConfig,
    url: &str,
    token: &str,
    board: &str,
) -> anyhow::Result<Vec<Subscriber>> {
    let opened: Vec<anyhow::Result<Subscriber>> = futures_util::stream::iter(0..config.sockets)
        .map(|_| Subscriber::open(url, token, board))
        .buffer_unordered(config.connect_concurrency.max(1))
        .collect()
        .await;
    let mut subscribers = Vec::with_capacity(opened.len());
    let mut failures = 0;
    let mut first_error = None;
    for result in opened {
        match result {
            Ok(s) => subscribers.push(s),
            Err(e) => {
                failures += 1;
                first_error.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_error {
        bail!(
            "{failures} of {} sockets could not be opened; first error: {e:#}",
            config.sockets
        );
    }
    Ok(subscribers)
}

async fn close_all(subscribers: Vec<Subscriber>) {
    futures_util::stream::iter(subscribers)
        .map(Subscriber::close)
        .buffer_unordered(256)
        .collect::<Vec<()>>()
        .await;
}

/// Starts `broker-local`, opens the sockets, and reads the gateway's resident memory at
/// each step; the gateway is stopped at the end.
pub fn run(config: &IdleConfig) -> anyhow::Result<IdleReport> {
    // Client and gateway (which inherits the limit) each hold one descriptor per socket.
    let (_, open_files) = limits::raise_open_files(config.sockets as u64 + 1_024);
    let (gateway, listen) = start_gateway(&config.gateway_bin)?;
    let pid = gateway.0.id();
    let rss = || limits::resident_bytes_of(pid).context("reading the gateway's VmRSS");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let base = format!("http://{listen}");
        wait_healthy(&base).await?;
        let token = Authenticator::new(AuthConfig {
            secret: broker::auth::DEVELOPMENT_SECRET.to_owned(),
            issuer: None,
            audience: None,
            leeway_secs: broker::auth::DEFAULT_LEEWAY_SECS,
        })
        .mint("bench-user", 3_600);
        let http = GraphqlHttp::new(&format!("{base}/graphql"), &token)?;
        let board = http.create_board("idle sockets").await?;
        let url = format!("ws://{listen}/graphql");
        // One socket opened and closed first, so that start-up allocations are counted in
        // the starting figure, not spread over the sockets.
        open_all(
            &IdleConfig {
                sockets: 1,
                ..config.clone()
            },
            &url,
            &token,
            &board,
        )
        .await
        .map(close_all)?
        .await;
        tokio::time::sleep(SETTLE).await;
        let started = rss()?;

        let clock = Instant::now();
        let subscribers = open_all(config, &url, &token, &board).await?;
        let open_secs = clock.elapsed().as_secs_f64();
        tokio::time::sleep(SETTLE).await;
        let open = rss()?;

        // The subscribers do not read: the frames wait in their kernel buffers.
        http.add_card(&board, "one event for every socket").await?;
        tokio::time::sleep(SETTLE).await;
        let after_event = rss()?;

        close_all(subscribers).await;
        tokio::time::sleep(SETTLE).await;
        let closed = rss()?;

        let subscribers = open_all(config, &url, &token, &board).await?;
        tokio::time::sleep(SETTLE).await;
        let reopened = rss()?;
        close_all(subscribers).await;

        Ok(IdleReport {
            sockets: config.sockets,
            open_files,
            started,
            open,
            after_event,
            closed,
            reopened,
            open_secs,
        })
    })
}
