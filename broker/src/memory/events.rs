//! The in-memory event log.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Mutex;

use async_trait::async_trait;
use tokio::sync::Notify;

use super::lock;
use super::tables::{self, MemoryTables};
use crate::changes::Changes;
use crate::domain::{Audience, Event, EventRef, Topic, UserId, now_ms, now_secs};
use crate::ports::{EventLog, StoreError, StreamRead};

/// The embedded event log. Besides storing events it behaves like a one-shard stream:
/// [`MemoryEventLog::read_from`] returns the events appended after a position, so the local
/// mode can feed the publisher in batches, as Lambda's stream polling does.
#[derive(Default)]
pub struct MemoryEventLog {
    inner: Mutex<EventLogState>,
    appended: Notify,
    /// The apps' tables, written with their events in one critical section.
    tables: MemoryTables,
}

impl std::fmt::Debug for MemoryEventLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryEventLog").finish_non_exhaustive()
    }
}

/// Events in stream order. Positions are absolute: `events[0]` is at position `base`, and
/// the expired events before it have been removed.
#[derive(Default)]
struct EventLogState {
    events: VecDeque<Event>,
    base: usize,
    by_ref: HashMap<(Topic, String), usize>,
    /// Positions by topic and id, for reading a topic in id order.
    by_topic: HashMap<Topic, BTreeMap<String, usize>>,
    delivered: HashSet<(Topic, String)>,
}

impl EventLogState {
    fn at(&self, position: usize) -> &Event {
        &self.events[position - self.base]
    }

    /// Removes the expired events at the front of the log, as DynamoDB's TTL removes them.
    /// Every event gets the same retention, so they expire in about the order they were
    /// appended: the log holds the retention's worth of events, not every event ever.
    fn purge_expired(&mut self, now: u64) -> usize {
        let mut purged = 0;
        while self.events.front().is_some_and(|e| e.expires_at <= now) {
            let Some(event) = self.events.pop_front() else {
                break;
            };
            self.base += 1;
            purged += 1;
            let key = (event.topic, event.id);
            self.by_ref.remove(&key);
            self.delivered.remove(&key);
            let (topic, id) = key;
            if let Some(ids) = self.by_topic.get_mut(&topic) {
                ids.remove(&id);
                if ids.is_empty() {
                    self.by_topic.remove(&topic);
                }
            }
        }
        purged
    }
}

impl MemoryEventLog {
    /// Up to `max` events from stream position `from` on, and the position after them.
    /// Positions of removed (expired) events are passed over.
    pub fn read_from(&self, from: usize, max: usize) -> (Vec<Event>, usize) {
        let (events, next) = self.read_stream(&StreamRead::all(from as u64, max));
        let events = events.into_iter().map(|(_, e)| e).collect();
        (events, usize::try_from(next).unwrap_or(usize::MAX))
    }

    /// The events `read` asks for, each with its position, and the position after the last
    /// one passed over.
    pub fn read_stream(&self, read: &StreamRead) -> (Vec<(u64, Event)>, u64) {
        let state = lock(&self.inner);
        let base = state.base as u64;
        let end = base + state.events.len() as u64;
        let start = read.from.clamp(base, end);
        let stop = start
            .saturating_add(read.scan)
            .min(end)
            .min(read.until.max(start));
        let mut events = Vec::new();
        let mut next = stop;
        for position in start..stop {
            if events.len() >= read.take {
                next = position;
                break;
            }
            let event = &state.events[(position - base) as usize];
            if (read.keep)(event.topic.as_str()) {
                events.push((position, event.clone()));
            }
        }
        (events, next)
    }

    /// Events the log holds (unexpired ones, and expired ones not yet removed).
    pub fn len(&self) -> usize {
        lock(&self.inner).events.len()
    }

    /// Whether the log holds no event (see [`Self::len`]).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Resolves when an event is appended after this call (or was, since the last wait).
    pub async fn appended(&self) {
        self.appended.notified().await;
    }

    /// The apps' tables of this store: what [`EventLog::append_with`] writes with an event.
    pub fn tables(&self) -> MemoryTables {
        self.tables.clone()
    }

