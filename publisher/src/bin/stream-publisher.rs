//! Lambda function for the events table's DynamoDB Stream.

use aws_lambda_events::dynamodb::Event;
use graphql_api::runtime;
use lambda_runtime::{LambdaEvent, service_fn};

#[tokio::main]
async fn main() -> Result<(), runtime::Error> {
    runtime::init_tracing();
    let broker = runtime::broker_from_env().await?;
    lambda_runtime::run(service_fn(|event: LambdaEvent<Event>| {
        let broker = broker.clone();
        async move { Ok::<_, runtime::Error>(publisher::stream::handle(&broker, event.payload).await) }
    }))
    .await
}
