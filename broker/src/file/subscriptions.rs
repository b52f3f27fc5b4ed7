//! The subscription store in the database file.

use std::sync::atomic::{AtomicU64, Ordering};

use ::redb::{ReadableTable, ReadableTableMetadata, WriteTransaction};
use async_trait::async_trait;

use super::store::Commit;
use super::tables::{CLOSED, HELD, SUBSCRIPTION_TOPICS, SUBSCRIPTIONS, TOMBSTONES};
use super::{FileStore, backend, from_json, to_json};
use crate::domain::{ConnectionId, Subscription, SubscriptionKey, Topic, now_secs};
use crate::ports::{Inserted, StoreError, SubscriptionStore};

/// Tombstones and closed connections are pruned of expired ones when this many are held.
const PRUNE_AT: u64 = 1024;

/// Subscriptions in the database file, with their tombstones and closed connections,
/// without fsync (see the documentation of [`crate::file`]).
#[derive(Debug)]
pub struct FileSubscriptionStore {
    pub(super) store: FileStore,
}

pub(super) fn live_subscription(
    bytes: &[u8],
    now: u64,
) -> Result<Option<Subscription>, StoreError> {
    let subscription: Subscription = from_json(bytes)?;
    Ok((subscription.expires_at > now).then_some(subscription))
}

/// Removes one subscription in `tx`; whether it existed.
fn remove_subscription(tx: &WriteTransaction, key: &SubscriptionKey) -> Result<bool, StoreError> {
    let mut topics = tx.open_table(SUBSCRIPTION_TOPICS).map_err(backend)?;
    let topic = match topics
        .remove((key.connection_id.as_str(), key.operation_id.as_str()))
        .map_err(backend)?
    {
        Some(topic) => topic.value().to_owned(),
        None => return Ok(false),
    };
    let encoded = key.encode();
    let stored = (topic.as_str(), encoded.as_str());
    tx.open_table(SUBSCRIPTIONS)
        .map_err(backend)?
        .remove(stored)
        .map_err(backend)?;
    tx.open_table(HELD)
        .map_err(backend)?
        .remove(stored)
        .map_err(backend)?;
    Ok(true)
}

/// Removes the tombstones of one connection's operations.
fn remove_tombstones_of(
    tx: &WriteTransaction,
    connection: &ConnectionId,
) -> Result<(), StoreError> {
    let mut tombstones = tx.open_table(TOMBSTONES).map_err(backend)?;
    let mut operations = Vec::new();
    for entry in tombstones
        .range((connection.as_str(), "")..)
        .map_err(backend)?
    {
        let (key, _) = entry.map_err(backend)?;
        let (id, operation) = key.value();
        if id != connection.as_str() {
            break;
        }
        operations.push(operation.to_owned());
    }
    for operation in &operations {
        tombstones
            .remove((connection.as_str(), operation.as_str()))
            .map_err(backend)?;
    }
    Ok(())
}

/// Drops the expired tombstones and closed connections once they are many: what is held is
/// bounded by what the tombstones' window holds. A table is scanned when it holds
/// [`PRUNE_AT`] entries and twice what its last scan left (`marks`, per table), so scans
/// cost each write a constant on average, however many entries are still within their
/// window: thousands of sockets closed at once are as many live entries in `CLOSED`.
fn prune_expired(
    tx: &WriteTransaction,
    now: u64,
    marks: &[AtomicU64; 2],
) -> Result<(), StoreError> {
    let mut tombstones = tx.open_table(TOMBSTONES).map_err(backend)?;
    if tombstones.len().map_err(backend)? >= PRUNE_AT.max(marks[0].load(Ordering::Relaxed)) {
        tombstones.retain(|_, until| until > now).map_err(backend)?;
        let left = tombstones.len().map_err(backend)?;
        marks[0].store(2 * left, Ordering::Relaxed);
    }
    let mut closed = tx.open_table(CLOSED).map_err(backend)?;
    if closed.len().map_err(backend)? >= PRUNE_AT.max(marks[1].load(Ordering::Relaxed)) {
        closed.retain(|_, until| until > now).map_err(backend)?;
        let left = closed.len().map_err(backend)?;
        marks[1].store(2 * left, Ordering::Relaxed);
    }
    Ok(())
}

