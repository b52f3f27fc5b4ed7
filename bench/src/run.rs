//! Running the cases: per mode and fan-out size, open the subscribers, send the mutations,
//! wait for the deliveries, and account for every one of them.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use broker::{AuthConfig, BrokerConfig, DeliveryMode};
use local_gateway::{Backend, Options};
use tokio::net::TcpListener;
use tokio::runtime::Runtime;
use tokio::sync::{Semaphore, mpsc, watch};

use crate::client::{Counters, GraphqlHttp, Listened, Subscriber, Titles};
use crate::config::{Config, Mode, Target};
use crate::cpu::{BROKER_THREADS, CLIENT_THREADS, CpuMeter};
use crate::limits::{self, Limits};
use crate::progress::Progress;
use crate::report::{CaseResult, Measurement, Outcome, Report};
use crate::stats::Latencies;
use crate::{backend, echo};

/// The one user every subscriber connects as: the example app lets only a board's owner
/// listen to it, so the fan-out is many connections of one user (many tabs, many devices).
const USER: &str = "bench-user";
const TOKEN_TTL_SECS: u64 = 24 * 60 * 60;
const SECRET: &str = "broker-bench-secret-used-only-in-this-process-0123456789";
/// After the last expected delivery, how long to keep listening for duplicates.
const DUPLICATE_GRACE: Duration = Duration::from_millis(200);
/// Mutations sent before measuring, to open the HTTP connections on both sides.
const WARM_UP_MUTATIONS: usize = 2;

/// Runs every case of `config` and returns what was measured. A case that cannot run here
/// (too many connections for the machine, a mode this build cannot offer) is reported as
/// skipped with the reason; an error is returned only when nothing can run at all.
pub fn run(config: &Config) -> anyhow::Result<Report> {
    anyhow::ensure!(!config.modes.is_empty(), "no mode to run");
    anyhow::ensure!(!config.sizes.is_empty(), "no fan-out size to run");
    anyhow::ensure!(config.mutations > 0, "--mutations must be at least 1");
    for &mode in &config.modes {
        backend::check(config, mode)?;
    }
    let local = config.is_local();
    let largest = config.sizes.iter().copied().max().unwrap_or(0);
    let limits = Limits::prepare(largest, local);
    let progress = Progress::new(config.progress);
    let client = runtime(CLIENT_THREADS)?;

    progress.println(format!(
        "echo floor: {} round trips on loopback",
        config.echo_round_trips
    ));
    let echo = {
        let server = runtime(BROKER_THREADS)?;
        let floor = echo::measure(&server, &client, config.echo_round_trips.max(1));
        server.shutdown_timeout(Duration::from_secs(1));
        floor.context("echo floor")?
    };
    progress.println(format!("  p50 {:.3} ms, p99 {:.3} ms", echo.p50, echo.p99));

    let tag = run_tag();
    let mut emulator = backend::Emulator::start_if_needed(config)?;
    let mut cases = Vec::new();
    for &mode in &config.modes {
        for &size in &config.sizes {
            let outcome = match limits.refuse(size, local) {
                Some(reason) => Outcome::Skipped(reason),
                None => run_case(
                    config,
                    mode,
                    size,
                    &client,
                    &progress,
                    &tag,
                    emulator.as_mut(),
                ),
            };
            progress.println(describe(mode, size, &outcome));
            cases.push(CaseResult {
                mode,
                subscribers: size,
                outcome,
            });
        }
    }
    progress.finish();
    drop(emulator);
    client.shutdown_timeout(Duration::from_secs(2));
    Ok(Report {
        target: match &config.target {
            Target::Local => "local mode, in process".to_owned(),
            Target::Remote(remote) => format!("running broker at {}", remote.graphql_url),
        },
        mutations: config.mutations,
        rate: config.rate,
        max_delivery_rate: config.max_delivery_rate,
        emulator_max_delivery_rate: config.emulator_max_delivery_rate,
        poll_interval: config.poll_interval,
        fanout_threshold: config.fanout_threshold,
        fanout_page_size: config.fanout_page_size,
        echo,
        limits,
        cases,
    })
}

