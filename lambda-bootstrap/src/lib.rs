//! What every Lambda function of an app starts with, whatever it serves: JSON logs for
//! CloudWatch ([`init_tracing`], [`json_logs`]), the broker built from the environment the
//! SAM template sets ([`start`]), and [`run`], which serves a handler under the Lambda
//! runtime with each invocation's delivery metrics written as one EMF line.
//!
//! `graphql_api::runtime` (the WebSocket and HTTP functions) and `publisher::runtime` (the
//! stream publisher and the fan-out worker) are each a handler and a function name on top.

use std::fmt::Debug;
use std::future::Future;

use broker::metrics::emit_to_stdout;
use broker::{App, Broker};
use lambda_runtime::{Diagnostic, LambdaEvent, service_fn};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// The error a function's main ends with: the broker could not be built, or the Lambda
/// runtime stopped.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// The broker on AWS for `app`, from the environment the SAM template sets (see
/// [`broker::aws::broker_from_env`]), with JSON logs set up first so a configuration error
/// is logged like everything else.
pub async fn start(app: &dyn App) -> Result<Broker, Error> {
    init_tracing();
    let broker = broker::aws::broker_from_env(app).await.inspect_err(|e| {
        tracing::error!(error = %e, "the function cannot start");
    })?;
    Ok(broker)
}

/// Serves `app` as the Lambda function `function` (its name in the template, which its
/// metrics carry): builds the broker with [`start`], then hands every event to `handler`
/// with the broker, writing the invocation's delivery metrics to stdout as one EMF line
/// ([`broker::metrics::emit_to_stdout`]).
///
/// The handler's error type is the one Lambda reports: its type name becomes the error's
/// `errorType`, so a handler keeps its own error type rather than boxing it.
pub async fn run<A, R, E, H, F>(
    app: &dyn App,
    function: &'static str,
    handler: H,
) -> Result<(), Error>
where
    A: DeserializeOwned,
    R: Serialize,
    E: Into<Diagnostic> + Debug,
    H: Fn(Broker, A) -> F,
    F: Future<Output = Result<R, E>>,
{
    let broker = start(app).await?;
    lambda_runtime::run(service_fn(|event: LambdaEvent<A>| {
        emit_to_stdout(function, handler(broker.clone(), event.payload))
    }))
    .await
}

/// JSON logs for CloudWatch, one object a line, filtered by `RUST_LOG` (default `info`).
pub fn init_tracing() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // A second call (a test, a main calling `start` twice) keeps the first subscriber.
    let _ = tracing::subscriber::set_global_default(json_logs(std::io::stdout, filter));
}

/// The functions' log format, writing what `filter` lets through to `writer`: one JSON
/// object per event with its fields at the top level (CloudWatch Logs Insights reads them as
/// columns), no ANSI colour codes, no timestamp (CloudWatch stamps every line), no target.
/// Tokens are never logged: handlers log connection ids, user ids and reasons, never a
/// frame or a header (`tests/tests/logs.rs` checks it at every level).
pub fn json_logs<W>(writer: W, filter: EnvFilter) -> impl tracing::Subscriber + Send + Sync
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_ansi(false)
        .without_time()
        .with_target(false)
        .with_env_filter(filter)
        .with_writer(writer)
        .finish()
}
