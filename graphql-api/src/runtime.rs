//! Running on Lambda: the functions' logging, and the mains of the WebSocket and HTTP
//! functions for any app. An app's binary is one line: `run_websocket(MyApp).await`.

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayWebsocketProxyRequest};
use broker::metrics::emit_to_stdout;
use broker::{App, Broker};
use lambda_runtime::{LambdaEvent, service_fn};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::{http_api, websocket};

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

/// The WebSocket API's function (`$connect`, `$disconnect`, `$default`) serving `app`.
pub async fn run_websocket(app: impl App) -> Result<(), Error> {
    let broker = start(&app).await?;
    lambda_runtime::run(service_fn(
        |event: LambdaEvent<ApiGatewayWebsocketProxyRequest>| {
            let broker = broker.clone();
            async move {
                let handled = websocket::handle(&broker, event.payload);
                emit_to_stdout("WebSocketFunction", handled).await
            }
        },
    ))
    .await
}

/// The HTTP API's function (`POST`/`GET /graphql`) serving `app`.
pub async fn run_http(app: impl App) -> Result<(), Error> {
    let broker = start(&app).await?;
    lambda_runtime::run(service_fn(|event: LambdaEvent<ApiGatewayV2httpRequest>| {
        let broker = broker.clone();
        async move {
            let handled = http_api::handle(&broker, event.payload);
            Ok::<_, Error>(emit_to_stdout("HttpFunction", handled).await)
        }
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