    /// Stores `changes` and `event` together, or neither (see [`EventLog::append_with`]).
    fn commit(
        &self,
        changes: &Changes,
        event: &Event,
        deadline_ms: Option<u64>,
    ) -> Result<(), StoreError> {
        // The DynamoDB log stores "everyone" as `*`: a user of that name would read back as
        // everyone there, so both logs refuse it.
        if event.audience == Audience::User(UserId::new("*")) {
            return Err(StoreError::Malformed(
                "`*` is not a valid audience user".to_owned(),
            ));
        }
        {
            let mut state = lock(&self.inner);
            let mut items = lock(&self.tables.items);
            state.purge_expired(now_secs());
            let key = (event.topic.clone(), event.id.clone());
            if state.by_ref.contains_key(&key) {
                return Err(StoreError::Conflict(format!("event {} exists", event.id)));
            }
            tables::check(&items, changes)?;
            if deadline_ms.is_some_and(|deadline| now_ms() > deadline) {
                return Err(StoreError::TooLate);
            }
            tables::apply(&mut items, changes);
            let position = state.base + state.events.len();
            state.by_ref.insert(key, position);
            state
                .by_topic
                .entry(event.topic.clone())
                .or_default()
                .insert(event.id.clone(), position);
            state.events.push_back(event.clone());
        }
        self.appended.notify_one();
        Ok(())
    }
}

#[async_trait]
impl EventLog for MemoryEventLog {
    async fn append(&self, event: &Event) -> Result<(), StoreError> {
        self.commit(&Changes::new(), event, None)
    }

    /// Stored at once or not at all: past the deadline nothing is stored.
    async fn append_by(&self, event: &Event, deadline_ms: u64) -> Result<(), StoreError> {
        self.commit(&Changes::new(), event, Some(deadline_ms))
    }

    /// One critical section: the log's lock and then the tables' are held while the
    /// conditions, the event's id and the deadline are checked and both are written.
    async fn append_with(
        &self,
        changes: &Changes,
        event: &Event,
        deadline_ms: u64,
    ) -> Result<(), StoreError> {
        self.commit(changes, event, Some(deadline_ms))
    }

    async fn get(&self, event: &EventRef) -> Result<Option<Event>, StoreError> {
        let now = now_secs();
        let state = lock(&self.inner);
        Ok(state
            .by_ref
            .get(&(event.topic.clone(), event.event_id.clone()))
            .map(|&i| state.at(i))
            .filter(|e| e.expires_at > now)
            .cloned())
    }

    async fn after(
        &self,
        topic: &Topic,
        after: &str,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        use std::ops::Bound;
        let now = now_secs();
        let state = lock(&self.inner);
        let Some(ids) = state.by_topic.get(topic) else {
            return Ok(Vec::new());
        };
        Ok(ids
            .range::<str, _>((Bound::Excluded(after), Bound::Unbounded))
            .map(|(_, &i)| state.at(i))
            .filter(|e| e.expires_at > now)
            .take(limit)
            .cloned()
            .collect())
    }

    async fn is_delivered(&self, event: &EventRef) -> Result<bool, StoreError> {
        Ok(lock(&self.inner)
            .delivered
            .contains(&(event.topic.clone(), event.event_id.clone())))
    }

    async fn mark_delivered(&self, event: &EventRef) -> Result<(), StoreError> {
        let mut state = lock(&self.inner);
        let key = (event.topic.clone(), event.event_id.clone());
        // Only events in the log carry a mark, as in DynamoDB.
        if state.by_ref.contains_key(&key) {
            state.delivered.insert(key);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(event: &Event) -> EventRef {
        event.reference()
    }

    fn event(topic: &str, expires_at: u64) -> Event {
        Event {
            expires_at,
            ..Event::new(Topic::new(topic), serde_json::json!({}), Audience::Everyone)
        }
    }

    #[tokio::test]
    async fn expired_events_are_removed_and_positions_stay_valid() {
        let log = MemoryEventLog::default();
        let now = now_secs();
        let old: Vec<Event> = (0..3).map(|_| event("t", now - 1)).collect();
        for e in &old {
            log.append(e).await.unwrap();
        }
        let (_, after_old) = log.read_from(0, 10);
        assert_eq!(after_old, 3);

        // The next append removes the three expired events at the front.
        let live = event("t", now + 3600);
        log.append(&live).await.unwrap();
        assert_eq!(log.len(), 1);
        assert!(log.get(&reference(&old[0])).await.unwrap().is_none());
        assert!(!log.is_delivered(&reference(&old[0])).await.unwrap());

        // A reader at an old position goes on from the first event kept; one past it sees
        // the new event at its absolute position.
        assert_eq!(log.read_from(0, 10), (vec![live.clone()], 4));
        assert_eq!(log.read_from(after_old, 10), (vec![live.clone()], 4));
        assert_eq!(log.read_from(4, 10), (vec![], 4));
        assert_eq!(
            log.after(&Topic::new("t"), "", 10).await.unwrap(),
            vec![live.clone()]
        );
        assert_eq!(log.get(&reference(&live)).await.unwrap(), Some(live));
    }
}
