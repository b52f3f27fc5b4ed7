//! `broker-bench`: see the crate documentation and docs/benchmarks.md.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;
use broker_bench::{Config, Emulator, Mode, Outcome, Remote, Target};
use clap::{Parser, ValueEnum};

/// mimalloc, the Lambda functions' allocator (the default feature `mimalloc`); built with
/// `--no-default-features`, the system's, to price one against the other.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Measures the latency trade-off between stream delivery (the mutation appends an event, a
/// stream-triggered publisher delivers) and direct delivery (the resolver delivers before the
/// mutation returns): mutation latency and delivery latency against fan-out.
#[derive(Parser, Debug)]
#[command(
    version,
    after_help = "See docs/benchmarks.md for what the numbers mean."
)]
struct Cli {
    /// Where the broker runs: `local` starts the local mode in this process (once per case);
    /// `remote` uses a running one (--url, --token).
    #[arg(long, value_enum)]
    target: Option<TargetKind>,
    /// Delivery modes to measure, comma-separated: direct, stream, stream-dynamodb,
    /// sqs-fanout [default: direct,stream, plus the emulator modes when an emulator is
    /// given]. With --target remote the broker's own configuration decides the mode: the
    /// name only labels the results.
    #[arg(long = "modes", alias = "mode", value_delimiter = ',')]
    modes: Vec<Mode>,
    /// Subscriber connections (fan-out) of a single case, without --sweep.
    #[arg(long, default_value_t = 100)]
    subscribers: usize,
    /// Run every size of --sizes.
    #[arg(long)]
    sweep: bool,
    /// Fan-out sizes of the sweep, comma-separated (implies --sweep).
    #[arg(long, value_delimiter = ',')]
    sizes: Vec<usize>,
    /// Small sizes (1 and 10), few mutations: a few seconds.
    #[arg(long)]
    quick: bool,
    /// Mutations per case [default: 40; 10 with --quick].
    #[arg(long)]
    mutations: Option<usize>,
    /// Mutations per second, one in flight at a time [default: 10; 20 with --quick].
    #[arg(long)]
    rate: Option<f64>,
    /// Deliveries per second the mutations may ask for: at large fan-outs the mutation rate
    /// is lowered to this divided by the fan-out, so a case measures latency and not a
    /// growing backlog (0: never lower it).
    #[arg(long, default_value_t = 2_000.0)]
    max_delivery_rate: f64,
    /// --max-delivery-rate for the modes on the DynamoDB emulator.
    #[arg(long, default_value_t = 100.0)]
    emulator_max_delivery_rate: f64,
    /// Stream poll interval of the local mode in ms (Lambda polls a shard every 250 ms);
    /// 0 makes the embedded poller wake on each append.
    #[arg(long, default_value_t = 250)]
    poll_interval_ms: u64,
    /// Fan-out threshold for sqs-fanout: events with more subscribers go through pages.
    #[arg(long, default_value_t = 0)]
    fanout_threshold: usize,
    /// Subscriptions per fan-out page.
    #[arg(long, default_value_t = broker::BrokerConfig::default().fanout_page_size)]
    fanout_page_size: usize,
    /// Posts in flight at once for one delivery.
    #[arg(long, default_value_t = broker::BrokerConfig::default().post_concurrency)]
    post_concurrency: usize,
    /// Round trips of the raw WebSocket echo floor [default: 2000; 200 with --quick].
    #[arg(long)]
    echo_round_trips: Option<usize>,
    /// Subscriber connections opened at once.
    #[arg(long, default_value_t = 64)]
    connect_concurrency: usize,
    /// --connect-concurrency for the modes on the DynamoDB emulator.
    #[arg(long, default_value_t = 8)]
    emulator_connect_concurrency: usize,
    /// After the last mutation, give up on missing deliveries when none has arrived for
    /// this long (plus the poll interval); they count as lost.
    #[arg(long, default_value_t = 5_000)]
    drain_idle_ms: u64,
    /// Directory for results.md, results.csv and latency.svg.
    #[arg(long, default_value = "bench-results")]
    out: PathBuf,
    /// GraphQL over HTTP endpoint of a running broker (implies --target remote).
    #[arg(long, env = "BENCH_URL")]
    url: Option<String>,
    /// Its WebSocket endpoint [default: --url with ws:// or wss://].
    #[arg(long, env = "BENCH_WS_URL")]
    ws_url: Option<String>,
    /// Token of the user whose board the benchmark uses (for a running local mode:
    /// `broker-local token bench-user`).
    #[arg(long, env = "BENCH_TOKEN")]
    token: Option<String>,
    /// Board (owned by the token's user) to add cards to [default: create one per case].
    #[arg(long, env = "BENCH_BOARD")]
    board: Option<String>,
    /// Start a moto_server for the DynamoDB modes.
    #[arg(long)]
    moto: bool,
    /// The moto_server program --moto starts.
    #[arg(
        long,
        env = "MOTO_SERVER",
        default_value = ".tools/venv/bin/moto_server"
    )]
    moto_server: PathBuf,
    /// A DynamoDB emulator already listening, for the DynamoDB modes.
    #[arg(long, env = "MOTO_ENDPOINT")]
    moto_endpoint: Option<String>,
    /// No progress bar.
    #[arg(long)]
    no_progress: bool,
    /// Instead of the latency cases: start `broker-local` (--gateway-bin) as a child process,
    /// open this many subscribed sockets and leave them idle, and report the gateway's
    /// resident memory before, with them open, after they closed and with them open again.
    #[arg(long, value_name = "N")]
    idle_sockets: Option<usize>,
    /// Instead of the latency cases: start `broker-local` (--gateway-bin), open this many
    /// subscribed sockets, drop them all at once, and time another user's `connection_init`
    /// round trips for --probe-secs (see `storm`).
    #[arg(long, value_name = "N")]
    close_storm: Option<usize>,
    /// Seconds --close-storm probes for after the drop.
    #[arg(long, default_value_t = 30)]
    probe_secs: u64,
    /// Instead of the latency cases: start `broker-local` (--gateway-bin) per mode of
    /// --modes (default direct,stream), send this many mutations at once, and count
    /// `PUBLISH_TIMEOUT`s, lost and duplicated deliveries (see `storm`).
    #[arg(long, value_name = "N")]
    mutation_burst: Option<usize>,
    /// Instead of the latency cases: this many cards added on one board, through the
    /// broker's API, saved then published (two commits) against saved with their event (one
    /// commit), one at a time and all at once, on a database file and, with
    /// --moto-endpoint, on the emulator (see `atomic`).
    #[arg(long, value_name = "N")]
    atomic_write: Option<usize>,
    /// The store of `broker-local` for --close-storm and --mutation-burst: `memory`, or a
    /// fresh database file when not given.
    #[arg(long)]
    storm_store: Option<String>,
    /// The `broker-local` binary --idle-sockets starts [default: the one next to this
    /// executable].
    #[arg(long)]
    gateway_bin: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum TargetKind {
    Local,
    Remote,
}

