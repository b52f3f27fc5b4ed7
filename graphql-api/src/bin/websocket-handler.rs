//! Lambda function for the WebSocket API's `$connect`, `$disconnect` and `$default` routes.

use aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest;
use graphql_api::{runtime, websocket};
use lambda_runtime::{LambdaEvent, service_fn};

#[tokio::main]
async fn main() -> Result<(), runtime::Error> {
    runtime::init_tracing();
    let broker = runtime::broker_from_env().await?;
    lambda_runtime::run(service_fn(
        |event: LambdaEvent<ApiGatewayWebsocketProxyRequest>| {
            let broker = broker.clone();
            async move { websocket::handle(&broker, event.payload).await }
        },
    ))
    .await
}
