//! `broker-bench`: the latency trade-off between the two delivery designs.
//!
//! In `stream` mode a mutation appends an event and returns; a stream-triggered publisher
//! delivers it after the next poll. In `direct` mode the resolver delivers to every
//! subscriber before the mutation returns. For each mode and fan-out size the benchmark
//! opens that many subscriber connections over real WebSockets (`graphql-transport-ws`, all
//! as one user on one board), sends paced mutations over HTTP from a separate client, and
//! measures per mutation its response latency and per subscriber its delivery latency,
//! accounting for every delivery (lost and duplicated ones are counted).
//!
//! # Layout
//! - [`config`]: modes, targets and the knobs of a run.
//! - [`run`]: the cases: subscribers, mutations, deliveries, accounting.
//! - [`client`]: the WebSocket subscriber and the HTTP mutation client.
//! - [`echo`]: the floor, a raw WebSocket echo round trip on loopback.
//! - [`idle`]: `--idle-sockets`, the local gateway's memory per idle subscribed socket.
//! - [`storm`]: `--close-storm N` (another user's `connection_init` while N sockets close at
//!   once) and `--mutation-burst N` (N mutations at once), against `broker-local`.
//! - [`report`]: the Markdown table, the CSV and the SVG plot.
//! - [`backend`]: which store the in-process local mode runs on; the DynamoDB emulator.
//! - [`limits`], [`cpu`], [`stats`], [`progress`]: machine limits, CPU time per thread
//!   name, latency percentiles, the progress bar.

pub mod atomic;
pub mod backend;
pub mod client;
pub mod config;
pub mod cpu;
pub mod echo;
pub mod idle;
pub mod limits;
pub mod progress;
pub mod report;
pub mod run;
pub mod stats;
pub mod storm;

pub use config::{Config, Emulator, Mode, Remote, Target};
pub use report::{CaseResult, Measurement, Outcome, Report, Written};
pub use run::run;
pub use stats::Percentiles;
