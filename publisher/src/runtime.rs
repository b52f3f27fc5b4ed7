//! The mains of the delivery functions for any app: an app's binaries call
//! [`run_stream`] and [`run_fanout`] with the app. Start-up, logs and metrics are
//! [`lambda_bootstrap`]'s.

use aws_lambda_events::dynamodb::Event as StreamEvent;
use aws_lambda_events::sqs::SqsEvent;
use broker::App;
pub use lambda_bootstrap::Error;

/// The events table's stream function (the stream publisher) serving `app`.
pub async fn run_stream(app: impl App) -> Result<(), Error> {
    lambda_bootstrap::run(
        &app,
        "StreamPublisherFunction",
        |broker, batch: StreamEvent| async move {
            Ok::<_, Error>(crate::stream::handle(&broker, batch).await)
        },
    )
    .await
}

/// The fan-out queue's function (the fan-out worker) serving `app`.
pub async fn run_fanout(app: impl App) -> Result<(), Error> {
    lambda_bootstrap::run(
        &app,
        "FanoutWorkerFunction",
        |broker, batch: SqsEvent| async move {
            Ok::<_, Error>(crate::fanout::handle(&broker, batch).await)
        },
    )
    .await
}
