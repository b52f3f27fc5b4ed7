//! The stream publisher: delivers every event inserted into the events table.

use aws_lambda_events::dynamodb::Event as StreamEvent;
use aws_lambda_events::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};
use broker::aws::event_from_image;
use broker::{Broker, Event, Topic, TopicRead};
use futures_util::StreamExt;
use futures_util::stream;

use crate::DeliveryError;

/// Topics of one batch delivered at once, at most.
const TOPIC_CONCURRENCY: usize = 16;

/// A record's index in its batch, its event, and when the item was written (milliseconds).
type Pending = (usize, Event, Option<u64>);

/// Handles one stream batch.
///
/// Events of one topic must reach subscribers in the order they were published, so each
/// topic's events go one after another, and once one fails, the later records of its topic
/// are not delivered now but reported as failed too. Lambda retries from the lowest failed
/// sequence number; records of other topics are skipped on that retry because they are
/// marked delivered. Topics are independent, so they are delivered concurrently: a topic
/// whose rendering or posts are slow holds back only itself. When a batch has more topics
/// than are delivered at once, those with the fewest events go first: a topic with one
/// event does not wait behind another's long run.
///
/// A record no retry could deliver (an image that is not an event, an audience no user can
/// have: see [`broker::check_audience`]) is logged, counted (`Undeliverable`) and reported
/// as processed: retrying it would only hold back the records behind it.
pub async fn handle(broker: &Broker, batch: StreamEvent) -> DynamoDbEventResponse {
    let mut failed: Vec<(usize, DeliveryError)> = Vec::new();
    // Each topic's records in batch order, keyed by topic in order of first appearance.
    let mut topics: Vec<(Topic, Vec<Pending>)> = Vec::new();
    for (index, record) in batch.records.iter().enumerate() {
        // INSERT only: MODIFY is our own `delivered` mark, REMOVE is TTL expiry.
        if record.event_name != "INSERT" {
            continue;
        }
        match event_from_image(record.change.new_image.clone()) {
            Err(e) => undeliverable(record, &DeliveryError::UndecodableEvent(e)),
            Ok(event) if let Err(reason) = broker::check_audience(&event.audience) => {
                let id = event.id.to_string();
                undeliverable(record, &DeliveryError::Audience { id, reason });
            }
            Ok(event) => {
                // The age at delivery counts from when the item was written to the table.
                let created_at_ms = record
                    .change
                    .approximate_creation_date_time
                    .timestamp_millis()
                    .try_into()
                    .ok();
                let entry = (index, event, created_at_ms);
                match topics.iter_mut().find(|(t, _)| *t == entry.1.topic) {
                    Some((_, events)) => events.push(entry),
                    None => topics.push((entry.1.topic.clone(), vec![entry])),
                }
            }
        }
    }
    // Stable: topics of equal size keep their order of first appearance.
    topics.sort_by_key(|(_, events)| events.len());
    let per_topic: Vec<Vec<(usize, DeliveryError)>> = stream::iter(topics)
        .map(|(topic, events)| async move {
            let mut failed = Vec::new();
            let mut blocked = false;
            // The topic's subscriptions, read once for all its events in the batch.
            let mut read = TopicRead::default();
            for (index, event, created_at_ms) in events {
                if blocked {
                    failed.push((
                        index,
                        DeliveryError::HeldBack {
                            topic: topic.clone(),
                        },
                    ));
                } else if let Err(reason) = deliver(broker, event, created_at_ms, &mut read).await {
                    blocked = true;
                    failed.push((index, reason));
                }
            }
            failed
        })
        .buffer_unordered(TOPIC_CONCURRENCY)
        .collect()
        .await;
    failed.extend(per_topic.into_iter().flatten());
    failed.sort_by_key(|(index, _)| *index);

    let mut response = DynamoDbEventResponse::default();
    for (index, reason) in failed {
        let record = &batch.records[index];
        tracing::error!(
            sequence = record.change.sequence_number.as_deref().unwrap_or_default(),
            %reason,
            "stream record failed"
        );
        let mut failure = DynamoDbBatchItemFailure::default();
        failure.item_identifier = record.change.sequence_number.clone();
        response.batch_item_failures.push(failure);
    }
    response
}

/// Logs and counts a record given up without a retry.
fn undeliverable(record: &aws_lambda_events::dynamodb::EventRecord, reason: &DeliveryError) {
    tracing::error!(
        record = %record.event_id,
        sequence = record.change.sequence_number.as_deref().unwrap_or_default(),
        %reason,
        "stream record cannot be delivered; skipped without retrying"
    );
    broker::metrics::record_undeliverable();
}

async fn deliver(
    broker: &Broker,
    event: Event,
    created_at_ms: Option<u64>,
    read: &mut TopicRead,
) -> Result<(), DeliveryError> {
    let id = event.id.clone();
    // A successful publish stored its event within the settle time of its stamp; one
    // stored later (a publish that timed out, yet was stored) still goes out live, but a
    // resume may have passed its place in the log. The creation time is rounded down to the
    // second, so this flags only events that late by the table's clock. Counted once: not
    // again for a retried batch's event delivered before.
    let settle = broker.config().resume_settle.as_millis() as u64;
    if let Some(created) = created_at_ms
        && created > event.published_ms().saturating_add(settle)
        && !event.direct
        && !broker
            .ports()
            .events
            .is_delivered(&event.reference())
            .await?
    {
        let late_ms = created - event.published_ms();
        tracing::warn!(event = %id, late_ms, "event stored after the resume settle time");
        broker::metrics::record_late_store();
    }
    let report = broker.deliver_event_in(event, read).await?;
    broker::metrics::record(&report, created_at_ms);
    tracing::info!(event = %id, ?report, "event delivered");
    if report.is_complete() {
        Ok(())
    } else {
        Err(DeliveryError::Incomplete {
            failed: report.failed,
        })
    }
}
