//! What a benchmark run measures, and against what.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// A delivery design under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Mode {
    /// The resolver delivers to every subscriber before the mutation returns.
    Direct,
    /// The mutation appends an event to the embedded store's log; the stream publisher,
    /// fed by a poller, delivers it. Every subscriber is served inline by the publisher
    /// (the fan-out threshold is set above any size).
    Stream,
    /// `stream` with the local mode on DynamoDB (the emulator): the events table's real
    /// stream is polled through DynamoDB Streams. No fan-out queue: the publisher delivers.
    StreamDynamodb,
    /// `stream-dynamodb` through the fan-out path: above the fan-out threshold (set low)
    /// the publisher splits the subscribers into pages on an SQS queue (the emulator's),
    /// and fan-out workers polling it deliver them.
    SqsFanout,
}

impl Mode {
    /// Every mode, in the order a sweep runs them.
    pub const ALL: [Mode; 4] = [
        Mode::Direct,
        Mode::Stream,
        Mode::StreamDynamodb,
        Mode::SqsFanout,
    ];

    /// The mode's name on the command line and in the report.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Direct => "direct",
            Mode::Stream => "stream",
            Mode::StreamDynamodb => "stream-dynamodb",
            Mode::SqsFanout => "sqs-fanout",
        }
    }

    /// Whether deliveries wait for a stream poll (and so for `--poll-interval-ms`).
    pub fn polls(self) -> bool {
        self != Mode::Direct
    }

    /// Whether the in-process local mode runs this mode on the DynamoDB emulator.
    pub fn uses_emulator(self) -> bool {
        matches!(self, Mode::StreamDynamodb | Mode::SqsFanout)
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Mode {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        Mode::ALL
            .into_iter()
            .find(|m| m.name().eq_ignore_ascii_case(value.trim()))
            .ok_or_else(|| {
                let names: Vec<_> = Mode::ALL.iter().map(|m| m.name()).collect();
                format!(
                    "unknown mode {value:?} (expected one of {})",
                    names.join(", ")
                )
            })
    }
}

/// Where the broker under test runs.
#[derive(Clone, Debug)]
pub enum Target {
    /// The local mode, started by the benchmark in this process, once per mode and size.
    Local,
    /// A broker that is already running: a local mode started by hand, or a deployed
    /// stack. Its configuration decides the delivery mode: the benchmark's mode is a label.
    Remote(Remote),
}

/// A running broker's endpoints and credentials.
#[derive(Clone, Debug)]
pub struct Remote {
    /// `POST` GraphQL endpoint, e.g. `http://127.0.0.1:4000/graphql`.
    pub graphql_url: String,
    /// WebSocket endpoint, e.g. `ws://127.0.0.1:4000/graphql` or `wss://...`.
    pub websocket_url: String,
    /// A token of the user who owns (or will own) the board.
    pub token: String,
    /// The board to add cards to; created with `createBoard` when absent.
    pub board: Option<String>,
}

/// Where the DynamoDB emulator comes from, for the modes that need it.
#[derive(Clone, Debug, Default)]
pub enum Emulator {
    /// None given: the DynamoDB modes are skipped.
    #[default]
    None,
    /// An emulator already listening (`MOTO_ENDPOINT`).
    Endpoint(String),
    /// Start `moto_server` from this path on a free loopback port.
    Start(PathBuf),
}

/// One benchmark run.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where the broker under test runs.
    pub target: Target,
    /// The modes to run, in order.
    pub modes: Vec<Mode>,
    /// Subscriber connections per case (the fan-out size).
    pub sizes: Vec<usize>,
    /// Mutations sent per case.
    pub mutations: usize,
    /// Mutations per second. One mutation is in flight at a time: when one takes longer
    /// than the interval, the next is sent as soon as it returns.
    pub rate: f64,
    /// Deliveries per second the mutations may ask for: at large fan-outs the mutation rate
    /// is lowered to this divided by the size, so that the cases measure latency rather
    /// than a backlog growing behind a publisher that cannot keep up.
    pub max_delivery_rate: f64,
    /// The same for the modes on the emulator (a single Python process that every
    /// connection, subscription and delivery goes through) against the in-process broker.
    pub emulator_max_delivery_rate: f64,
    /// Wait between two polls of an empty stream (0: the poller wakes on each append).
    pub poll_interval: Duration,
    /// Fan-out threshold for `sqs-fanout` (subscribers above it go through pages).
    pub fanout_threshold: usize,
    /// Subscriptions per fan-out page.
    pub fanout_page_size: usize,
    /// Posts in flight at once for one delivery (the broker's `post_concurrency`).
    pub post_concurrency: usize,
    /// Round trips of the raw WebSocket echo floor.
    pub echo_round_trips: usize,
    /// Subscriber connections being opened at once.
    pub connect_concurrency: usize,
    /// The same for the modes on the emulator.
    pub emulator_connect_concurrency: usize,
    /// After the last mutation returns, how long to wait for a delivery that has not come
    /// yet before counting it lost (the wait restarts with each delivery).
    pub drain_idle: Duration,
    /// Where the DynamoDB emulator comes from, for the modes that need it.
    pub emulator: Emulator,
    /// Where the table, CSV and plot are written.
    pub out_dir: PathBuf,
    /// Draw a progress bar on stderr.
    pub progress: bool,
}

