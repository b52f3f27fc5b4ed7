//! The stream publisher: delivers every event inserted into the events table.

use std::collections::HashSet;

use aws_lambda_events::dynamodb::Event as StreamEvent;
use aws_lambda_events::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};
use broker::aws::event_from_image;
use broker::{Broker, Event};

/// Handles one stream batch, in order.
///
/// Events of one topic must reach subscribers in the order they were published, so once a
/// record fails, the later records of its topic are not delivered now but reported as failed
/// too. Lambda retries from the lowest failed sequence number; records of other topics go out
/// at once, and are skipped on that retry because they are marked delivered.
pub async fn handle(broker: &Broker, batch: StreamEvent) -> DynamoDbEventResponse {
    let mut response = DynamoDbEventResponse::default();
    let mut blocked_topics = HashSet::new();
    for record in &batch.records {
        // INSERT only: MODIFY is our own `delivered` mark, REMOVE is TTL expiry.
        if record.event_name != "INSERT" {
            continue;
        }
        let outcome = match event_from_image(record.change.new_image.clone()) {
            Err(e) => Err(format!("undecodable event: {e}")),
            Ok(event) if blocked_topics.contains(&event.topic) => Err(format!(
                "held back behind an earlier failure on {}",
                event.topic
            )),
            Ok(event) => {
                let topic = event.topic.clone();
                let delivered = deliver(broker, event).await;
                if delivered.is_err() {
                    blocked_topics.insert(topic);
                }
                delivered
            }
        };
        if let Err(reason) = outcome {
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

async fn deliver(broker: &Broker, event: Event) -> Result<(), String> {
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
