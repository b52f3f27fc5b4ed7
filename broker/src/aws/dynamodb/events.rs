use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;

use super::records::EventItem;
use super::{Item, backend, from_item, put_new, string, to_item};
use crate::changes::Changes;
use crate::domain::{Event, EventRef, Topic, now_secs};
use crate::ports::{EventLog, StoreError};

/// [`EventLog`] on the events table, whose stream (`NEW_IMAGE`) drives delivery.
#[derive(Clone, Debug)]
pub struct DynamoDbEventLog {
    client: Client,
    table: String,
    /// The table of the void marks that settle a transaction whose answer did not come
    /// (see [`EventLog::append_with`] here); without one, the log commits no app write.
    pub(super) voids: Option<String>,
}

impl DynamoDbEventLog {
    /// A log on the events table named `table`.
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
            voids: None,
        }
    }

    /// The same log, committing app writes with events ([`EventLog::append_with`]), with
    /// the void marks of transactions whose answer did not come in `table` (the
    /// subscriptions table, whose other partitions never start with `#void/`).
    pub fn with_void_marks(mut self, table: impl Into<String>) -> Self {
        self.voids = Some(table.into());
        self
    }

    pub(super) fn client(&self) -> &Client {
        &self.client
    }

    /// The deployed name of the events table.
    pub fn table(&self) -> &str {
        &self.table
    }

    fn key(event: &EventRef) -> Item {
        HashMap::from([
            ("topic".to_owned(), string(event.topic.as_str())),
            ("eventId".to_owned(), string(event.event_id.as_str())),
        ])
    }
}

/// Reads an event from a stream record's new image (a Lambda stream event's
/// `dynamodb.NewImage`, or a DynamoDB Streams `GetRecords` image): the one place that knows
/// how an event is laid out in the table.
pub fn event_from_image<I: Into<serde_dynamo::Item>>(image: I) -> Result<Event, StoreError> {
    let record: EventItem =
        serde_dynamo::from_item(image).map_err(|e| StoreError::Malformed(e.to_string()))?;
    Event::try_from(record)
}

/// An event as its item (and so its stream image) holds it: the inverse of
/// [`event_from_image`], for feeding a publisher records it would get from a stream.
pub fn event_to_image(event: &Event) -> Result<Item, StoreError> {
    to_item(&EventItem::try_from(event)?)
}

#[async_trait]
impl EventLog for DynamoDbEventLog {
    async fn append(&self, event: &Event) -> Result<(), StoreError> {
        let item = to_item(&EventItem::try_from(event)?)?;
        put_new(&self.client, &self.table, item, "eventId", || {
            format!("event {} exists", event.id)
        })
        .await
    }

    /// One `TransactWriteItems`, idempotent by the event id; past the deadline, settled by
    /// a void mark so that nothing is stored late (see `transact.rs`).
    async fn append_with(
        &self,
        changes: &Changes,
        event: &Event,
        deadline_ms: u64,
    ) -> Result<(), StoreError> {
        self.transact(changes, event, deadline_ms).await
    }

    async fn get(&self, event: &EventRef) -> Result<Option<Event>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(event)))
            .consistent_read(true)
            .send()
            .await
            .map_err(backend("GetItem"))?;
        let Some(item) = output.item else {
            return Ok(None);
        };
        let record: EventItem = from_item(item)?;
        if record.ttl <= now_secs() {
            return Ok(None);
        }
        Event::try_from(record).map(Some)
    }

    async fn after(
        &self,
        topic: &Topic,
        after: &str,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        let mut events = Vec::new();
        let mut start: Option<Item> = None;
        // Pages until `limit` live events are found: expired items still in the table
        // (TTL deletes lazily) are read and left out.
        while events.len() < limit {
            let query = self
                .client
                .query()
                .table_name(&self.table)
                .expression_attribute_names("#topic", "topic")
                .expression_attribute_values(":topic", string(topic.as_str()));
            // DynamoDB refuses an empty string in a key condition: "" means from the start.
            let query = if after.is_empty() {
                query.key_condition_expression("#topic = :topic")
            } else {
                query
                    .key_condition_expression("#topic = :topic AND #id > :after")
                    .expression_attribute_names("#id", "eventId")
                    .expression_attribute_values(":after", string(after))
            };
            let output = query
                .consistent_read(true)
                .scan_index_forward(true)
                .limit(i32::try_from(limit - events.len()).unwrap_or(i32::MAX))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(backend("Query"))?;
            let now = now_secs();
            for item in output.items.unwrap_or_default() {
                let record: EventItem = from_item(item)?;
                if record.ttl > now {
                    events.push(Event::try_from(record)?);
                }
            }
            match output.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => break,
            }
        }
        Ok(events)
    }

    async fn is_delivered(&self, event: &EventRef) -> Result<bool, StoreError> {
        // Strongly consistent: a retried batch right after a successful one must see its mark.
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(event)))
            .projection_expression("#delivered")
            .expression_attribute_names("#delivered", "delivered")
            .consistent_read(true)
            .send()
            .await
            .map_err(backend("GetItem"))?;
        Ok(output
            .item
            .and_then(|mut item| item.remove("delivered"))
            .is_some_and(|value| matches!(value, AttributeValue::Bool(true))))
    }

    async fn mark_delivered(&self, event: &EventRef) -> Result<(), StoreError> {
        // The condition keeps an unconditional update from creating a bare item for an event
        // that is gone: the stream would report it as a new event.
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(event)))
            .update_expression("SET #delivered = :true")
            .condition_expression("attribute_exists(#id)")
            .expression_attribute_names("#delivered", "delivered")
            .expression_attribute_names("#id", "eventId")
            .expression_attribute_values(":true", AttributeValue::Bool(true))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            // Nothing left to mark: the event expired and was removed meanwhile.
            Err(error)
                if error
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Ok(())
            }
            Err(error) => Err(backend("UpdateItem")(error)),
        }
    }
}
