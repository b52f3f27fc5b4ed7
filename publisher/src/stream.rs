//! The stream publisher: delivers every event inserted into the events table.

use aws_lambda_events::dynamodb::{Event as StreamEvent, EventRecord};
use aws_lambda_events::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};
use broker::{Audience, Broker, Event, Topic, UserId};
use serde::{Deserialize, Serialize};

/// An events-table item as its stream image carries it (the layout of
/// `broker::aws::DynamoDbEventLog`).
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventImage {
    pub topic: String,
    pub event_id: String,
    /// The payload as JSON text.
    pub payload: String,
    /// The only user who may receive the event; absent when anyone subscribed may.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    /// Milliseconds since the epoch; absent in items written by other publishers.
    #[serde(default)]
    pub published_at: u64,
    pub ttl: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("stream image is not an event: {0}")]
    Shape(#[from] serde_dynamo::Error),
    #[error("event payload is not JSON: {0}")]
    Payload(#[from] serde_json::Error),
}

impl EventImage {
    pub fn from_event(event: &Event) -> Self {
        Self {
            topic: event.topic.to_string(),
            event_id: event.id.clone(),
            payload: event.payload.to_string(),
            audience: match &event.audience {
                Audience::Everyone => None,
                Audience::User(user) => Some(user.to_string()),
            },
            published_at: event.published_at_ms,
            ttl: event.expires_at,
        }
    }

    pub fn into_event(self) -> Result<Event, ImageError> {
        Ok(Event {
            id: self.event_id,
            topic: Topic::new(self.topic),
            payload: serde_json::from_str(&self.payload)?,
            audience: self
                .audience
                .map_or(Audience::Everyone, |u| Audience::User(UserId::new(u))),
            published_at_ms: self.published_at,
            expires_at: self.ttl,
        })
    }

    pub fn decode(record: &EventRecord) -> Result<Event, ImageError> {
        let image: EventImage = serde_dynamo::from_item(record.change.new_image.clone())?;
        image.into_event()
    }
}

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
    let event = EventImage::decode(record).map_err(|e| e.to_string())?;
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
