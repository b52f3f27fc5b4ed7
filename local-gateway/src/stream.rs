//! Feeding the stream publisher as Lambda's DynamoDB Stream event source mapping does: poll
//! the shard, hand the new records over in batches, retry from the first failed record.
//! The embedded and file event logs are read here; the events table's real stream in
//! [`dynamodb`].

pub mod dynamodb;

use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::dynamodb::{Event as StreamEvent, EventRecord, StreamViewType};
use broker::file::FileEventLog;
use broker::memory::MemoryEventLog;
use broker::{Broker, Event};

/// Records per batch: the event source mapping's default.
pub const BATCH_SIZE: usize = 100;
/// Retries of a failing record before it is dropped (the template's MaximumRetryAttempts);
/// on AWS it would go to the on-failure destination.
const MAX_RETRIES: u32 = 5;

/// Runs the publisher over one batch, retrying failures from the first failed record, as
/// Lambda does with `ReportBatchItemFailures` (records after it are retried too; the
/// publisher skips those it delivered already).
pub async fn drive(broker: &Broker, mut records: Vec<EventRecord>) {
    let mut attempt = 0;
    while !records.is_empty() {
        let mut batch = StreamEvent::default();
        batch.records = records.clone();
        let response = publisher::stream::handle(broker, batch).await;
        let Some(first_failed) = response
            .batch_item_failures
            .iter()
            .filter_map(|f| f.item_identifier.as_deref())
            .filter_map(|seq| {
                records
                    .iter()
                    .position(|r| r.change.sequence_number.as_deref() == Some(seq))
            })
            .min()
        else {
            return;
        };
        attempt += 1;
        if attempt > MAX_RETRIES {
            let dropped = &records[first_failed];
            tracing::error!(
                sequence = dropped
                    .change
                    .sequence_number
                    .as_deref()
                    .unwrap_or_default(),
                "stream record failed {MAX_RETRIES} retries; dropping it"
            );
            records.drain(..=first_failed);
            attempt = 0;
            continue;
        }
        records.drain(..first_failed);
        tokio::time::sleep(Duration::from_millis(100 << attempt.min(5))).await;
    }
}

/// A stream record for an event, as DynamoDB Streams delivers an INSERT with NEW_IMAGE.
pub fn insert_record(event: &Event, sequence: usize) -> EventRecord {
    let mut record = EventRecord::default();
    record.event_id = ulid::Ulid::new().to_string();
    record.event_name = "INSERT".to_owned();
    record.event_source = Some("aws:dynamodb".to_owned());
    record.event_version = Some("1.1".to_owned());
    record.aws_region = "local".to_owned();
    let image = broker::aws::event_to_image(event).expect("a memory event is a valid item");
    record.change.keys = ["topic", "eventId"]
        .into_iter()
        .filter_map(|k| Some((k.to_owned(), image.get(k)?.clone())))
        .collect::<std::collections::HashMap<_, _>>()
        .into();
    record.change.new_image = image.into();
    record.change.sequence_number = Some(format!("{sequence:021}"));
    record.change.size_bytes = event.payload.to_string().len() as i64;
    record.change.stream_view_type = Some(StreamViewType::NewImage);
    record
}

/// The embedded store's stream: polls the in-memory log every `poll_interval` (0 waits for
/// the next append instead) and drives the publisher with what is new.
pub async fn feed_embedded(broker: Broker, log: Arc<MemoryEventLog>, poll_interval: Duration) {
    let mut position = 0;
    loop {
        let (events, next) = log.read_from(position, BATCH_SIZE);
        if events.is_empty() {
            if poll_interval.is_zero() {
                log.appended().await;
            } else {
                tokio::time::sleep(poll_interval).await;
            }
            continue;
        }
        let records = events
            .iter()
            .enumerate()
            .map(|(i, e)| insert_record(e, position + i))
            .collect();
        drive(&broker, records).await;
        position = next;
    }
}

/// How often the database file's expired events are removed, as DynamoDB's TTL does.
const PURGE_INTERVAL: Duration = Duration::from_secs(60);

/// The database file's stream: as [`feed_embedded`], but from the position the previous
/// process saved, saving it after each batch. Events accepted before a restart (even a
/// `kill -9` mid-delivery) that the publisher had not finished are handed to it again after
/// the restart; it skips those marked delivered. Expired events are purged at start and
/// every minute.
pub async fn feed_file(broker: Broker, log: Arc<FileEventLog>, poll_interval: Duration) {
    let mut position = log.stream_position().await.unwrap_or_else(|error| {
        tracing::error!(%error, "cannot read the saved stream position; reading from the start");
        0
    });
    let mut last_purge: Option<std::time::Instant> = None;
    loop {
        if last_purge.is_none_or(|at| at.elapsed() >= PURGE_INTERVAL) {
            match log.purge_expired().await {
                Ok(0) => {}
                Ok(purged) => tracing::info!(purged, "expired events removed"),
                Err(error) => tracing::warn!(%error, "cannot remove expired events"),
            }
            last_purge = Some(std::time::Instant::now());
        }
        let (events, next) = match log.read_from(position, BATCH_SIZE).await {
            Ok(read) => read,
            Err(error) => {
                tracing::warn!(%error, "cannot read the event stream");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if next == position {
            if poll_interval.is_zero() {
                let _ = tokio::time::timeout(PURGE_INTERVAL, log.appended()).await;
            } else {
                tokio::time::sleep(poll_interval).await;
            }
            continue;
        }
        let first = usize::try_from(position).unwrap_or_default();
        let records = events
            .iter()
            .enumerate()
            .map(|(i, e)| insert_record(e, first + i))
            .collect();
        drive(&broker, records).await;
        position = next;
        if let Err(error) = log.save_stream_position(position).await {
            tracing::warn!(%error, "cannot save the stream position");
        }
    }
}
