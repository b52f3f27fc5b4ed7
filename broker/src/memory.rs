//! In-memory adapters: for unit tests and the embedded store of the local mode.
//!
//! Each keeps its state behind a `std::sync::Mutex`: critical sections are a few map
//! operations and never span an `.await`, which is what std's mutex is good at.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Mutex;

use async_trait::async_trait;
use tokio::sync::{Notify, mpsc};

use crate::domain::{
    Audience, Connection, ConnectionId, Event, EventRef, Subscription, SubscriptionKey, Topic,
    UserId, now_ms, now_secs,
};
use crate::ports::{
    ConnectionGateway, ConnectionStore, EventLog, FanoutPage, FanoutQueue, GatewayError, HandOver,
    Hold, Inserted, StoreError, SubscriptionStore,
};
use crate::protocol::CloseCode;

#[derive(Default)]
pub struct MemoryConnectionStore {
    connections: Mutex<HashMap<ConnectionId, Connection>>,
}

#[async_trait]
impl ConnectionStore for MemoryConnectionStore {
    async fn put(&self, connection: &Connection) -> Result<(), StoreError> {
        lock(&self.connections).insert(connection.id.clone(), connection.clone());
        Ok(())
    }

    async fn get(&self, id: &ConnectionId) -> Result<Option<Connection>, StoreError> {
        let now = now_secs();
        Ok(lock(&self.connections)
            .get(id)
            .filter(|c| c.expires_at > now)
            .cloned())
    }

    async fn mark_initialised(
        &self,
        id: &ConnectionId,
        user: &UserId,
        authorized_until: u64,
    ) -> Result<(), StoreError> {
        let mut connections = lock(&self.connections);
        match connections.get_mut(id) {
            Some(c) if !c.initialised => {
                c.initialised = true;
                c.principal = Some(user.clone());
                c.authorized_until = Some(authorized_until);
                Ok(())
            }
            Some(_) => Err(StoreError::Conflict(format!("{id} is already initialised"))),
            None => Err(StoreError::Conflict(format!("{id} does not exist"))),
        }
    }

    async fn delete(&self, id: &ConnectionId) -> Result<(), StoreError> {
        lock(&self.connections).remove(id);
        Ok(())
    }

    async fn by_user(&self, user: &UserId) -> Result<Vec<Connection>, StoreError> {
        let now = now_secs();
        Ok(lock(&self.connections)
            .values()
            .filter(|c| c.principal.as_ref() == Some(user) && c.expires_at > now)
            .cloned()
            .collect())
    }
}

#[derive(Default)]
pub struct MemorySubscriptionStore {
    inner: Mutex<SubscriptionIndex>,
}

#[derive(Default)]
struct SubscriptionIndex {
    by_topic: HashMap<Topic, BTreeMap<SubscriptionKey, Subscription>>,
    /// The topic of each key: operation ids are unique per connection across topics.
    topic_of: HashMap<SubscriptionKey, Topic>,
    by_connection: HashMap<ConnectionId, HashSet<SubscriptionKey>>,
    /// Operations completed before they were stored, until when.
    tombstones: Expiring<SubscriptionKey>,
    /// Connections closed, until when.
    closed: Expiring<ConnectionId>,
    /// Fan-out pages on their way, by topic: page id → until when it can be in the queue.
    pages: HashMap<Topic, HashMap<String, u64>>,
    /// Live events held back from each replaying subscription.
    held: HashMap<SubscriptionKey, u64>,
}

/// Keys with an expiry, pruned of expired ones as they grow: bounded by what the expiry
/// window holds.
struct Expiring<K> {
    until: HashMap<K, u64>,
    /// Prune when this many are held.
    prune_at: usize,
}

impl<K> Default for Expiring<K> {
    fn default() -> Self {
        Self {
            until: HashMap::new(),
            prune_at: 1024,
        }
    }
}

impl<K: std::hash::Hash + Eq> Expiring<K> {
    fn insert(&mut self, key: K, until: u64) {
        if self.until.len() >= self.prune_at {
            let now = now_secs();
            self.until.retain(|_, until| *until > now);
            self.prune_at = (self.until.len() * 2).max(1024);
        }
        self.until.insert(key, until);
    }

    /// Whether `key` is held and unexpired.
    fn holds(&self, key: &K, now: u64) -> bool {
        self.until.get(key).is_some_and(|until| *until > now)
    }

    fn remove(&mut self, key: &K) -> bool {
        self.until.remove(key).is_some()
    }
}

