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

use std::path::PathBuf;
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

    println!(
        "| function | binary | size | start → first poll, median / p90 | first invocation, median / p90 | second invocation, median / p90 |"
    );
    println!("|---|---|---|---|---|---|");
    for (function, role, event) in FUNCTIONS {
        let binary = args.binaries.join(format!("{}-{role}", args.app));
        let size = std::fs::metadata(&binary)
            .with_context(|| format!("{}", binary.display()))?
            .len();
        let event: Value = fixture(event, &token);
        let (mut init, mut first, mut second) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..args.runs {
            let process = Function::start(function, &binary, &variables).await;
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
        println!(
            "| {function} | `{}-{role}` | {:.1} MB | {} | {} | {} |",
            args.app,
            size as f64 / 1e6,
            summary(&mut init),
            summary(&mut first),
            summary(&mut second),
        );
    }
    Ok(())
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
