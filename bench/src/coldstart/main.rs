//! `broker-coldstart-bench`: the cold start of the app's four Lambda binaries.
//!
//! Each binary is started `--runs` times as Lambda starts it: a fresh process with the
//! function's variables, polling a Lambda Runtime API served by this process
//! (`testkit::lambda`), against moto (`MOTO_ENDPOINT`) and a Management API stand-in.
//! For each start it measures the time from spawning the process to its first
//! `GET /2018-06-01/runtime/invocation/next` (the init phase Lambda reports as Init
//! Duration), the first invocation (from handing the event over to the posted result), and
//! a second one on the same process (warm, for comparison). Then the process is killed.
//! Prints median and p90 of each, and the size of each binary.
//!
//! First it does the same with the floor: `coldstart-floor` (bench/floor), a bare
//! `lambda_runtime` binary that echoes its event, which it builds itself with
//! `cargo build --release`. Each function's row gives its median start over the floor's,
//! measured in the same run.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use broker::{AuthConfig, Authenticator};
use clap::Parser;
use serde_json::Value;
use testkit::aws::{Reply, ScriptedServer, fresh_queue, fresh_tables};
use testkit::fixtures::{USER, fixture};
use testkit::lambda::{Function, Outcome, function_environment};

const SECRET: &str = "coldstart-bench-secret-0123456789-0123456789";
const LIMIT: Duration = Duration::from_secs(30);

#[derive(Parser)]
#[command(about = "Cold start of the app's four Lambda binaries under a local Runtime API")]
struct Args {
    /// Folder holding the binaries (`cargo build --release -p boards --bins` puts them in
    /// target/release).
    #[arg(long, default_value = "target/release")]
    binaries: PathBuf,
    /// The app whose binaries run.
    #[arg(long, default_value = "boards")]
    app: String,
    /// Starts of each binary.
    #[arg(long, default_value_t = 20)]
    runs: usize,
    /// The floor's binary; by default `cargo build --release -p coldstart-floor` builds it.
    #[arg(long)]
    floor: Option<PathBuf>,
}

/// Each function, its binary's role and the event from events/ it is first invoked with.
const FUNCTIONS: [(&str, &str, &str); 4] = [
    ("WebSocketFunction", "websocket", "connect.json"),
    ("HttpFunction", "http", "http-query.json"),
    ("StreamPublisherFunction", "stream", "stream-batch.json"),
    ("FanoutWorkerFunction", "fanout", "sqs-fanout.json"),
];

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let tables = fresh_tables().await;
    let (_sqs, queue_url) = fresh_queue().await;
    let management = ScriptedServer::start(vec![Reply::new(200, "{}")]).await;
    let variables = function_environment(&tables, &queue_url, &management.endpoint, SECRET);
    let token = Authenticator::new(AuthConfig {
        secret: SECRET.into(),
        issuer: None,
        audience: None,
        leeway_secs: broker::auth::DEFAULT_LEEWAY_SECS,
    })
    .mint(USER, 3600);

    let floor = match args.floor {
        Some(floor) => floor,
        None => build_floor()?,
    };
    println!(
        "| function | binary | size | start → first poll, median / p90 | start ÷ floor's (medians) | first invocation, median / p90 | second invocation, median / p90 |"
    );
    println!("|---|---|---|---|---|---|---|");
    // The floor answers any event: it gets the first function's.
    let floor_event: Value = fixture(FUNCTIONS[0].2, &token);
    let floor_start = measure("Floor", &floor, &floor_event, &variables, args.runs).await?;
    floor_start.print("bare runtime (echo)", &floor, None);
    for (function, role, event) in FUNCTIONS {
        let binary = args.binaries.join(format!("{}-{role}", args.app));
        let event: Value = fixture(event, &token);
        let measured = measure(function, &binary, &event, &variables, args.runs).await?;
        measured.print(function, &binary, Some(&floor_start));
    }
    Ok(())
}

/// One binary's starts: the time to its first poll, its first and second invocations.
struct Starts {
    size: u64,
    init: Vec<Duration>,
    first: Vec<Duration>,
    second: Vec<Duration>,
}

impl Starts {
    fn print(&self, function: &str, binary: &Path, floor: Option<&Starts>) {
        let ratio = match floor {
            Some(floor) => format!(
                "{:.2}x",
                median(&self.init).as_secs_f64() / median(&floor.init).as_secs_f64()
            ),
            None => "1x".to_owned(),
        };
        let name = binary.file_name().unwrap_or_default().to_string_lossy();
        println!(
            "| {function} | `{name}` | {:.1} MB | {} | {ratio} | {} | {} |",
            self.size as f64 / 1e6,
            summary(&mut self.init.clone()),
            summary(&mut self.first.clone()),
            summary(&mut self.second.clone()),
        );
    }
}

/// Starts `binary` as `function` `runs` times, invoking it twice with `event` each time.
async fn measure(
    function: &str,
    binary: &Path,
    event: &Value,
    variables: &[(String, String)],
    runs: usize,
) -> anyhow::Result<Starts> {
    let size = std::fs::metadata(binary)
        .with_context(|| format!("{}", binary.display()))?
        .len();
    let (mut init, mut first, mut second) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        let process = Function::start(function, binary, variables).await;
        let Some(polled) = process.api.first_poll(LIMIT).await else {
            bail!("{function} never polled: {:?}", process.output());
        };
        init.push(polled - process.started);
        for durations in [&mut first, &mut second] {
            let sent = Instant::now();
            match process.api.invoke(event.clone(), LIMIT).await {
                Ok(Outcome::Response(_)) => durations.push(sent.elapsed()),
                other => bail!("{function}: {other:?}: {:?}", process.output()),
            }
        }
    }
    init.sort();
    Ok(Starts {
        size,
        init,
        first,
        second,
    })
}

/// Builds `coldstart-floor` with the release profile and returns its path.
fn build_floor() -> anyhow::Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .args([
            "build",
            "--release",
            "-p",
            "coldstart-floor",
            "--message-format=json-render-diagnostics",
        ])
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("cargo build -p coldstart-floor")?;
    if !output.status.success() {
        bail!("cargo build -p coldstart-floor failed");
    }
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter_map(|message| message.get("executable")?.as_str().map(PathBuf::from))
        .next_back()
        .context("cargo built no coldstart-floor binary")
}

/// The median of sorted `samples`.
fn median(samples: &[Duration]) -> Duration {
    samples[(samples.len() - 1) / 2]
}

/// "median / p90" in milliseconds.
fn summary(samples: &mut [Duration]) -> String {
    samples.sort();
    let at = |q: f64| {
        let index = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
        samples[index].as_secs_f64() * 1e3
    };
    format!("{:.1} / {:.1} ms", at(0.5), at(0.9))
}
