//! `broker-coldstart-bench`: the cold start of the app's four Lambda binaries.
//!
//! Each binary is started `--runs` times as Lambda starts it: a fresh process with the
//! function's variables, polling a Lambda Runtime API served by this process
//! (`broker_tests::lambda`), against moto (`MOTO_ENDPOINT`) and a Management API stand-in.
//! For each start it measures the time from spawning the process to its first
//! `GET /2018-06-01/runtime/invocation/next` (the init phase Lambda reports as Init
//! Duration), the first invocation (from handing the event over to the posted result), and
//! a second one on the same process (warm, for comparison). Then the process is killed.
//! Prints median and p90 of each, and the size of each binary.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use broker::{AuthConfig, Authenticator};
use broker_tests::aws::{Reply, ScriptedServer, fresh_queue, fresh_tables, moto_endpoint};
use broker_tests::fixtures::{USER, fixture};
use broker_tests::lambda::{Function, Outcome};
use clap::Parser;
use serde_json::Value;

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
    let variables: Vec<(String, String)> = [
        ("CONNECTIONS_TABLE", tables.names.connections.as_str()),
        ("SUBSCRIPTIONS_TABLE", tables.names.subscriptions.as_str()),
        ("EVENTS_TABLE", tables.names.events.as_str()),
        ("BOARDS_TABLE", tables.app_table.as_str()),
        ("FANOUT_QUEUE_URL", queue_url.as_str()),
        ("JWT_SECRET", SECRET),
        ("MANAGEMENT_ENDPOINT", management.endpoint.as_str()),
        ("AWS_ENDPOINT_URL", &moto_endpoint()),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("RUST_LOG", "info"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let token = Authenticator::new(AuthConfig {
        secret: SECRET.into(),
        issuer: None,
        audience: None,
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