/// A Tokio runtime whose threads carry `name` (the CPU meter tells them apart by it).
fn runtime(name: &str) -> anyhow::Result<Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(name)
        // Blocking threads must not exit mid-phase: their CPU time would go uncounted.
        .thread_keep_alive(Duration::from_secs(3_600))
        .enable_all()
        .build()
        .context("start a Tokio runtime")
}

/// A short tag for this run's card titles.
fn run_tag() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!(
        "{:08x}",
        (nanos as u64 ^ u64::from(std::process::id())) as u32
    )
}

fn describe(mode: Mode, size: usize, outcome: &Outcome) -> String {
    match outcome {
        Outcome::Measured(m) => format!(
            "{mode:>15} n={size:<6} mutation p50 {:>9.3} ms p99 {:>9.3} ms | delivery p50 \
             {:>9.3} ms p99 {:>9.3} ms | {}/{} delivered, {} lost, {} duplicated",
            m.mutation_latency.p50,
            m.mutation_latency.p99,
            m.delivery_latency.p50,
            m.delivery_latency.p99,
            m.delivered,
            m.expected,
            m.lost,
            m.duplicated,
        ),
        Outcome::Skipped(reason) => format!("{mode:>15} n={size:<6} skipped: {reason}"),
        Outcome::Failed(reason) => format!("{mode:>15} n={size:<6} FAILED: {reason}"),
    }
}

/// Where a case sends its traffic.
struct Endpoints {
    graphql: String,
    websocket: String,
    token: String,
    board: Option<String>,
    /// Whether the broker's threads are this process's (and so its CPU time measurable).
    in_process: bool,
}

/// The broker configuration a mode stands for.
pub fn broker_config(config: &Config, mode: Mode) -> BrokerConfig {
    // Every subscriber is one user's: the per-user limits would refuse all but the first.
    let defaults = BrokerConfig::default().without_user_limits();
    let (delivery_mode, fanout_threshold) = match mode {
        Mode::Direct => (DeliveryMode::Direct, usize::MAX),
        // The embedded store always has a fan-out queue: keep every size off it.
        Mode::Stream | Mode::StreamDynamodb => (DeliveryMode::Stream, usize::MAX),
        Mode::SqsFanout => (DeliveryMode::Stream, config.fanout_threshold),
    };
    BrokerConfig {
        delivery_mode,
        fanout_threshold,
        fanout_page_size: config.fanout_page_size.max(1),
        post_concurrency: config.post_concurrency.max(1),
        ..defaults
    }
}

fn local_options(config: &Config, mode: Mode) -> Options {
    Options {
        app: std::sync::Arc::new(boards::Boards),
        auth: AuthConfig {
            secret: SECRET.to_owned(),
            issuer: None,
            audience: None,
            leeway_secs: broker::auth::DEFAULT_LEEWAY_SECS,
        },
        key_set: None,
        broker: broker_config(config, mode),
        poll_interval: config.poll_interval,
        stream: Default::default(),
        // The emulator modes switch it when they start.
        backend: Backend::Memory,
        web: local_gateway::WebOptions::default(),
        // Every subscriber connects from this one address, all at once.
        limits: local_gateway::server::Limits {
            max_uninitialised_per_address: 0,
            ..Default::default()
        },
    }
}

#[allow(clippy::too_many_arguments)]
fn run_case(
    config: &Config,
    mode: Mode,
    size: usize,
    client: &Runtime,
    progress: &Progress,
    tag: &str,
    emulator: Option<&mut backend::Emulator>,
) -> Outcome {
    let result = match &config.target {
        Target::Local => {
            let server = match runtime(BROKER_THREADS) {
                Ok(server) => server,
                Err(e) => return Outcome::Failed(format!("{e:#}")),
            };
            let options = local_options(config, mode);
            let started = server.block_on(async {
                let listener = TcpListener::bind("127.0.0.1:0").await?;
                backend::start(listener, options, mode, emulator).await
            });
            let gateway = match started {
                Ok(gateway) => gateway,
                Err(e) => return Outcome::Failed(format!("starting the local mode: {e:#}")),
            };
            let endpoints = Endpoints {
                graphql: gateway.graphql_url(),
                websocket: gateway.websocket_url(),
                token: gateway.broker().authenticator().mint(USER, TOKEN_TTL_SECS),
                board: None,
                in_process: true,
            };
            let result = client.block_on(drive(config, mode, size, &endpoints, progress, tag));
            server.block_on(gateway.shutdown());
            server.shutdown_timeout(Duration::from_secs(2));
            result
        }
        Target::Remote(remote) => {
            let endpoints = Endpoints {
                graphql: remote.graphql_url.clone(),
                websocket: remote.websocket_url.clone(),
                token: remote.token.clone(),
                board: remote.board.clone(),
                in_process: false,
            };
            client.block_on(drive(config, mode, size, &endpoints, progress, tag))
        }
    };
    match result {
        Ok(measurement) => Outcome::Measured(Box::new(measurement)),
        Err(CaseError::CannotOpen(reason)) => Outcome::Skipped(reason),
        Err(CaseError::Failed(e)) => Outcome::Failed(format!("{e:#}")),
    }
}

