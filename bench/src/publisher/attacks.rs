//! CPU of one hostile request, with and without the broker's cost limits: the documents
//! that stalled the service (nested fragment spreads, hundreds of thousands of fields,
//! directives or operations, 30 KB of aliases or fields, a 5 MB string literal).
//!
//! "without" runs the example app's schema directly, as every request ran before the limits
//! (async-graphql's own depth and complexity limits only); "broker" runs the same document
//! through `Broker::execute` (sockets and HTTP after the body limit); "HTTP" sends it as a
//! POST body through the HTTP handler, body limit included. Everything runs on one thread,
//! so its CPU clock is the request's cost.

use std::sync::Arc;
use std::time::Duration;

use async_graphql::{Executor, Request};
use boards::{MemoryBoardStore, build_schema};
use broker::memory::{
    MemoryConnectionStore, MemoryEventLog, MemoryPageMarks, MemorySubscriptionStore,
    RecordingGateway,
};
use broker::{AuthConfig, Authenticator, Broker, BrokerConfig, Ports, UserId};
use testkit::documents::fragment_bomb;

fn thread_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

fn attacks() -> Vec<(String, String)> {
    vec![
        ("fragment spreads, 14 levels".into(), fragment_bomb(14)),
        ("fragment spreads, 20 levels".into(), fragment_bomb(20)),
        (
            "400k fields".into(),
            format!("{{ {} }}", "__typename ".repeat(400_000)),
        ),
        (
            "100k directives".into(),
            format!("{{ __typename {} }}", "@skip(if: false) ".repeat(100_000)),
        ),
        (
            "100k operations".into(),
            (0..100_000)
                .map(|i| format!("query Q{i} {{ __typename }}\n"))
                .collect(),
        ),
        // What fits a socket message: about 30 KB, over the limits by its aliases or its
        // fields, refused before it is parsed.
        (
            "30 KB of aliases".into(),
            format!(
                "{{ {} }}",
                (0..1_800)
                    .map(|i| format!("a{i}: __typename "))
                    .collect::<String>()
            ),
        ),
        (
            "30 KB of fields".into(),
            format!("{{ {} }}", "__typename ".repeat(2_800)),
        ),
        (
            "5 MB string literal".into(),
            format!("{{ boards(x: \"{}\") {{ id }} }}", "x".repeat(5 << 20)),
        ),
    ]
}

/// Runs `document` through the schema alone, as every request ran before the limits.
async fn without_limits(schema: &boards::BoardsSchema, document: &str) -> Duration {
    let start = thread_cpu();
    let before = Executor::execute(schema, Request::new(document.to_owned())).await;
    let without = thread_cpu() - start;
    assert!(!before.errors.is_empty() || before.data != async_graphql::Value::Null);
    drop(before);
    without
}

/// Runs `document` through `Broker::execute` (as a socket operation) and as an HTTP POST
/// through the HTTP handler: the CPU of each and the HTTP status.
async fn with_limits(
    broker: &Broker,
    token: &str,
    name: &str,
    document: &str,
) -> anyhow::Result<(Duration, Duration, i64)> {
    let start = thread_cpu();
    let response = broker
        .execute(UserId::from("attacker"), Request::new(document.to_owned()))
        .await;
    let through_broker = thread_cpu() - start;
    anyhow::ensure!(!response.errors.is_empty(), "{name}: not refused");

    let body = serde_json::json!({ "query": document }).to_string();
    let mut event = aws_lambda_events::apigw::ApiGatewayV2httpRequest::default();
    event.request_context.http.method = http::Method::POST;
    event
        .headers
        .insert("authorization", format!("Bearer {token}").parse()?);
    event
        .headers
        .insert("content-type", "application/json".parse()?);
    event.body = Some(body);
    let start = thread_cpu();
    let reply = graphql_api::http_api::handle(broker, event).await;
    let through_http = thread_cpu() - start;
    let answer = match &reply.body {
        Some(aws_lambda_events::encodings::Body::Text(t)) => t.clone(),
        _ => String::new(),
    };
    anyhow::ensure!(
        reply.status_code != 200 || answer.contains("errors"),
        "{name}: HTTP did not refuse it"
    );
    Ok((through_broker, through_http, reply.status_code))
}

/// Prices every document. By default every limited run comes first and the unlimited ones
/// after, so no figure carries the clean-up of another document's run; `interleaved` runs
/// each document unlimited just before its limited runs.
pub(crate) fn run(interleaved: bool) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let schema = build_schema(Arc::new(MemoryBoardStore::new(&Default::default())));
        let auth = Authenticator::new(AuthConfig {
            secret: "publisher-bench-secret-0123456789-0123".into(),
            issuer: None,
            audience: None,
            leeway_secs: broker::auth::DEFAULT_LEEWAY_SECS,
        });
        let token = auth.mint("attacker", 600);
        let subscriptions = MemorySubscriptionStore::default();
        let ports = Ports {
            connections: Arc::new(MemoryConnectionStore::default()),
            replay_gate: Arc::new(subscriptions.replay_gate()),
            subscriptions: Arc::new(subscriptions),
            page_marks: Arc::new(MemoryPageMarks::default()),
            quotas: Arc::new(broker::memory::MemoryQuotas::default()),
            events: Arc::new(MemoryEventLog::default()),
            gateway: Arc::new(RecordingGateway::default()),
            fanout: None,
        };
        let broker = Broker::new(schema.clone(), ports, auth, BrokerConfig::default());
        let attacks = attacks();
        let mut rows = Vec::new();
        for (name, document) in &attacks {
            let without = if interleaved {
                Some(without_limits(&schema, document).await)
            } else {
                None
            };
            rows.push((without, with_limits(&broker, &token, name, document).await?));
        }
        for ((_, document), (without, _)) in attacks.iter().zip(rows.iter_mut()) {
            if without.is_none() {
                *without = Some(without_limits(&schema, document).await);
            }
        }
        println!(
            "| document | bytes | without limits | broker | HTTP handler |\n|---|---:|---:|---:|---:|"
        );
        for ((name, document), (without, (broker, http, status))) in attacks.iter().zip(rows) {
            println!(
                "| {name} | {} | {:.1} ms | {:.3} ms | {:.3} ms ({status}) |",
                document.len(),
                without.unwrap_or_default().as_secs_f64() * 1e3,
                broker.as_secs_f64() * 1e3,
                http.as_secs_f64() * 1e3,
            );
        }
        anyhow::Ok(())
    })
}
