//! The mains of the delivery functions for any app: an app's binaries call
//! [`run_stream`] and [`run_fanout`] with the app.

use aws_lambda_events::dynamodb::Event as StreamEvent;
use aws_lambda_events::sqs::SqsEvent;
use broker::App;
use broker::metrics::emit_to_stdout;
use graphql_api::runtime::{Error, start};
use lambda_runtime::{LambdaEvent, service_fn};

/// The events table's stream function (the stream publisher) serving `app`.
pub async fn run_stream(app: impl App) -> Result<(), Error> {
    let broker = start(&app).await?;
    lambda_runtime::run(service_fn(|event: LambdaEvent<StreamEvent>| {
        let broker = broker.clone();
        async move {
            let handled = crate::stream::handle(&broker, event.payload);
            Ok::<_, Error>(emit_to_stdout("StreamPublisherFunction", handled).await)
        }
    }))
    .await
}

/// The fan-out queue's function (the fan-out worker) serving `app`.
pub async fn run_fanout(app: impl App) -> Result<(), Error> {
    let broker = start(&app).await?;
    lambda_runtime::run(service_fn(|event: LambdaEvent<SqsEvent>| {
        let broker = broker.clone();
        async move {
            let handled = crate::fanout::handle(&broker, event.payload);
            Ok::<_, Error>(emit_to_stdout("FanoutWorkerFunction", handled).await)
        }
    }))
    .await
}