enum CaseError {
    /// The subscribers could not all be opened: the machine's limit, not the broker's.
    CannotOpen(String),
    Failed(anyhow::Error),
}

impl From<anyhow::Error> for CaseError {
    fn from(e: anyhow::Error) -> Self {
        Self::Failed(e)
    }
}

/// One case, on the client runtime: subscribers, paced mutations, deliveries.
async fn drive(
    config: &Config,
    mode: Mode,
    size: usize,
    endpoints: &Endpoints,
    progress: &Progress,
    tag: &str,
) -> Result<Measurement, CaseError> {
    let label = format!("{mode} n={size}");
    let http = GraphqlHttp::new(&endpoints.graphql, &endpoints.token)?;
    let board = match &endpoints.board {
        Some(board) => board.clone(),
        None => http
            .create_board("benchmark")
            .await
            .context("creating the board")?,
    };
    let titles = Titles::new(tag);
    let clock = Instant::now();

    progress.phase(&label, "connecting", size as u64);
    let setup_started = Instant::now();
    let subscribers = Subscribers::open(
        config, mode, size, endpoints, &board, &titles, clock, progress,
    )
    .await?;
    let setup = setup_started.elapsed();
    let resident_bytes = limits::resident_bytes();
    let patience = config.drain_idle
        + if mode.polls() {
            config.poll_interval
        } else {
            Duration::ZERO
        };

    // Warm-up, not measured: wait for its deliveries so they do not mix with the phase.
    progress.phase(&label, "warming up", (WARM_UP_MUTATIONS * size) as u64);
    for _ in 0..WARM_UP_MUTATIONS {
        http.add_card(&board, titles.warm_up())
            .await
            .context("warm-up mutation")?;
    }
    let warm_up_patience = patience.min(Duration::from_secs(10));
    wait_for(
        &subscribers.counters.warm_up,
        (WARM_UP_MUTATIONS * size) as u64,
        warm_up_patience,
        progress,
    )
    .await;

    progress.phase(&label, "mutating", config.mutations as u64);
    let cpu = endpoints.in_process.then(CpuMeter::start);
    let mut sent = Sent::new(config.mutations);
    sent.send_paced(
        &http,
        &board,
        &titles,
        config.interval_at(mode, size),
        clock,
        progress,
    )
    .await;

    // Deliveries: wait for every expected one, or until none has come for a while.
    let expected = (sent.succeeded() * size) as u64;
    progress.phase(&label, "delivering", expected);
    wait_for(&subscribers.counters.received, expected, patience, progress).await;
    let broker_cpu = cpu.and_then(|meter| meter.stop());
    tokio::time::sleep(DUPLICATE_GRACE).await;
    let listened = subscribers.stop().await;

    let accounted = Accounting::of(&listened, &mut sent);
    let quiet_latency = sent.quiet_latency(&accounted.done_us);
    let first_sent_us = sent.sent_us.first().copied().unwrap_or_default();
    let last_us = accounted.last_delivery_us.max(sent.last_response_us);
    let phase = Duration::from_micros(last_us - first_sent_us);
    Ok(Measurement {
        rate: config.rate_at(mode, size),
        mutations_sent: config.mutations,
        mutation_errors: sent.errors,
        mutation_latency: sent.latency.summary(),
        quiet_mutation_latency: quiet_latency.summary(),
        delivery_latency: accounted.latency.summary(),
        expected,
        delivered: accounted.delivered,
        lost: expected.saturating_sub(accounted.delivered),
        duplicated: accounted.duplicated,
        unexpected: accounted.unexpected,
        subscriber_errors: accounted.subscriber_errors,
        phase,
        deliveries_per_second: if phase.is_zero() {
            0.0
        } else {
            accounted.delivered as f64 / phase.as_secs_f64()
        },
        broker_cpu,
        setup,
        resident_bytes,
        first_error: sent.first_error,
    })
}

