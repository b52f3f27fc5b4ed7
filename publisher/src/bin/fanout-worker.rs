//! Lambda function for the SQS fan-out queue.

use aws_lambda_events::sqs::SqsEvent;
use graphql_api::runtime;
use lambda_runtime::{LambdaEvent, service_fn};

#[tokio::main]
async fn main() -> Result<(), runtime::Error> {
    runtime::init_tracing();
    let broker = runtime::broker_from_env().await?;
    lambda_runtime::run(service_fn(|event: LambdaEvent<SqsEvent>| {
        let broker = broker.clone();
        async move { Ok::<_, runtime::Error>(publisher::fanout::handle(&broker, event.payload).await) }
    }))
    .await
}
