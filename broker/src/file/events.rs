//! The event log in the database file.

use std::ops::Bound;

use ::redb::ReadableTable;
use async_trait::async_trait;

use super::store::Commit;
use super::tables::{DELIVERED, EVENTS, EXPIRY, META, STREAM};
use super::{FileStore, backend, from_json, to_json};
use crate::changes::Changes;
use crate::domain::{Audience, Event, EventRef, Topic, UserId, now_ms, now_secs};
use crate::ports::{EventLog, StoreError, StreamRead};

const NEXT_SEQUENCE: &str = "stream.next";
const STREAM_POSITION: &str = "stream.position";

/// The event log. Besides the events by topic and id it keeps the order they were appended
/// in (a one-shard stream, as DynamoDB Streams gives the events table) and how far the local
/// mode's stream reader got, so a restarted process hands the publisher what it had not.
#[derive(Debug)]
pub struct FileEventLog {
    pub(super) store: FileStore,
}

impl FileEventLog {
    /// Appends `event` with `changes` in one transaction, refusing both if the write is ready
    /// to commit only after `deadline_ms`.
    async fn append_until(
        &self,
        changes: &Changes,
        event: &Event,
        deadline_ms: Option<u64>,
    ) -> Result<(), StoreError> {
        // `*` is how the DynamoDB log stores "everyone": every log refuses it as a user.
        if event.audience == Audience::User(UserId::new("*")) {
            return Err(StoreError::Malformed(
                "`*` is not a valid audience user".to_owned(),
            ));
        }
        let event = event.clone();
        let changes = (!changes.is_empty()).then(|| std::sync::Arc::new(changes.clone()));
        self.store
            .write(Commit::Durable, move |tx| {
                let key = (event.topic.as_str(), event.id.as_str());
                let mut events = tx.open_table(EVENTS).map_err(backend)?;
                if events.get(key).map_err(backend)?.is_some() {
                    return Err(StoreError::Conflict(format!("event {} exists", event.id)));
                }
                if let Some(changes) = &changes {
                    super::table::apply(tx, changes)?;
                }
                events
                    .insert(key, to_json(&event)?.as_slice())
                    .map_err(backend)?;
                let mut meta = tx.open_table(META).map_err(backend)?;
                let sequence = meta
                    .get(NEXT_SEQUENCE)
                    .map_err(backend)?
                    .map_or(0, |v| v.value());
                meta.insert(NEXT_SEQUENCE, sequence + 1).map_err(backend)?;
                tx.open_table(STREAM)
                    .map_err(backend)?
                    .insert(sequence, key)
                    .map_err(backend)?;
                tx.open_table(EXPIRY)
                    .map_err(backend)?
                    .insert((event.expires_at, key.0, key.1), sequence)
                    .map_err(backend)?;
                if deadline_ms.is_some_and(|deadline| now_ms() > deadline) {
                    return Err(StoreError::TooLate);
                }
                Ok(())
            })
            .await?;
        self.store.inner.appended.notify_one();
        Ok(())
    }

    /// Up to `max` unexpired events from stream position `from` on, in the order they were
    /// appended, and the position after them.
    pub async fn read_from(&self, from: u64, max: usize) -> Result<(Vec<Event>, u64), StoreError> {
        let (events, next) = self.read_stream(StreamRead::all(from, max)).await?;
        Ok((events.into_iter().map(|(_, e)| e).collect(), next))
    }

    /// The unexpired events `read` asks for, each with its stream position, and the position
    /// after the last one passed over (`read.from` if none was). Events of topics `read` does
    /// not keep are not decoded.
    pub async fn read_stream(
        &self,
        read: StreamRead,
    ) -> Result<(Vec<(u64, Event)>, u64), StoreError> {
        self.store
            .run(move |store| {
                let tx = store.read()?;
                let stream = tx.open_table(STREAM).map_err(backend)?;
                let events = tx.open_table(EVENTS).map_err(backend)?;
                let now = now_secs();
                let mut batch = Vec::new();
                let mut next = read.from;
                let scan = usize::try_from(read.scan).unwrap_or(usize::MAX);
                if read.until <= read.from {
                    return Ok((batch, next));
                }
                let positions = stream.range(read.from..read.until).map_err(backend)?;
                for entry in positions.take(scan) {
                    if batch.len() >= read.take {
                        break;
                    }
                    let (sequence, key) = entry.map_err(backend)?;
                    next = sequence.value() + 1;
                    if !(read.keep)(key.value().0) {
                        continue;
                    }
                    if let Some(value) = events.get(key.value()).map_err(backend)? {
                        let event: Event = from_json(value.value())?;
                        if event.expires_at > now {
                            batch.push((sequence.value(), event));
                        }
                    }
                }
                Ok((batch, next))
            })
            .await
    }

    /// The stream position a previous reader saved (0 for a new file).
    pub async fn stream_position(&self) -> Result<u64, StoreError> {
        self.store
            .run(|store| {
                let tx = store.read()?;
                let meta = tx.open_table(META).map_err(backend)?;
                Ok(meta
                    .get(STREAM_POSITION)
                    .map_err(backend)?
                    .map_or(0, |v| v.value()))
            })
            .await
    }

    /// Saves how far the stream was handed to the publisher. Not fsynced: a position lost
    /// in a crash hands the publisher a few events again, which it skips when delivered.
    pub async fn save_stream_position(&self, position: u64) -> Result<(), StoreError> {
        self.store
            .write(Commit::Light, move |tx| {
                tx.open_table(META)
                    .map_err(backend)?
                    .insert(STREAM_POSITION, position)
                    .map_err(backend)?;
                Ok(())
            })
            .await
    }