/// The subscribers of one case, each a task listening on its own connection.
struct Subscribers {
    listeners: Vec<tokio::task::JoinHandle<Option<Listened>>>,
    counters: Arc<Counters>,
    stop: watch::Sender<bool>,
}

impl Subscribers {
    /// Opens `size` subscribers to `board`, at most the mode's connect concurrency at once;
    /// returns once all are ready, or fails with the first that could not open.
    #[allow(clippy::too_many_arguments)]
    async fn open(
        config: &Config,
        mode: Mode,
        size: usize,
        endpoints: &Endpoints,
        board: &str,
        titles: &Titles,
        clock: Instant,
        progress: &Progress,
    ) -> Result<Self, CaseError> {
        let counters = Arc::new(Counters::default());
        let (stop, stopped) = watch::channel(false);
        // One message per subscriber: room for all of them, so no task ever waits to report.
        let (ready_tx, mut ready) = mpsc::channel::<Result<(), String>>(size.max(1));
        let permits = Arc::new(Semaphore::new(config.connect_concurrency_for(mode)));
        let mut listeners = Vec::with_capacity(size);
        for _ in 0..size {
            let (url, token, board) = (
                endpoints.websocket.clone(),
                endpoints.token.clone(),
                board.to_owned(),
            );
            let (titles, stopped, counters) = (titles.clone(), stopped.clone(), counters.clone());
            let (ready_tx, permits) = (ready_tx.clone(), permits.clone());
            listeners.push(tokio::spawn(async move {
                let opened = {
                    let _permit = permits.acquire_owned().await;
                    Subscriber::open(&url, &token, &board).await
                };
                match opened {
                    Ok(subscriber) => {
                        let _ = ready_tx.send(Ok(())).await;
                        Some(subscriber.listen(titles, clock, stopped, counters).await)
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("{e:#}"))).await;
                        None
                    }
                }
            }));
        }
        drop(ready_tx);
        let subscribers = Self {
            listeners,
            counters,
            stop,
        };
        let mut opened = 0;
        while opened < size {
            match ready.recv().await {
                Some(Ok(())) => {
                    opened += 1;
                    progress.inc();
                }
                Some(Err(e)) => {
                    subscribers.stop().await;
                    return Err(CaseError::CannotOpen(format!(
                        "opened {opened} of {size} subscribers, then: {e}"
                    )));
                }
                None => break,
            }
        }
        Ok(subscribers)
    }

    /// Stops every subscriber and returns what each received.
    async fn stop(self) -> Vec<Option<Listened>> {
        let _ = self.stop.send(true);
        collect(self.listeners).await
    }
}

/// The measured mutations: when each was sent, whether and how fast it succeeded.
struct Sent {
    /// Per mutation, when it was sent (µs on the case's clock).
    sent_us: Vec<u64>,
    ok: Vec<bool>,
    /// Per successful mutation, its response time (µs).
    latency_us: Vec<u64>,
    latency: Latencies,
    errors: usize,
    first_error: Option<String>,
    last_response_us: u64,
}

impl Sent {
    fn new(mutations: usize) -> Self {
        Self {
            sent_us: vec![0; mutations],
            ok: vec![false; mutations],
            latency_us: vec![0; mutations],
            latency: Latencies::new(),
            errors: 0,
            first_error: None,
            last_response_us: 0,
        }
    }

