//! Running on Lambda: the mains of the WebSocket and HTTP functions for any app. An app's
//! binary is one line: `run_websocket(MyApp).await`. The functions' logging and start-up
//! are [`lambda_bootstrap`]'s, re-exported here.

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayWebsocketProxyRequest};
use broker::App;
pub use lambda_bootstrap::{Error, init_tracing, json_logs, start};

use crate::{http_api, websocket};

/// The WebSocket API's function (`$connect`, `$disconnect`, `$default`) serving `app`.
pub async fn run_websocket(app: impl App) -> Result<(), Error> {
    lambda_bootstrap::run(
        &app,
        "WebSocketFunction",
        |broker, event: ApiGatewayWebsocketProxyRequest| async move {
            websocket::handle(&broker, event).await
        },
    )
    .await
}

/// The HTTP API's function (`POST`/`GET /graphql`) serving `app`.
pub async fn run_http(app: impl App) -> Result<(), Error> {
    lambda_bootstrap::run(
        &app,
        "HttpFunction",
        |broker, event: ApiGatewayV2httpRequest| async move {
            Ok::<_, Error>(http_api::handle(&broker, event).await)
        },
    )
    .await
}
