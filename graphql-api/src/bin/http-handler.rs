//! Lambda function for GraphQL over the HTTP API.

use aws_lambda_events::apigw::ApiGatewayV2httpRequest;
use graphql_api::{http_api, runtime};
use lambda_runtime::{LambdaEvent, service_fn};

#[tokio::main]
async fn main() -> Result<(), runtime::Error> {
    runtime::init_tracing();
    let broker = runtime::broker_from_env().await?;
    lambda_runtime::run(service_fn(|event: LambdaEvent<ApiGatewayV2httpRequest>| {
        let broker = broker.clone();
        async move { Ok::<_, runtime::Error>(http_api::handle(&broker, event.payload).await) }
    }))
    .await
}