impl Cli {
    fn config(self) -> anyhow::Result<Config> {
        let mut config = if self.quick {
            Config::quick(&self.out)
        } else {
            Config::sweep(&self.out)
        };
        config.target = match (self.target, self.url) {
            (Some(TargetKind::Local), Some(_)) => bail!("--url needs --target remote"),
            (Some(TargetKind::Local), None) | (None, None) => Target::Local,
            (Some(TargetKind::Remote), None) => bail!("--target remote needs --url"),
            (_, Some(url)) => {
                let Some(token) = self.token else {
                    bail!("--target remote needs --token")
                };
                let websocket_url = match self.ws_url {
                    Some(ws) => ws,
                    None => websocket_url(&url)?,
                };
                Target::Remote(Remote {
                    graphql_url: url,
                    websocket_url,
                    token,
                    board: self.board,
                })
            }
        };
        config.emulator = if self.moto {
            Emulator::Start(self.moto_server)
        } else if let Some(endpoint) = self.moto_endpoint {
            Emulator::Endpoint(endpoint)
        } else {
            Emulator::None
        };
        if !self.modes.is_empty() {
            config.modes = self.modes;
        } else if config.is_local() && !matches!(config.emulator, Emulator::None) {
            config.modes.extend([Mode::StreamDynamodb, Mode::SqsFanout]);
        }
        if !self.sizes.is_empty() {
            config.sizes = self.sizes;
        } else if !self.sweep && !self.quick {
            config.sizes = vec![self.subscribers];
        }
        config.mutations = self.mutations.unwrap_or(config.mutations);
        config.rate = self.rate.unwrap_or(config.rate);
        config.max_delivery_rate = self.max_delivery_rate;
        config.emulator_max_delivery_rate = self.emulator_max_delivery_rate;
        config.echo_round_trips = self.echo_round_trips.unwrap_or(config.echo_round_trips);
        config.poll_interval = Duration::from_millis(self.poll_interval_ms);
        config.fanout_threshold = self.fanout_threshold;
        config.fanout_page_size = self.fanout_page_size;
        config.post_concurrency = self.post_concurrency;
        config.connect_concurrency = self.connect_concurrency;
        config.emulator_connect_concurrency = self.emulator_connect_concurrency;
        config.drain_idle = Duration::from_millis(self.drain_idle_ms);
        config.progress = !self.no_progress;
        Ok(config)
    }
}