/// The operation ids of one connection's subscriptions, with their topics.
fn operations_of(
    table: &impl ReadableTable<(&'static str, &'static str), &'static str>,
    connection: &ConnectionId,
) -> Result<Vec<(SubscriptionKey, String)>, StoreError> {
    let mut found = Vec::new();
    for entry in table.range((connection.as_str(), "")..).map_err(backend)? {
        let (key, topic) = entry.map_err(backend)?;
        let (id, operation) = key.value();
        if id != connection.as_str() {
            break;
        }
        found.push((
            SubscriptionKey {
                connection_id: connection.clone(),
                operation_id: operation.to_owned(),
            },
            topic.value().to_owned(),
        ));
    }
    Ok(found)
}

#[async_trait]
impl SubscriptionStore for FileSubscriptionStore {
    async fn insert_within(
        &self,
        subscription: &Subscription,
        max_per_connection: usize,
    ) -> Result<Inserted, StoreError> {
        let subscription = subscription.clone();
        self.store
            .write(Commit::Light, move |tx| {
                let key = &subscription.key;
                let now = now_secs();
                let mut topics = tx.open_table(SUBSCRIPTION_TOPICS).map_err(backend)?;
                let id = (key.connection_id.as_str(), key.operation_id.as_str());
                if topics.get(id).map_err(backend)?.is_some() {
                    return Err(StoreError::Conflict(format!(
                        "subscription {} already exists",
                        key.encode()
                    )));
                }
                let closed = tx
                    .open_table(CLOSED)
                    .map_err(backend)?
                    .get(key.connection_id.as_str())
                    .map_err(backend)?
                    .is_some_and(|until| until.value() > now);
                if closed {
                    return Ok(Inserted::ConnectionClosed);
                }
                let tombstone = tx
                    .open_table(TOMBSTONES)
                    .map_err(backend)?
                    .remove(id)
                    .map_err(backend)?
                    .is_some_and(|until| until.value() > now);
                if tombstone {
                    return Ok(Inserted::Completed);
                }
                // Counted in the write transaction, which is the only one: the limit holds
                // whatever runs concurrently.
                let held = operations_of(&topics, &key.connection_id)?.len();
                if held >= max_per_connection {
                    return Err(StoreError::LimitReached(format!(
                        "{} holds {held} subscriptions",
                        key.connection_id
                    )));
                }
                topics
                    .insert(id, subscription.topic.as_str())
                    .map_err(backend)?;
                tx.open_table(SUBSCRIPTIONS)
                    .map_err(backend)?
                    .insert(
                        (subscription.topic.as_str(), key.encode().as_str()),
                        to_json(&subscription)?.as_slice(),
                    )
                    .map_err(backend)?;
                Ok(Inserted::Stored)
            })
            .await
    }

    async fn complete(
        &self,
        key: &SubscriptionKey,
        tombstone_until: u64,
    ) -> Result<bool, StoreError> {
        let (key, marks) = (key.clone(), self.store.inner.prune_at.clone());
        self.store
            .write(Commit::Light, move |tx| {
                if remove_subscription(tx, &key)? {
                    return Ok(true);
                }
                prune_expired(tx, now_secs(), &marks)?;
                tx.open_table(TOMBSTONES)
                    .map_err(backend)?
                    .insert(
                        (key.connection_id.as_str(), key.operation_id.as_str()),
                        tombstone_until,
                    )
                    .map_err(backend)?;
                Ok(false)
            })
            .await
    }