impl SubscriptionIndex {
    fn remove(&mut self, key: &SubscriptionKey) -> bool {
        let Some(topic) = self.topic_of.remove(key) else {
            return false;
        };
        if let Some(subs) = self.by_topic.get_mut(&topic) {
            subs.remove(key);
            if subs.is_empty() {
                self.by_topic.remove(&topic);
            }
        }
        if let Some(keys) = self.by_connection.get_mut(&key.connection_id) {
            keys.remove(key);
            if keys.is_empty() {
                self.by_connection.remove(&key.connection_id);
            }
        }
        self.held.remove(key);
        true
    }

    fn stored_mut(&mut self, subscription: &Subscription) -> Option<&mut Subscription> {
        self.by_topic
            .get_mut(&subscription.topic)?
            .get_mut(&subscription.key)
    }
}

impl MemorySubscriptionStore {
    /// How many subscriptions are stored (expired ones included).
    pub fn len(&self) -> usize {
        lock(&self.inner).topic_of.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
impl SubscriptionStore for MemorySubscriptionStore {
    async fn insert_within(
        &self,
        subscription: &Subscription,
        max_per_connection: usize,
    ) -> Result<Inserted, StoreError> {
        let mut index = lock(&self.inner);
        let key = &subscription.key;
        let now = now_secs();
        if index.topic_of.contains_key(key) {
            return Err(StoreError::Conflict(format!(
                "subscription {} already exists",
                key.encode()
            )));
        }
        if index.closed.holds(&key.connection_id, now) {
            return Ok(Inserted::ConnectionClosed);
        }
        let tombstone = index.tombstones.holds(key, now);
        index.tombstones.remove(key);
        if tombstone {
            return Ok(Inserted::Completed);
        }
        let held = index
            .by_connection
            .get(&key.connection_id)
            .map_or(0, HashSet::len);
        if held >= max_per_connection {
            return Err(StoreError::LimitReached(format!(
                "{} holds {held} subscriptions",
                key.connection_id
            )));
        }
        index
            .topic_of
            .insert(key.clone(), subscription.topic.clone());
        index
            .by_connection
            .entry(key.connection_id.clone())
            .or_default()
            .insert(key.clone());
        index
            .by_topic
            .entry(subscription.topic.clone())
            .or_default()
            .insert(key.clone(), subscription.clone());
        Ok(Inserted::Stored)
    }

    async fn complete(
        &self,
        key: &SubscriptionKey,
        tombstone_until: u64,
    ) -> Result<bool, StoreError> {
        let mut index = lock(&self.inner);
        if index.remove(key) {
            return Ok(true);
        }
        index.tombstones.insert(key.clone(), tombstone_until);
        Ok(false)
    }

    async fn close_connection(
        &self,
        id: &ConnectionId,
        closed_until: u64,
    ) -> Result<usize, StoreError> {
        let mut index = lock(&self.inner);
        index.closed.insert(id.clone(), closed_until);
        index
            .tombstones
            .until
            .retain(|key, _| key.connection_id != *id);
        let keys = index.by_connection.remove(id).unwrap_or_default();
        for key in &keys {
            index.remove(key);
        }
        Ok(keys.len())
    }

    async fn contains(&self, key: &SubscriptionKey) -> Result<bool, StoreError> {
        Ok(lock(&self.inner).topic_of.contains_key(key))
    }

    async fn delete(&self, key: &SubscriptionKey) -> Result<bool, StoreError> {
        Ok(lock(&self.inner).remove(key))
    }

    async fn by_topic(&self, topic: &Topic) -> Result<Vec<Subscription>, StoreError> {
        let now = now_secs();
        Ok(lock(&self.inner)
            .by_topic
            .get(topic)
            .map(|subs| {
                subs.values()
                    .filter(|s| s.expires_at > now)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn get_many(
        &self,
        topic: &Topic,
        keys: &[SubscriptionKey],
    ) -> Result<Vec<Subscription>, StoreError> {
        let now = now_secs();
        let index = lock(&self.inner);
        let Some(subs) = index.by_topic.get(topic) else {
            return Ok(Vec::new());
        };
        Ok(keys
            .iter()
            .filter_map(|k| subs.get(k))
            .filter(|s| s.expires_at > now)
            .cloned()
            .collect())
    }

    async fn count_by_connection(&self, id: &ConnectionId) -> Result<usize, StoreError> {
        Ok(lock(&self.inner)
            .by_connection
            .get(id)
            .map_or(0, |keys| keys.len()))
    }

    async fn by_connection(&self, id: &ConnectionId) -> Result<Vec<SubscriptionKey>, StoreError> {
        let now = now_secs();
        let index = lock(&self.inner);
        let Some(keys) = index.by_connection.get(id) else {
            return Ok(Vec::new());
        };
        let live = |key: &&SubscriptionKey| {
            index
                .topic_of
                .get(*key)
                .and_then(|topic| index.by_topic.get(topic))
                .and_then(|subs| subs.get(*key))
                .is_some_and(|s| s.expires_at > now)
        };
        Ok(keys.iter().filter(live).cloned().collect())
    }

    async fn delete_by_connection(&self, id: &ConnectionId) -> Result<usize, StoreError> {
        let mut index = lock(&self.inner);
        index
            .tombstones
            .until
            .retain(|key, _| key.connection_id != *id);
        let keys = index.by_connection.remove(id).unwrap_or_default();
        for key in &keys {
            index.remove(key);
        }
        Ok(keys.len())
    }

    async fn hold(&self, subscription: &Subscription) -> Result<Hold, StoreError> {
        let mut index = lock(&self.inner);
        let until = match index.stored_mut(subscription) {
            Some(stored) => stored.replaying_until_ms,
            None => return Ok(Hold::Live),
        };
        Ok(match until {
            0 => Hold::Live,
            until if until > now_ms() => {
                *index.held.entry(subscription.key.clone()).or_default() += 1;
                Hold::Held
            }
            _ => Hold::Abandoned,
        })
    }

    async fn hand_over(
        &self,
        subscription: &Subscription,
        held: Option<u64>,
    ) -> Result<HandOver, StoreError> {
        let mut index = lock(&self.inner);
        let now_held = index.held.get(&subscription.key).copied().unwrap_or(0);
        if held.is_some_and(|held| held != now_held) {
            return Ok(HandOver::Held(now_held));
        }
        if let Some(stored) = index.stored_mut(subscription) {
            stored.replaying_until_ms = 0;
        }
        index.held.remove(&subscription.key);
        Ok(HandOver::Done)
    }

    async fn pages_enqueued(
        &self,
        topic: &Topic,
        pages: &[String],
        expires_at: u64,
    ) -> Result<(), StoreError> {
        let mut index = lock(&self.inner);
        let now = now_secs();
        index.pages.retain(|_, marks| {
            marks.retain(|_, until| *until > now);
            !marks.is_empty()
        });
        let marks = index.pages.entry(topic.clone()).or_default();
        marks.extend(pages.iter().map(|page| (page.clone(), expires_at)));
        Ok(())
    }

    async fn page_done(&self, topic: &Topic, page: &str) -> Result<(), StoreError> {
        let mut index = lock(&self.inner);
        if let Some(marks) = index.pages.get_mut(topic) {
            marks.remove(page);
            if marks.is_empty() {
                index.pages.remove(topic);
            }
        }
        Ok(())
    }

    async fn pages_in_flight(&self, topic: &Topic) -> Result<bool, StoreError> {
        let index = lock(&self.inner);
        let now = now_secs();
        Ok(index
            .pages
            .get(topic)
            .is_some_and(|marks| marks.values().any(|until| *until > now)))
    }
}

/// The embedded event log. Besides storing events it behaves like a one-shard stream:
/// [`MemoryEventLog::read_from`] returns the events appended after a position, so the local
/// mode can feed the publisher in batches, as Lambda's stream polling does.
#[derive(Default)]
pub struct MemoryEventLog {
    inner: Mutex<EventLogState>,
    appended: Notify,
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
        let state = lock(&self.inner);
        let start = from.max(state.base);
        let batch: Vec<Event> = state
            .events
            .iter()
            .skip(start - state.base)
            .take(max)
            .cloned()
            .collect();
        let next = start + batch.len();
        (batch, next)
    }

    /// Events the log holds (unexpired ones, and expired ones not yet removed).
    pub fn len(&self) -> usize {
        lock(&self.inner).events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Resolves when an event is appended after this call (or was, since the last wait).
    pub async fn appended(&self) {
        self.appended.notified().await;
    }
}

#[async_trait]
impl EventLog for MemoryEventLog {
    async fn append(&self, event: &Event) -> Result<(), StoreError> {
        // The DynamoDB log stores "everyone" as `*`: a user of that name would read back as
        // everyone there, so both logs refuse it.
        if event.audience == Audience::User(UserId::new("*")) {
            return Err(StoreError::Malformed(
                "`*` is not a valid audience user".to_owned(),
            ));
        }
        {
            let mut state = lock(&self.inner);
            state.purge_expired(now_secs());
            let key = (event.topic.clone(), event.id.clone());
            if state.by_ref.contains_key(&key) {
                return Err(StoreError::Conflict(format!("event {} exists", event.id)));
            }
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

    /// Stored at once or not at all: past the deadline nothing is stored.
    async fn append_by(&self, event: &Event, deadline_ms: u64) -> Result<(), StoreError> {
        if now_ms() > deadline_ms {
            return Err(StoreError::TooLate);
        }
        self.append(event).await
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

/// A gateway that records what was posted instead of sending it; connections listed with
/// [`RecordingGateway::set_gone`] answer like API Gateway's 410, those listed with
/// [`RecordingGateway::set_failing`] like a gateway that is down.
#[derive(Default)]
pub struct RecordingGateway {
    inner: Mutex<RecordingState>,
}

#[derive(Default)]
struct RecordingState {
    frames: HashMap<ConnectionId, Vec<String>>,
    closed: Vec<(ConnectionId, CloseCode)>,
    gone: HashSet<ConnectionId>,
    failing: HashSet<ConnectionId>,
}

impl RecordingGateway {
    /// Takes the frames posted to `id` so far, parsed as JSON.
    pub fn take(&self, id: &ConnectionId) -> Vec<serde_json::Value> {
        self.take_text(id)
            .iter()
            .map(|f| serde_json::from_str(f).expect("posted frames are JSON"))
            .collect()
    }

    /// Takes the frames posted to `id` so far, as posted.
    pub fn take_text(&self, id: &ConnectionId) -> Vec<String> {
        lock(&self.inner).frames.remove(id).unwrap_or_default()
    }

    pub fn closed(&self) -> Vec<(ConnectionId, CloseCode)> {
        lock(&self.inner).closed.clone()
    }

    pub fn set_gone(&self, id: &ConnectionId) {
        lock(&self.inner).gone.insert(id.clone());
    }

    pub fn set_failing(&self, id: &ConnectionId) {
        lock(&self.inner).failing.insert(id.clone());
    }
}

#[async_trait]
impl ConnectionGateway for RecordingGateway {
    async fn post(&self, id: &ConnectionId, frame: &str) -> Result<(), GatewayError> {
        let mut state = lock(&self.inner);
        if state.gone.contains(id) {
            return Err(GatewayError::Gone);
        }
        if state.failing.contains(id) {
            return Err(GatewayError::backend("the gateway is down"));
        }
        state
            .frames
            .entry(id.clone())
            .or_default()
            .push(frame.to_owned());
        Ok(())
    }

    async fn close(
        &self,
        id: &ConnectionId,
        code: CloseCode,
        _reason: &str,
    ) -> Result<(), GatewayError> {
        let mut state = lock(&self.inner);
        if state.gone.contains(id) {
            return Err(GatewayError::Gone);
        }
        state.closed.push((id.clone(), code));
        Ok(())
    }
}

/// A fan-out queue over a tokio channel: the local mode runs the worker on the other end.
pub struct ChannelFanoutQueue {
    sender: mpsc::UnboundedSender<FanoutPage>,
    ordered: bool,
}

impl ChannelFanoutQueue {
    /// A queue that promises no order ([`FanoutQueue::ordered`] is false).
    pub fn new() -> (Self, mpsc::UnboundedReceiver<FanoutPage>) {
        let (sender, receiver) = mpsc::unbounded_channel();
        (
            Self {
                sender,
                ordered: false,
            },
            receiver,
        )
    }

    /// A queue whose consumer keeps each group's pages in order and retries a failed page
    /// before the later pages of its group (the local mode's embedded worker does).
    pub fn ordered() -> (Self, mpsc::UnboundedReceiver<FanoutPage>) {
        let (queue, receiver) = Self::new();
        (
            Self {
                ordered: true,
                ..queue
            },
            receiver,
        )
    }
}

#[async_trait]
impl FanoutQueue for ChannelFanoutQueue {
    fn ordered(&self) -> bool {
        self.ordered
    }

    async fn enqueue(&self, pages: &[FanoutPage]) -> Result<(), StoreError> {
        for page in pages {
            self.sender
                .send(page.clone())
                .map_err(|_| StoreError::backend("fan-out worker has stopped"))?;
        }
        Ok(())
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain data behind, still consistent
    // enough to keep serving: recover instead of poisoning every later request.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
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
