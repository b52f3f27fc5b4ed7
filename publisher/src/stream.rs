//! The stream publisher: delivers every event inserted into the events table.

use aws_lambda_events::dynamodb::{Event as StreamEvent, EventRecord};
use aws_lambda_events::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};
use broker::Broker;
use broker::aws::event_from_image;

/// Handles one stream batch. Records are delivered in order (events of a topic stay
/// ordered); a record that fails is reported by its sequence number and Lambda retries from
/// there, so records after it that already went out are skipped on the retry as delivered.
pub async fn handle(broker: &Broker, batch: StreamEvent) -> DynamoDbEventResponse {
    let mut response = DynamoDbEventResponse::default();
    for record in &batch.records {
        // INSERT only: MODIFY is our own `delivered` mark, REMOVE is TTL expiry.
        if record.event_name != "INSERT" {
            continue;
        }
        if let Err(reason) = deliver(broker, record).await {
            tracing::error!(
                sequence = record.change.sequence_number.as_deref().unwrap_or_default(),
                %reason,
                "stream record failed"
            );
            let mut failure = DynamoDbBatchItemFailure::default();
            failure.item_identifier = record.change.sequence_number.clone();
            response.batch_item_failures.push(failure);
        }
    }
    response
}

async fn deliver(broker: &Broker, record: &EventRecord) -> Result<(), String> {
    let event = event_from_image(record.change.new_image.clone()).map_err(|e| e.to_string())?;
    let id = event.id.clone();
    let report = broker
        .deliver_event(event)
        .await
        .map_err(|e| e.to_string())?;
    tracing::info!(event = %id, ?report, "event delivered");
    if report.is_complete() {
        Ok(())
    } else {
        Err(format!("{} posts failed", report.failed))
    }
}
