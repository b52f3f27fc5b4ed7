//! Feeding the stream publisher as Lambda's DynamoDB Stream event source mapping does: poll
//! the log, hand the new records over in batches, retry a failing record, and step it aside
//! once it has failed too often. The embedded and file event logs are read here; the events
//! table's real stream in [`dynamodb`]; the scheduling of the records in [`schedule`].

pub mod dynamodb;
pub mod schedule;

use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::dynamodb::{EventRecord, StreamViewType};
use broker::Event;
use broker::file::FileEventLog;
use broker::memory::MemoryEventLog;

pub use schedule::{GivenUp, Handler, Scheduler, StreamOptions};

/// Records read from the log at once, and handed to the publisher in one batch at most: the
/// event source mapping's default batch size.
pub const BATCH_SIZE: usize = 100;

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
/// the next append instead) and hands what is new to `scheduler`.
pub async fn feed_embedded(
    log: Arc<MemoryEventLog>,
    poll_interval: Duration,
    scheduler: Scheduler,
) {
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
        scheduler.push(records).await;
        position = next;
    }
}

/// How often the database file's expired events are removed, as DynamoDB's TTL does.
const PURGE_INTERVAL: Duration = Duration::from_secs(60);

/// The database file's stream: as [`feed_embedded`], but from the position the previous
/// process saved. The position saved is the start of the oldest read that still has a
/// record not handled (nor given up): events accepted before a restart (even a `kill -9`
/// mid-delivery) that the publisher had not finished are handed to it again after the
/// restart; it skips those marked delivered. Expired events are purged at start and every
/// minute.
pub async fn feed_file(log: Arc<FileEventLog>, poll_interval: Duration, scheduler: Scheduler) {
    let mut position = log.stream_position().await.unwrap_or_else(|error| {
        tracing::error!(%error, "cannot read the saved stream position; reading from the start");
        0
    });
    let mut saved = position;
    // Reads with records still outstanding: their push indexes and where they started.
    let mut reads: std::collections::VecDeque<(std::ops::Range<u64>, u64)> = Default::default();
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
        let outstanding = scheduler.first_outstanding();
        while reads
            .front()
            .is_some_and(|(range, _)| outstanding.is_none_or(|first| range.end <= first))
        {
            reads.pop_front();
        }
        let safe = reads.front().map_or(position, |(_, start)| *start);
        if safe != saved {
            match log.save_stream_position(safe).await {
                Ok(()) => saved = safe,
                Err(error) => tracing::warn!(%error, "cannot save the stream position"),
            }
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
            let idle = async {
                if poll_interval.is_zero() {
                    let _ = tokio::time::timeout(PURGE_INTERVAL, log.appended()).await;
                } else {
                    tokio::time::sleep(poll_interval).await;
                }
            };
            // Woken by progress too, to save the position once records are handled.
            tokio::select! {
                () = idle => {}
                () = scheduler.progressed(), if !reads.is_empty() => {}
            }
            continue;
        }
        let first = usize::try_from(position).unwrap_or_default();
        let records: Vec<_> = events
            .iter()
            .enumerate()
            .map(|(i, e)| insert_record(e, first + i))
            .collect();
        if !records.is_empty() {
            let pushed = scheduler.push(records).await;
            reads.push_back((pushed, position));
        }
        position = next;
    }
}