    async fn close_connection(
        &self,
        id: &ConnectionId,
        closed_until: u64,
    ) -> Result<usize, StoreError> {
        let (id, marks) = (id.clone(), self.store.inner.prune_at.clone());
        self.store
            .write(Commit::Light, move |tx| {
                prune_expired(tx, now_secs(), &marks)?;
                tx.open_table(CLOSED)
                    .map_err(backend)?
                    .insert(id.as_str(), closed_until)
                    .map_err(backend)?;
                remove_tombstones_of(tx, &id)?;
                let keys = {
                    let topics = tx.open_table(SUBSCRIPTION_TOPICS).map_err(backend)?;
                    operations_of(&topics, &id)?
                };
                for (key, _) in &keys {
                    remove_subscription(tx, key)?;
                }
                Ok(keys.len())
            })
            .await
    }

    async fn contains(&self, key: &SubscriptionKey) -> Result<bool, StoreError> {
        let key = key.clone();
        self.store
            .run(move |store| {
                let tx = store.read()?;
                let topics = tx.open_table(SUBSCRIPTION_TOPICS).map_err(backend)?;
                Ok(topics
                    .get((key.connection_id.as_str(), key.operation_id.as_str()))
                    .map_err(backend)?
                    .is_some())
            })
            .await
    }

    async fn delete(&self, key: &SubscriptionKey) -> Result<bool, StoreError> {
        let key = key.clone();
        self.store
            .write(Commit::Light, move |tx| remove_subscription(tx, &key))
            .await
    }

    async fn by_topic(&self, topic: &Topic) -> Result<Vec<Subscription>, StoreError> {
        let topic = topic.clone();
        self.store
            .run(move |store| {
                let tx = store.read()?;
                let table = tx.open_table(SUBSCRIPTIONS).map_err(backend)?;
                let now = now_secs();
                let mut found = Vec::new();
                for entry in table.range((topic.as_str(), "")..).map_err(backend)? {
                    let (key, value) = entry.map_err(backend)?;
                    if key.value().0 != topic.as_str() {
                        break;
                    }
                    found.extend(live_subscription(value.value(), now)?);
                }
                Ok(found)
            })
            .await
    }

    async fn get_many(
        &self,
        topic: &Topic,
        keys: &[SubscriptionKey],
    ) -> Result<Vec<Subscription>, StoreError> {
        let (topic, keys) = (topic.clone(), keys.to_vec());
        self.store
            .run(move |store| {
                let tx = store.read()?;
                let table = tx.open_table(SUBSCRIPTIONS).map_err(backend)?;
                let now = now_secs();
                let mut found = Vec::new();
                for key in &keys {
                    if let Some(value) = table
                        .get((topic.as_str(), key.encode().as_str()))
                        .map_err(backend)?
                    {
                        found.extend(live_subscription(value.value(), now)?);
                    }
                }
                Ok(found)
            })
            .await
    }

    async fn count_by_connection(&self, id: &ConnectionId) -> Result<usize, StoreError> {
        let id = id.clone();
        self.store
            .run(move |store| {
                let tx = store.read()?;
                let topics = tx.open_table(SUBSCRIPTION_TOPICS).map_err(backend)?;
                Ok(operations_of(&topics, &id)?.len())
            })
            .await
    }

    async fn by_connection(&self, id: &ConnectionId) -> Result<Vec<SubscriptionKey>, StoreError> {
        let id = id.clone();
        self.store
            .run(move |store| {
                let tx = store.read()?;
                let topics = tx.open_table(SUBSCRIPTION_TOPICS).map_err(backend)?;
                let table = tx.open_table(SUBSCRIPTIONS).map_err(backend)?;
                let now = now_secs();
                let mut live = Vec::new();
                for (key, topic) in operations_of(&topics, &id)? {
                    if let Some(value) = table
                        .get((topic.as_str(), key.encode().as_str()))
                        .map_err(backend)?
                        && live_subscription(value.value(), now)?.is_some()
                    {
                        live.push(key);
                    }
                }
                Ok(live)
            })
            .await
    }
}

impl FileStore {
    /// The subscription store.
    pub fn subscriptions(&self) -> FileSubscriptionStore {
        FileSubscriptionStore {
            store: self.clone(),
        }
    }
}