    /// Sends the mutations one at a time, each at its slot of `interval`.
    async fn send_paced(
        &mut self,
        http: &GraphqlHttp,
        board: &str,
        titles: &Titles,
        interval: Duration,
        clock: Instant,
        progress: &Progress,
    ) {
        let started = Instant::now();
        for seq in 0..self.sent_us.len() {
            tokio::time::sleep_until((started + interval * seq as u32).into()).await;
            let sent = Instant::now();
            self.sent_us[seq] = micros(sent - clock);
            let result = http.add_card(board, &titles.title(seq)).await;
            let latency = sent.elapsed();
            self.last_response_us = micros(clock.elapsed());
            match result {
                Ok(()) => {
                    self.ok[seq] = true;
                    self.latency_us[seq] = micros(latency);
                    self.latency.record(latency);
                }
                Err(e) => {
                    self.errors += 1;
                    self.first_error
                        .get_or_insert_with(|| format!("mutation {seq}: {e:#}"));
                }
            }
            progress.inc();
        }
    }

    fn succeeded(&self) -> usize {
        self.ok.iter().filter(|ok| **ok).count()
    }

    /// The response times of mutations sent while no delivery of an earlier one was still
    /// arriving: what the API costs without the publisher competing for the same cores.
    fn quiet_latency(&self, done_us: &[u64]) -> Latencies {
        let mut quiet = Latencies::new();
        let mut busy_until = 0;
        let mutations = self.sent_us.iter().zip(&self.ok).zip(&self.latency_us);
        for (((&sent_us, &ok), &latency_us), &done_us) in mutations.zip(done_us) {
            if ok && sent_us >= busy_until {
                quiet.record_micros(latency_us);
            }
            busy_until = busy_until.max(done_us);
        }
        quiet
    }
}

/// Every delivery matched to its mutation, per subscriber.
struct Accounting {
    latency: Latencies,
    delivered: u64,
    duplicated: u64,
    unexpected: u64,
    subscriber_errors: usize,
    last_delivery_us: u64,
    /// Per mutation, when its last delivery arrived.
    done_us: Vec<u64>,
}

impl Accounting {
    /// Counts what the subscribers received against what was sent; a subscriber's error
    /// becomes the case's first error if it has none yet.
    fn of(listened: &[Option<Listened>], sent: &mut Sent) -> Self {
        let mutations = sent.sent_us.len();
        let mut accounting = Self {
            latency: Latencies::new(),
            delivered: 0,
            duplicated: 0,
            unexpected: 0,
            subscriber_errors: 0,
            last_delivery_us: 0,
            done_us: vec![0; mutations],
        };
        let mut seen_here = vec![false; mutations];
        for outcome in listened {
            let Some(listened) = outcome else {
                accounting.subscriber_errors += 1;
                continue;
            };
            if let Some(e) = &listened.error {
                accounting.subscriber_errors += 1;
                sent.first_error
                    .get_or_insert_with(|| format!("subscriber: {e}"));
            }
            accounting.unexpected += listened.unexpected;
            seen_here.fill(false);
            for &(seq, at_us) in &listened.deliveries {
                if !sent.ok.get(seq).copied().unwrap_or(false) {
                    accounting.unexpected += 1;
                } else if seen_here[seq] {
                    accounting.duplicated += 1;
                } else {
                    seen_here[seq] = true;
                    accounting.delivered += 1;
                    accounting
                        .latency
                        .record_micros(at_us.saturating_sub(sent.sent_us[seq]));
                    accounting.last_delivery_us = accounting.last_delivery_us.max(at_us);
                    accounting.done_us[seq] = accounting.done_us[seq].max(at_us);
                }
            }
        }
        accounting
    }
}

/// Waits until `counter` reaches `expected`, or has not moved for `patience`.
async fn wait_for(
    counter: &std::sync::atomic::AtomicU64,
    expected: u64,
    patience: Duration,
    progress: &Progress,
) {
    let mut seen = counter.load(Ordering::Relaxed);
    let mut last_change = Instant::now();
    loop {
        let now = counter.load(Ordering::Relaxed);
        progress.set(now);
        if now >= expected {
            return;
        }
        if now != seen {
            seen = now;
            last_change = Instant::now();
        } else if last_change.elapsed() >= patience {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits for every subscriber task; `None` for one that never opened or that panicked.
async fn collect(
    listeners: Vec<tokio::task::JoinHandle<Option<Listened>>>,
) -> Vec<Option<Listened>> {
    let mut all = Vec::with_capacity(listeners.len());
    for listener in listeners {
        all.push(listener.await.ok().flatten());
    }
    all
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}
