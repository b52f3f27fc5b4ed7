//! The in-memory subscription store.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::{MemoryReplayGate, lock};
use crate::domain::{ConnectionId, Subscription, SubscriptionKey, Topic, now_secs};
use crate::ports::{Inserted, StoreError, SubscriptionStore};

/// Subscriptions in maps by topic, by key and by connection, with their tombstones. Its
/// [`MemorySubscriptionStore::replay_gate`] works on the same maps.
#[derive(Default)]
pub struct MemorySubscriptionStore {
    inner: Arc<Mutex<SubscriptionIndex>>,
}

impl std::fmt::Debug for MemorySubscriptionStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemorySubscriptionStore")
            .finish_non_exhaustive()
    }
}

/// The maps behind one [`MemorySubscriptionStore`], shared with its replay gate.
#[derive(Default)]
pub(super) struct SubscriptionIndex {
    by_topic: HashMap<Topic, BTreeMap<SubscriptionKey, Subscription>>,
    /// The topic of each key: operation ids are unique per connection across topics.
    topic_of: HashMap<SubscriptionKey, Topic>,
    by_connection: HashMap<ConnectionId, HashSet<SubscriptionKey>>,
    /// Operations completed before they were stored, until when.
    tombstones: Expiring<SubscriptionKey>,
    /// Connections closed, until when.
    closed: Expiring<ConnectionId>,
    /// Live events held back from each replaying subscription (see
    /// [`super::MemoryReplayGate`]).
    pub(super) held: HashMap<SubscriptionKey, u64>,
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

    /// The stored copy of `subscription`, if it is stored.
    pub(super) fn stored_mut(&mut self, subscription: &Subscription) -> Option<&mut Subscription> {
        self.by_topic
            .get_mut(&subscription.topic)?
            .get_mut(&subscription.key)
    }
}

impl MemorySubscriptionStore {
    /// The replay gate of this store's subscriptions.
    pub fn replay_gate(&self) -> MemoryReplayGate {
        MemoryReplayGate::new(self.inner.clone())
    }

    /// How many subscriptions are stored (expired ones included).
    pub fn len(&self) -> usize {
        lock(&self.inner).topic_of.len()
    }

    /// Whether no subscription is stored (see [`Self::len`]).
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
}