impl Config {
    /// The fan-out sizes of a full sweep.
    pub const DEFAULT_SIZES: [usize; 5] = [1, 10, 100, 1_000, 10_000];

    /// The full sweep of the embedded modes against the in-process local mode, with
    /// Lambda's poll interval.
    pub fn sweep(out_dir: impl Into<PathBuf>) -> Self {
        Self {
            target: Target::Local,
            modes: vec![Mode::Direct, Mode::Stream],
            sizes: Self::DEFAULT_SIZES.to_vec(),
            mutations: 40,
            rate: 10.0,
            max_delivery_rate: 2_000.0,
            emulator_max_delivery_rate: 100.0,
            poll_interval: Duration::from_millis(250),
            fanout_threshold: 0,
            fanout_page_size: broker::BrokerConfig::default().fanout_page_size,
            post_concurrency: broker::BrokerConfig::default().post_concurrency,
            echo_round_trips: 2_000,
            connect_concurrency: 64,
            emulator_connect_concurrency: 8,
            drain_idle: Duration::from_secs(5),
            emulator: Emulator::None,
            out_dir: out_dir.into(),
            progress: false,
        }
    }

    /// A few seconds: sizes 1 and 10, a handful of mutations, `direct` and `stream`.
    pub fn quick(out_dir: impl Into<PathBuf>) -> Self {
        Self {
            modes: vec![Mode::Direct, Mode::Stream],
            sizes: vec![1, 10],
            mutations: 10,
            rate: 20.0,
            echo_round_trips: 200,
            drain_idle: Duration::from_secs(3),
            ..Self::sweep(out_dir)
        }
    }

    /// Whether `mode` runs on the emulator in this run.
    fn on_emulator(&self, mode: Mode) -> bool {
        self.is_local() && mode.uses_emulator()
    }

    /// Mutations per second for `mode` at fan-out `size`: `rate`, lowered so that `size`
    /// deliveries per mutation stay within the delivery budget. Infinite means no pacing.
    pub fn rate_at(&self, mode: Mode, size: usize) -> f64 {
        let rate = if self.rate > 0.0 {
            self.rate
        } else {
            f64::INFINITY
        };
        let budget = if self.on_emulator(mode) {
            self.emulator_max_delivery_rate
        } else {
            self.max_delivery_rate
        };
        if budget > 0.0 && size > 0 {
            rate.min(budget / size as f64)
        } else {
            rate
        }
    }

    /// The gap between two mutations for `mode` at fan-out `size`.
    pub fn interval_at(&self, mode: Mode, size: usize) -> Duration {
        let rate = self.rate_at(mode, size);
        if rate.is_finite() {
            Duration::from_secs_f64(1.0 / rate)
        } else {
            Duration::ZERO
        }
    }

    /// Whether the broker under test is the in-process local mode.
    pub fn is_local(&self) -> bool {
        matches!(self.target, Target::Local)
    }

    /// Subscriber connections opened at once for `mode`.
    pub fn connect_concurrency_for(&self, mode: Mode) -> usize {
        if self.on_emulator(mode) {
            self.emulator_connect_concurrency.max(1)
        } else {
            self.connect_concurrency.max(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_fan_outs_lower_the_mutation_rate() {
        let config = Config::sweep("out");
        assert_eq!(config.rate_at(Mode::Stream, 1), 10.0);
        assert_eq!(config.rate_at(Mode::Stream, 100), 10.0);
        assert_eq!(config.rate_at(Mode::Direct, 1_000), 2.0);
        assert_eq!(
            config.interval_at(Mode::Direct, 1_000),
            Duration::from_millis(500)
        );
        assert_eq!(config.rate_at(Mode::SqsFanout, 100), 1.0);
        let unpaced = Config {
            rate: 0.0,
            max_delivery_rate: 0.0,
            emulator_max_delivery_rate: 0.0,
            ..config
        };
        assert_eq!(unpaced.interval_at(Mode::Stream, 1_000), Duration::ZERO);
    }
}
