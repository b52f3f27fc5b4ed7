//! The events table's real stream, polled through `aws-sdk-dynamodbstreams` as Lambda's event
//! source mapping does: every shard, from the newest record at start, batches handed to the
//! stream publisher in order, a lost iterator resumed after the last record read.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use anyhow::Context as _;
use aws_lambda_events::dynamodb::{EventRecord, StreamViewType};
use aws_sdk_dynamodbstreams::types::{Record, ShardIteratorType};

use super::{BATCH_SIZE, Scheduler};

/// A DynamoDB Streams record as Lambda hands it to a function.
pub fn lambda_record(record: &Record) -> Option<EventRecord> {
    let change = record.dynamodb()?;
    let mut out = EventRecord::default();
    out.event_id = record.event_id().unwrap_or_default().to_owned();
    out.event_name = record.event_name()?.as_str().to_owned();
    out.event_source = Some("aws:dynamodb".to_owned());
    out.event_version = record.event_version().map(str::to_owned);
    out.aws_region = record.aws_region().unwrap_or_default().to_owned();
    out.change.keys = change.keys().cloned().unwrap_or_default().into();
    out.change.new_image = change.new_image().cloned().unwrap_or_default().into();
    out.change.old_image = change.old_image().cloned().unwrap_or_default().into();
    out.change.sequence_number = change.sequence_number().map(str::to_owned);
    out.change.size_bytes = change.size_bytes().unwrap_or_default();
    out.change.stream_view_type = Some(StreamViewType::NewImage);
    Some(out)
}

/// Where the poller stands in one shard of the stream.
#[derive(Debug)]
struct ShardCursor {
    /// The iterator for the next read; `None` until one is obtained, and again after a
    /// failed read (iterators also expire after 15 minutes).
    iterator: Option<String>,
    /// Where to start while no record has been read: LATEST for shards open when the poller
    /// starts, TRIM_HORIZON for later ones.
    start: ShardIteratorType,
    /// The sequence number of the last record handed to the publisher: a new iterator
    /// resumes after it instead of replaying the shard.
    last_sequence: Option<String>,
    /// The shard is closed and read to its end: it is never read again.
    finished: bool,
}

impl ShardCursor {
    fn new(start: ShardIteratorType) -> Self {
        Self {
            iterator: None,
            start,
            last_sequence: None,
            finished: false,
        }
    }

    /// The position a new iterator starts from: right after the last record read, else the
    /// shard's starting position.
    fn resume_from(&self) -> (ShardIteratorType, Option<&str>) {
        match &self.last_sequence {
            Some(sequence) => (
                ShardIteratorType::AfterSequenceNumber,
                Some(sequence.as_str()),
            ),
            None => (self.start.clone(), None),
        }
    }

    /// Records a successful read: the records handed over (in order) and the iterator for
    /// the next read, which a closed shard no longer has once it is read to its end.
    fn advance(&mut self, records: &[Record], next: Option<&str>) {
        if let Some(sequence) = records
            .iter()
            .rev()
            .find_map(|r| r.dynamodb().and_then(|d| d.sequence_number()))
        {
            self.last_sequence = Some(sequence.to_owned());
        }
        self.iterator = next.map(str::to_owned);
        self.finished = next.is_none();
    }

    /// Records a failed read: the next round gets a new iterator from where this one stood.
    fn lose_iterator(&mut self) {
        self.iterator = None;
    }
}

/// Polls every shard of the stream from the newest record on, handing the records to
/// `scheduler`.
pub(crate) async fn poll(
    streams: aws_sdk_dynamodbstreams::Client,
    stream_arn: String,
    poll_interval: Duration,
    scheduler: Scheduler,
) {
    // An empty poll interval would spin; Lambda itself never polls faster than this.
    let pause = poll_interval.max(Duration::from_millis(10));
    let mut cursors: HashMap<String, ShardCursor> = HashMap::new();
    let mut first_listing = true;
    loop {
        match refresh_shards(&streams, &stream_arn, &mut cursors, first_listing).await {
            Ok(()) => first_listing = false,
            Err(e) => tracing::warn!(error = %e, "listing stream shards failed"),
        }
        for (shard, cursor) in cursors.iter_mut().filter(|(_, c)| !c.finished) {
            if cursor.iterator.is_none() {
                match shard_iterator(&streams, &stream_arn, shard, cursor).await {
                    Ok(iterator) => cursor.iterator = iterator,
                    Err(e) => {
                        tracing::warn!(shard, error = %e, "getting a shard iterator failed");
                        continue;
                    }
                }
                // No iterator at all: the shard is closed and has nothing left to read.
                if cursor.iterator.is_none() {
                    cursor.finished = true;
                    continue;
                }
            }
            let Some(current) = cursor.iterator.clone() else {
                continue;
            };
            match streams
                .get_records()
                .shard_iterator(current)
                .limit(BATCH_SIZE as i32)
                .send()
                .await
            {
                Ok(output) => {
                    let records: Vec<EventRecord> =
                        output.records().iter().filter_map(lambda_record).collect();
                    if !records.is_empty() {
                        scheduler.push(records).await;
                    }
                    cursor.advance(output.records(), output.next_shard_iterator());
                    if cursor.finished {
                        tracing::debug!(shard, "shard closed and read to its end");
                    }
                }
                Err(e) => {
                    tracing::warn!(shard, error = %e, "reading the stream failed");
                    cursor.lose_iterator();
                }
            }
        }
        tokio::time::sleep(pause).await;
    }
}