    /// Resolves when an event is appended after this call (or was, since the last wait).
    pub async fn appended(&self) {
        self.store.inner.appended.notified().await;
    }

    /// Removes the events past their expiry, as DynamoDB's TTL does; returns how many.
    pub async fn purge_expired(&self) -> Result<usize, StoreError> {
        self.store
            .write(Commit::Durable, |tx| {
                let now = now_secs();
                let mut expiry = tx.open_table(EXPIRY).map_err(backend)?;
                let mut events = tx.open_table(EVENTS).map_err(backend)?;
                let mut delivered = tx.open_table(DELIVERED).map_err(backend)?;
                let mut stream = tx.open_table(STREAM).map_err(backend)?;
                let mut expired = Vec::new();
                for entry in expiry
                    .range((0, "", "")..(now + 1, "", ""))
                    .map_err(backend)?
                {
                    let (key, sequence) = entry.map_err(backend)?;
                    let (at, topic, id) = key.value();
                    expired.push((at, topic.to_owned(), id.to_owned(), sequence.value()));
                }
                for (at, topic, id, sequence) in &expired {
                    let key = (topic.as_str(), id.as_str());
                    expiry
                        .remove((*at, topic.as_str(), id.as_str()))
                        .map_err(backend)?;
                    events.remove(key).map_err(backend)?;
                    delivered.remove(key).map_err(backend)?;
                    stream.remove(*sequence).map_err(backend)?;
                }
                Ok(expired.len())
            })
            .await
    }
}

#[async_trait]
impl EventLog for FileEventLog {
    async fn append(&self, event: &Event) -> Result<(), StoreError> {
        self.append_until(&Changes::new(), event, None).await
    }

    /// Checked inside the write, once it holds the writer and has written the event, right
    /// before the commit: past the deadline the transaction is dropped, so an event refused
    /// as too late is not stored. One accepted may be readable an fsync after the deadline,
    /// which the publish deadline's spare quarter of the settle time covers.
    async fn append_by(&self, event: &Event, deadline_ms: u64) -> Result<(), StoreError> {
        self.append_until(&Changes::new(), event, Some(deadline_ms))
            .await
    }

    /// One write transaction: the changes' conditions are checked and the changes and the
    /// event written in it, the deadline checked last, as for [`Self::append_by`]. A
    /// failing change drops the transaction, and only it (the writer's group commit runs
    /// the others again without it).
    async fn append_with(
        &self,
        changes: &Changes,
        event: &Event,
        deadline_ms: u64,
    ) -> Result<(), StoreError> {
        self.append_until(changes, event, Some(deadline_ms)).await
    }

    async fn get(&self, event: &EventRef) -> Result<Option<Event>, StoreError> {
        let event = event.clone();
        self.store
            .run(move |store| {
                let tx = store.read()?;
                let events = tx.open_table(EVENTS).map_err(backend)?;
                let Some(value) = events
                    .get((event.topic.as_str(), event.event_id.as_str()))
                    .map_err(backend)?
                else {
                    return Ok(None);
                };
                let found: Event = from_json(value.value())?;
                Ok((found.expires_at > now_secs()).then_some(found))
            })
            .await
    }

    async fn after(
        &self,
        topic: &Topic,
        after: &str,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        let (topic, after) = (topic.clone(), after.to_owned());
        self.store
            .run(move |store| {
                let tx = store.read()?;
                let events = tx.open_table(EVENTS).map_err(backend)?;
                let now = now_secs();
                let mut found = Vec::new();
                let range = (
                    Bound::Excluded((topic.as_str(), after.as_str())),
                    Bound::Unbounded,
                );
                for entry in events.range(range).map_err(backend)? {
                    if found.len() >= limit {
                        break;
                    }
                    let (key, value) = entry.map_err(backend)?;
                    if key.value().0 != topic.as_str() {
                        break;
                    }
                    let event: Event = from_json(value.value())?;
                    if event.expires_at > now {
                        found.push(event);
                    }
                }
                Ok(found)
            })
            .await
    }

    async fn is_delivered(&self, event: &EventRef) -> Result<bool, StoreError> {
        let event = event.clone();
        self.store
            .run(move |store| {
                let tx = store.read()?;
                let delivered = tx.open_table(DELIVERED).map_err(backend)?;
                Ok(delivered
                    .get((event.topic.as_str(), event.event_id.as_str()))
                    .map_err(backend)?
                    .is_some())
            })
            .await
    }

    async fn mark_delivered(&self, event: &EventRef) -> Result<(), StoreError> {
        let event = event.clone();
        self.store
            .write(Commit::Light, move |tx| {
                let key = (event.topic.as_str(), event.event_id.as_str());
                // Only events in the log carry a mark, as in DynamoDB.
                if tx
                    .open_table(EVENTS)
                    .map_err(backend)?
                    .get(key)
                    .map_err(backend)?
                    .is_some()
                {
                    tx.open_table(DELIVERED)
                        .map_err(backend)?
                        .insert(key, ())
                        .map_err(backend)?;
                }
                Ok(())
            })
            .await
    }
}

impl FileStore {
    /// The event log.
    pub fn events(&self) -> FileEventLog {
        FileEventLog {
            store: self.clone(),
        }
    }
}