fn websocket_url(url: &str) -> anyhow::Result<String> {
    if let Some(rest) = url.strip_prefix("http://") {
        Ok(format!("ws://{rest}"))
    } else if let Some(rest) = url.strip_prefix("https://") {
        Ok(format!("wss://{rest}"))
    } else {
        bail!("--url {url:?} is not http(s): give --ws-url too")
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("broker-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    if let Some(sockets) = cli.idle_sockets {
        let config = broker_bench::idle::IdleConfig {
            sockets,
            gateway_bin: cli
                .gateway_bin
                .unwrap_or_else(broker_bench::idle::default_gateway_bin),
            connect_concurrency: cli.connect_concurrency,
        };
        println!("{}", broker_bench::idle::run(&config)?.markdown());
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(mutations) = cli.atomic_write {
        use broker_bench::atomic::{AtomicRow, AtomicStore, run};
        let mut stores = vec![AtomicStore::File];
        stores.extend(cli.moto_endpoint.map(AtomicStore::Moto));
        println!("{}", AtomicRow::HEADER);
        for row in run(&stores, mutations)? {
            println!("{}", row.markdown());
        }
        return Ok(ExitCode::SUCCESS);
    }
    if cli.close_storm.is_some() || cli.mutation_burst.is_some() {
        let gateway_bin = cli
            .gateway_bin
            .clone()
            .unwrap_or_else(broker_bench::storm::default_gateway_bin);
        broker_bench::storm::check_gateway_bin(&gateway_bin)?;
        let config = broker_bench::storm::StormConfig {
            gateway_bin,
            store: cli.storm_store.clone(),
            connect_concurrency: cli.connect_concurrency,
        };
        if let Some(sockets) = cli.close_storm {
            let window = Duration::from_secs(cli.probe_secs);
            let report = broker_bench::storm::close_storm(&config, sockets, window)?;
            println!("{}", broker_bench::storm::CloseStormReport::HEADER);
            println!("{}", report.markdown());
        }
        if let Some(mutations) = cli.mutation_burst {
            let modes = if cli.modes.is_empty() {
                vec![Mode::Direct, Mode::Stream]
            } else {
                cli.modes.clone()
            };
            println!("{}", broker_bench::storm::BurstReport::HEADER);
            for mode in modes {
                let report =
                    broker_bench::storm::mutation_burst(&config, mode, mutations, cli.subscribers)?;
                println!("{}", report.markdown());
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let config = cli.config()?;
    let report = broker_bench::run(&config)?;
    let written = report.write(&config.out_dir)?;
    println!("{}", report.markdown());
    println!(
        "Written: {}, {}, {}",
        written.markdown.display(),
        written.csv.display(),
        written.svg.display()
    );
    let failed = report
        .cases
        .iter()
        .any(|c| matches!(c.outcome, Outcome::Failed(_)));
    Ok(if failed {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}
