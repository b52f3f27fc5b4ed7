//! Feeding the stream publisher as Lambda's DynamoDB Stream event source mapping does: poll
//! the log, hand the new records over in batches, retry a failing record, and step it aside
//! once it has failed too often. The embedded and file event logs are read in [`read`]; the
//! events table's real stream in [`dynamodb`]; the scheduling of the records in [`schedule`].

pub mod dynamodb;
pub mod read;
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
pub fn insert_record(event: &Event, sequence: u64) -> EventRecord {
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

/// The embedded store's stream: hands what is appended to the in-memory log to `scheduler`,
/// polling every `poll_interval` (0 waits for the next append instead), each topic up to
/// its share (see [`read`]).
pub async fn feed_embedded(
    log: Arc<MemoryEventLog>,
    poll_interval: Duration,
    scheduler: Scheduler,
) {
    read::feed(log, poll_interval, scheduler).await;
}

/// The database file's stream: as [`feed_embedded`], but from the position the previous
/// process saved. The position saved is the oldest one with a record not handled (nor
/// given up): events accepted before a restart (even a `kill -9` mid-delivery) that the
/// publisher had not finished are handed to it again after the restart; it skips those
/// marked delivered. Expired events are purged at start and every minute.
pub async fn feed_file(log: Arc<FileEventLog>, poll_interval: Duration, scheduler: Scheduler) {
    read::feed(log, poll_interval, scheduler).await;
}
