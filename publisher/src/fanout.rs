//! The fan-out worker: delivers pages of a large fan-out, one SQS message each.

use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use broker::{Broker, FanoutPage};
use futures_util::StreamExt;

/// Handles one SQS batch; pages are independent, so they are delivered concurrently.
pub async fn handle(broker: &Broker, batch: SqsEvent) -> SqsBatchResponse {
    let failures: Vec<BatchItemFailure> = futures_util::stream::iter(batch.records)
        .map(|message| async move {
            let id = message.message_id.clone().unwrap_or_default();
            match deliver(broker, message.body.as_deref().unwrap_or_default()).await {
                Ok(()) => None,
                Err(reason) => {
                    tracing::error!(message = %id, %reason, "fan-out page failed");
                    let mut failure = BatchItemFailure::default();
                    failure.item_identifier = id;
                    Some(failure)
                }
            }
        })
        .buffer_unordered(10)
        .filter_map(|f| async move { f })
        .collect()
        .await;
    let mut response = SqsBatchResponse::default();
    response.batch_item_failures = failures;
    response
}

async fn deliver(broker: &Broker, body: &str) -> Result<(), String> {
    let page: FanoutPage =
        serde_json::from_str(body).map_err(|e| format!("not a fan-out page: {e}"))?;
    let report = broker
        .deliver_page(&page)
        .await
        .map_err(|e| e.to_string())?;
    // A page holds only the event's id, whose ULID carries its publication time.
    broker::metrics::record(
        &report,
        broker::metrics::published_at_ms_of_id(&page.event_id),
    );
    tracing::info!(event = %page.event_id, ?report, "fan-out page delivered");
    if report.is_complete() {
        Ok(())
    } else {
        Err(format!("{} posts failed", report.failed))
    }
}