/// A new iterator for `cursor`'s shard, after its last record (or at its start). Should
/// that record have been trimmed meanwhile (24 h), it starts at the oldest record left.
async fn shard_iterator(
    streams: &aws_sdk_dynamodbstreams::Client,
    stream_arn: &str,
    shard: &str,
    cursor: &mut ShardCursor,
) -> anyhow::Result<Option<String>> {
    loop {
        let (kind, sequence) = cursor.resume_from();
        let result = streams
            .get_shard_iterator()
            .stream_arn(stream_arn)
            .shard_id(shard)
            .shard_iterator_type(kind)
            .set_sequence_number(sequence.map(str::to_owned))
            .send()
            .await;
        match result {
            Ok(output) => return Ok(output.shard_iterator().map(str::to_owned)),
            // At most once: the cursor has no sequence number left afterwards.
            Err(error)
                if cursor.last_sequence.is_some()
                    && error
                        .as_service_error()
                        .is_some_and(|e| e.is_trimmed_data_access_exception()) =>
            {
                tracing::warn!(
                    shard,
                    "the last record read was trimmed; resuming at the oldest"
                );
                cursor.last_sequence = None;
                cursor.start = ShardIteratorType::TrimHorizon;
            }
            Err(error) => return Err(error.into()),
        }
    }
}

/// Adds the shards the stream lists that the poller does not know yet, and forgets those it
/// no longer lists (expired after 24 h: they cannot come back). A known shard is never
/// added again, finished or not.
async fn refresh_shards(
    streams: &aws_sdk_dynamodbstreams::Client,
    stream_arn: &str,
    cursors: &mut HashMap<String, ShardCursor>,
    at_start: bool,
) -> anyhow::Result<()> {
    let mut listed = HashSet::new();
    let mut exclusive_start = None;
    loop {
        let description = streams
            .describe_stream()
            .stream_arn(stream_arn)
            .set_exclusive_start_shard_id(exclusive_start.take())
            .send()
            .await?;
        let description = description
            .stream_description()
            .context("DescribeStream answered without a description")?;
        listed.extend(
            description
                .shards()
                .iter()
                .filter_map(|s| s.shard_id())
                .map(str::to_owned),
        );
        match description.last_evaluated_shard_id() {
            Some(last) => exclusive_start = Some(last.to_owned()),
            None => break,
        }
    }
    cursors.retain(|id, _| listed.contains(id));
    for id in listed {
        // Shards open when the gateway starts are read from their newest record, as a new
        // event source mapping with StartingPosition LATEST does; later shards from the start.
        cursors.entry(id).or_insert_with(|| {
            ShardCursor::new(if at_start {
                ShardIteratorType::Latest
            } else {
                ShardIteratorType::TrimHorizon
            })
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use aws_sdk_dynamodbstreams::types::StreamRecord;

    use super::*;

    fn record(sequence: &str) -> Record {
        Record::builder()
            .dynamodb(StreamRecord::builder().sequence_number(sequence).build())
            .build()
    }

    #[test]
    fn a_new_cursor_starts_where_its_shard_was_found() {
        let cursor = ShardCursor::new(ShardIteratorType::Latest);
        assert_eq!(cursor.resume_from(), (ShardIteratorType::Latest, None));
        let cursor = ShardCursor::new(ShardIteratorType::TrimHorizon);
        assert_eq!(cursor.resume_from(), (ShardIteratorType::TrimHorizon, None));
    }

    #[test]
    fn after_a_failed_read_the_cursor_resumes_after_the_last_record() {
        let mut cursor = ShardCursor::new(ShardIteratorType::TrimHorizon);
        cursor.advance(&[record("100"), record("200")], Some("it-1"));
        // A read without records keeps the position.
        cursor.advance(&[], Some("it-2"));
        assert_eq!(cursor.iterator.as_deref(), Some("it-2"));
        cursor.lose_iterator();
        assert_eq!(cursor.iterator, None);
        assert!(!cursor.finished);
        assert_eq!(
            cursor.resume_from(),
            (ShardIteratorType::AfterSequenceNumber, Some("200"))
        );
    }

    #[test]
    fn a_failed_read_before_any_record_starts_over_at_the_start_position() {
        let mut cursor = ShardCursor::new(ShardIteratorType::Latest);
        cursor.advance(&[], Some("it-1"));
        cursor.lose_iterator();
        assert_eq!(cursor.resume_from(), (ShardIteratorType::Latest, None));
    }

    #[test]
    fn a_closed_shard_read_to_its_end_is_finished() {
        let mut cursor = ShardCursor::new(ShardIteratorType::TrimHorizon);
        cursor.advance(&[record("300")], None);
        assert!(cursor.finished);
        assert_eq!(cursor.iterator, None);
        assert_eq!(cursor.last_sequence.as_deref(), Some("300"));
    }
}
