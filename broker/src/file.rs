//! The file backend (feature `file`): the broker's ports and the apps' tables in one
//! [redb](https://www.redb.org) database file, for the local mode. redb is pure Rust, ACID
//! and crash-safe: a commit that returned survives `kill -9` and power loss.
//!
//! What is written how:
//! - **Events** (the log, its stream order, the stream position) and **app tables** commit
//!   durably (fsync) before the call returns: an accepted event and a saved change survive.
//! - **Connections and subscriptions** commit without fsync (redb's `Durability::None`, made
//!   durable by the next durable commit): their sockets die with the process anyway, and
//!   [`FileStore::forget_connections`] removes what a previous process left at start.
//! - **Delivery marks** commit without fsync as well: a mark lost in a crash means the event
//!   is handed to the publisher once more after the restart, to subscriptions stored since.
//!
//! Every call runs its transaction on tokio's blocking pool: redb's API is synchronous.

use std::marker::PhantomData;
use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ::redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
    WriteTransaction,
};
use async_trait::async_trait;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::Notify;

use crate::domain::{
    Audience, Connection, ConnectionId, Event, EventRef, Subscription, SubscriptionKey, Topic,
    UserId, now_ms, now_secs,
};
use crate::ports::{
    ConnectionStore, EventLog, HandOver, Hold, Inserted, StoreError, SubscriptionStore,
};

/// Connection id → JSON [`Connection`].
const CONNECTIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("connections");
/// (user, connection id): `by_user`.
const CONNECTIONS_BY_USER: TableDefinition<(&str, &str), ()> =
    TableDefinition::new("connections_by_user");
/// (topic, encoded key) → JSON [`Subscription`]: `by_topic` is one range.
const SUBSCRIPTIONS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("subscriptions");
/// (connection id, operation id) → topic: `contains`, `by_connection`, the per-connection
/// uniqueness of operation ids.
const SUBSCRIPTION_TOPICS: TableDefinition<(&str, &str), &str> =
    TableDefinition::new("subscription_topics");
/// (connection id, operation id) → until when: a `complete` that came before its
/// `subscribe` (see [`SubscriptionStore::complete`]).
const TOMBSTONES: TableDefinition<(&str, &str), u64> = TableDefinition::new("tombstones");
/// (topic, encoded key) → how many live events were held back from a replaying
/// subscription ([`SubscriptionStore::hold`]).
const HELD: TableDefinition<(&str, &str), u64> = TableDefinition::new("subscriptions_held");
/// Connection id → until when: a closed connection stores no subscription.
const CLOSED: TableDefinition<&str, u64> = TableDefinition::new("closed_connections");
/// (topic, page id) → until when: fan-out pages on their way through the ordered queue.
const PAGES: TableDefinition<(&str, &str), u64> = TableDefinition::new("fanout_pages_in_flight");
/// Tombstones and closed connections are pruned of expired ones when this many are held.
const PRUNE_AT: u64 = 1024;
/// (topic, event id) → JSON [`Event`]: a topic's events in id order.
const EVENTS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("events");
/// (topic, event id) of the events delivered in full.
const DELIVERED: TableDefinition<(&str, &str), ()> = TableDefinition::new("events_delivered");
/// Stream sequence number → (topic, event id): the order events were appended in, what the
/// local mode's stream reads.
const STREAM: TableDefinition<u64, (&str, &str)> = TableDefinition::new("events_stream");
/// (expires at, topic, event id) → stream sequence number: what [`FileEventLog::purge_expired`]
/// removes.
const EXPIRY: TableDefinition<(u64, &str, &str), u64> = TableDefinition::new("events_expiry");
/// Counters: the next stream sequence number, the stream position read up to.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const NEXT_SEQUENCE: &str = "stream.next";
const STREAM_POSITION: &str = "stream.position";

/// Every this many commits without fsync, one with: redb frees pages of a non-durable
/// commit only after a durable one, so a file seeing only connection churn would grow.
const DURABLE_EVERY: u64 = 256;

/// One database file: the broker's stores and the apps' tables.
#[derive(Clone)]
pub struct FileStore {
    inner: Arc<Inner>,
}

struct Inner {
    db: Database,
    appended: Notify,
    light_commits: AtomicU64,
}

fn backend(error: impl Into<::redb::Error>) -> StoreError {
    StoreError::backend(error.into())
}

fn to_json(value: &impl Serialize) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(StoreError::backend)
}

fn from_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Malformed(e.to_string()))
}

/// How a write transaction is committed.
#[derive(Clone, Copy)]
enum Commit {
    /// fsync before returning.
    Durable,
    /// Without fsync (see the module's documentation).
    Light,
}

impl FileStore {
    /// Opens the database at `path`, creating it (and its folder) when missing. After a
    /// crash redb checks and repairs the file here.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(StoreError::backend)?;
        }
        let db = Database::create(path).map_err(backend)?;
        let store = Self {
            inner: Arc::new(Inner {
                db,
                appended: Notify::new(),
                light_commits: AtomicU64::new(0),
            }),
        };
        // Every table exists from the start, so reads never meet a missing one.
        store.write(Commit::Durable, |tx| {
            tx.open_table(CONNECTIONS).map_err(backend)?;
            tx.open_table(CONNECTIONS_BY_USER).map_err(backend)?;
            tx.open_table(SUBSCRIPTIONS).map_err(backend)?;
            tx.open_table(SUBSCRIPTION_TOPICS).map_err(backend)?;
            tx.open_table(TOMBSTONES).map_err(backend)?;
            tx.open_table(CLOSED).map_err(backend)?;
            tx.open_table(HELD).map_err(backend)?;
            tx.open_table(PAGES).map_err(backend)?;
            tx.open_table(EVENTS).map_err(backend)?;
            tx.open_table(DELIVERED).map_err(backend)?;
            tx.open_table(STREAM).map_err(backend)?;
            tx.open_table(EXPIRY).map_err(backend)?;
            tx.open_table(META).map_err(backend)?;
            Ok(())
        })?;
        Ok(store)
    }

    pub fn connections(&self) -> FileConnectionStore {
        FileConnectionStore {
            store: self.clone(),
        }
    }

    pub fn subscriptions(&self) -> FileSubscriptionStore {
        FileSubscriptionStore {
            store: self.clone(),
        }
    }

    pub fn events(&self) -> FileEventLog {
        FileEventLog {
            store: self.clone(),
        }
    }

    /// An app's table named `name` (its own namespace: no app table can clash with the
    /// broker's), holding values of type `V`.
    pub fn table<V>(&self, name: &str) -> Table<V> {
        Table {
            store: self.clone(),
            name: format!("app/{name}"),
            values: PhantomData,
        }
    }

    /// Removes every connection and subscription (and their tombstones, and the marks of
    /// fan-out pages on their way): a new process calls it at start, since the sockets they
    /// stood for, and the in-memory queue, died with the process that stored them. Returns how many
    /// connections and subscriptions there were.
    pub fn forget_connections(&self) -> Result<(u64, u64), StoreError> {
        self.write(Commit::Durable, |tx| {
            let connections = tx
                .open_table(CONNECTIONS)
                .map_err(backend)?
                .len()
                .map_err(backend)?;
            let subscriptions = tx
                .open_table(SUBSCRIPTIONS)
                .map_err(backend)?
                .len()
                .map_err(backend)?;
            tx.delete_table(CONNECTIONS).map_err(backend)?;
            tx.delete_table(CONNECTIONS_BY_USER).map_err(backend)?;
            tx.delete_table(SUBSCRIPTIONS).map_err(backend)?;
            tx.delete_table(SUBSCRIPTION_TOPICS).map_err(backend)?;
            tx.delete_table(TOMBSTONES).map_err(backend)?;
            tx.delete_table(CLOSED).map_err(backend)?;
            tx.delete_table(HELD).map_err(backend)?;
            // The queue is in memory: none of its pages outlived the process.
            tx.delete_table(PAGES).map_err(backend)?;
            tx.open_table(CONNECTIONS).map_err(backend)?;
            tx.open_table(CONNECTIONS_BY_USER).map_err(backend)?;
            tx.open_table(SUBSCRIPTIONS).map_err(backend)?;
            tx.open_table(SUBSCRIPTION_TOPICS).map_err(backend)?;
            tx.open_table(TOMBSTONES).map_err(backend)?;
            tx.open_table(CLOSED).map_err(backend)?;
            tx.open_table(HELD).map_err(backend)?;
            tx.open_table(PAGES).map_err(backend)?;
            Ok((connections, subscriptions))
        })
    }

    /// Runs `f` in a write transaction and commits it.
    fn write<T>(
        &self,
        commit: Commit,
        f: impl FnOnce(&WriteTransaction) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut tx = self.inner.db.begin_write().map_err(backend)?;
        let light = matches!(commit, Commit::Light)
            && !self
                .inner
                .light_commits
                .fetch_add(1, Ordering::Relaxed)
                .is_multiple_of(DURABLE_EVERY);
        if light {
            tx.set_durability(Durability::None).map_err(backend)?;
        }
        let value = f(&tx)?;
        tx.commit().map_err(backend)?;
        Ok(value)
    }

    /// Runs `f` on tokio's blocking pool with this store.
    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&FileStore) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(StoreError::backend)?
    }

    fn read(&self) -> Result<::redb::ReadTransaction, StoreError> {
        self.inner.db.begin_read().map_err(backend)
    }
}

// --- connections -------------------------------------------------------------------------

pub struct FileConnectionStore {
    store: FileStore,
}

fn live_connection(bytes: &[u8], now: u64) -> Result<Option<Connection>, StoreError> {
    let connection: Connection = from_json(bytes)?;
    Ok((connection.expires_at > now).then_some(connection))
}

#[async_trait]
impl ConnectionStore for FileConnectionStore {
    async fn put(&self, connection: &Connection) -> Result<(), StoreError> {
        let connection = connection.clone();
        self.store
            .run(move |store| {
                store.write(Commit::Light, |tx| {
                    let mut table = tx.open_table(CONNECTIONS).map_err(backend)?;
                    let mut by_user = tx.open_table(CONNECTIONS_BY_USER).map_err(backend)?;
                    let id = connection.id.as_str();
                    let previous = table
                        .get(id)
                        .map_err(backend)?
                        .map(|v| from_json::<Connection>(v.value()))
                        .transpose()?;
                    if let Some(user) = previous.and_then(|c| c.principal) {
                        by_user.remove((user.as_str(), id)).map_err(backend)?;
                    }
                    table
                        .insert(id, to_json(&connection)?.as_slice())
                        .map_err(backend)?;
                    if let Some(user) = &connection.principal {
                        by_user.insert((user.as_str(), id), ()).map_err(backend)?;
                    }
                    Ok(())
                })
            })
            .await
    }

    async fn get(&self, id: &ConnectionId) -> Result<Option<Connection>, StoreError> {
        let id = id.clone();
        self.store
            .run(move |store| {
                let tx = store.read()?;
                let table = tx.open_table(CONNECTIONS).map_err(backend)?;
                match table.get(id.as_str()).map_err(backend)? {
                    Some(value) => live_connection(value.value(), now_secs()),
                    None => Ok(None),
                }
            })
            .await
    }

    async fn mark_initialised(
        &self,
        id: &ConnectionId,
        user: &UserId,
        authorized_until: u64,
    ) -> Result<(), StoreError> {
        let (id, user) = (id.clone(), user.clone());
        self.store
            .run(move |store| {
                store.write(Commit::Light, |tx| {
                    let mut table = tx.open_table(CONNECTIONS).map_err(backend)?;
                    let found = table
                        .get(id.as_str())
                        .map_err(backend)?
                        .map(|v| from_json::<Connection>(v.value()))
                        .transpose()?;
                    let mut connection = match found {
                        Some(c) if !c.initialised => c,
                        Some(_) => {
                            return Err(StoreError::Conflict(format!(
                                "{id} is already initialised"
                            )));
                        }
                        None => return Err(StoreError::Conflict(format!("{id} does not exist"))),
                    };
                    let mut by_user = tx.open_table(CONNECTIONS_BY_USER).map_err(backend)?;
                    if let Some(previous) = &connection.principal {
                        by_user
                            .remove((previous.as_str(), id.as_str()))
                            .map_err(backend)?;
                    }
                    connection.initialised = true;
                    connection.principal = Some(user.clone());
                    connection.authorized_until = Some(authorized_until);
                    table
                        .insert(id.as_str(), to_json(&connection)?.as_slice())
                        .map_err(backend)?;
                    by_user
                        .insert((user.as_str(), id.as_str()), ())
                        .map_err(backend)?;
                    Ok(())
                })
            })
            .await
    }

    async fn delete(&self, id: &ConnectionId) -> Result<(), StoreError> {
        let id = id.clone();
        self.store
            .run(move |store| {
                store.write(Commit::Light, |tx| {
                    let mut table = tx.open_table(CONNECTIONS).map_err(backend)?;
                    let removed = table
                        .remove(id.as_str())
                        .map_err(backend)?
                        .map(|v| from_json::<Connection>(v.value()))
                        .transpose()?;
                    if let Some(user) = removed.and_then(|c| c.principal) {
                        tx.open_table(CONNECTIONS_BY_USER)
                            .map_err(backend)?
                            .remove((user.as_str(), id.as_str()))
                            .map_err(backend)?;
                    }
                    Ok(())
                })
            })
            .await
    }

    async fn by_user(&self, user: &UserId) -> Result<Vec<Connection>, StoreError> {
        let user = user.clone();
        self.store
            .run(move |store| {
                let tx = store.read()?;
                let index = tx.open_table(CONNECTIONS_BY_USER).map_err(backend)?;
                let table = tx.open_table(CONNECTIONS).map_err(backend)?;
                let now = now_secs();
                let mut found = Vec::new();
                for entry in index.range((user.as_str(), "")..).map_err(backend)? {
                    let (key, _) = entry.map_err(backend)?;
                    let (owner, id) = key.value();
                    if owner != user.as_str() {
                        break;
                    }
                    if let Some(value) = table.get(id).map_err(backend)?
                        && let Some(c) = live_connection(value.value(), now)?
                    {
                        found.push(c);
                    }
                }
                Ok(found)
            })
            .await
    }
}

// --- subscriptions -----------------------------------------------------------------------

pub struct FileSubscriptionStore {
    store: FileStore,
}

fn live_subscription(bytes: &[u8], now: u64) -> Result<Option<Subscription>, StoreError> {
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
/// bounded by what the tombstones' window holds.
fn prune_expired(tx: &WriteTransaction, now: u64) -> Result<(), StoreError> {
    let mut tombstones = tx.open_table(TOMBSTONES).map_err(backend)?;
    if tombstones.len().map_err(backend)? >= PRUNE_AT {
        tombstones.retain(|_, until| until > now).map_err(backend)?;
    }
    let mut closed = tx.open_table(CLOSED).map_err(backend)?;
    if closed.len().map_err(backend)? >= PRUNE_AT {
        closed.retain(|_, until| until > now).map_err(backend)?;
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
            .run(move |store| {
                store.write(Commit::Light, |tx| {
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
            })
            .await
    }

    async fn complete(
        &self,
        key: &SubscriptionKey,
        tombstone_until: u64,
    ) -> Result<bool, StoreError> {
        let key = key.clone();
        self.store
            .run(move |store| {
                store.write(Commit::Light, |tx| {
                    if remove_subscription(tx, &key)? {
                        return Ok(true);
                    }
                    prune_expired(tx, now_secs())?;
                    tx.open_table(TOMBSTONES)
                        .map_err(backend)?
                        .insert(
                            (key.connection_id.as_str(), key.operation_id.as_str()),
                            tombstone_until,
                        )
                        .map_err(backend)?;
                    Ok(false)
                })
            })
            .await
    }

    async fn close_connection(
        &self,
        id: &ConnectionId,
        closed_until: u64,
    ) -> Result<usize, StoreError> {
        let id = id.clone();
        self.store
            .run(move |store| {
                store.write(Commit::Light, |tx| {
                    prune_expired(tx, now_secs())?;
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
            .run(move |store| store.write(Commit::Light, |tx| remove_subscription(tx, &key)))
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

    async fn delete_by_connection(&self, id: &ConnectionId) -> Result<usize, StoreError> {
        let id = id.clone();
        self.store
            .run(move |store| {
                store.write(Commit::Light, |tx| {
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
            })
            .await
    }

    async fn hold(&self, subscription: &Subscription) -> Result<Hold, StoreError> {
        let (topic, key) = (subscription.topic.clone(), subscription.key.encode());
        self.store
            .run(move |store| {
                store.write(Commit::Light, |tx| {
                    let id = (topic.as_str(), key.as_str());
                    let stored = tx
                        .open_table(SUBSCRIPTIONS)
                        .map_err(backend)?
                        .get(id)
                        .map_err(backend)?
                        .map(|bytes| from_json::<Subscription>(bytes.value()))
                        .transpose()?;
                    let until = stored.map_or(0, |s| s.replaying_until_ms);
                    if until == 0 {
                        return Ok(Hold::Live);
                    }
                    if until <= now_ms() {
                        return Ok(Hold::Abandoned);
                    }
                    let mut held = tx.open_table(HELD).map_err(backend)?;
                    let count = held.get(id).map_err(backend)?.map_or(0, |n| n.value());
                    held.insert(id, count + 1).map_err(backend)?;
                    Ok(Hold::Held)
                })
            })
            .await
    }

    async fn hand_over(
        &self,
        subscription: &Subscription,
        held: Option<u64>,
    ) -> Result<HandOver, StoreError> {
        let (topic, key) = (subscription.topic.clone(), subscription.key.encode());
        self.store
            .run(move |store| {
                store.write(Commit::Light, |tx| {
                    let id = (topic.as_str(), key.as_str());
                    let mut counts = tx.open_table(HELD).map_err(backend)?;
                    let now_held = counts.get(id).map_err(backend)?.map_or(0, |n| n.value());
                    if held.is_some_and(|held| held != now_held) {
                        return Ok(HandOver::Held(now_held));
                    }
                    counts.remove(id).map_err(backend)?;
                    let mut subscriptions = tx.open_table(SUBSCRIPTIONS).map_err(backend)?;
                    let stored = subscriptions
                        .get(id)
                        .map_err(backend)?
                        .map(|bytes| from_json::<Subscription>(bytes.value()))
                        .transpose()?;
                    if let Some(mut stored) = stored {
                        stored.replaying_until_ms = 0;
                        subscriptions
                            .insert(id, to_json(&stored)?.as_slice())
                            .map_err(backend)?;
                    }
                    Ok(HandOver::Done)
                })
            })
            .await
    }

    async fn pages_enqueued(
        &self,
        topic: &Topic,
        pages: &[String],
        expires_at: u64,
    ) -> Result<(), StoreError> {
        let (topic, pages) = (topic.clone(), pages.to_vec());
        self.store
            .run(move |store| {
                store.write(Commit::Durable, |tx| {
                    let mut table = tx.open_table(PAGES).map_err(backend)?;
                    let now = now_secs();
                    for (page, until) in page_marks(&table, &topic)? {
                        if until <= now {
                            table
                                .remove((topic.as_str(), page.as_str()))
                                .map_err(backend)?;
                        }
                    }
                    for page in &pages {
                        let key = (topic.as_str(), page.as_str());
                        table.insert(key, expires_at).map_err(backend)?;
                    }
                    Ok(())
                })
            })
            .await
    }

    async fn page_done(&self, topic: &Topic, page: &str) -> Result<(), StoreError> {
        let (topic, page) = (topic.clone(), page.to_owned());
        self.store
            .run(move |store| {
                store.write(Commit::Durable, |tx| {
                    let mut table = tx.open_table(PAGES).map_err(backend)?;
                    table
                        .remove((topic.as_str(), page.as_str()))
                        .map_err(backend)?;
                    Ok(())
                })
            })
            .await
    }

    async fn pages_in_flight(&self, topic: &Topic) -> Result<bool, StoreError> {
        let topic = topic.clone();
        self.store
            .run(move |store| {
                let tx = store.read()?;
                let table = tx.open_table(PAGES).map_err(backend)?;
                let now = now_secs();
                Ok(page_marks(&table, &topic)?
                    .iter()
                    .any(|(_, until)| *until > now))
            })
            .await
    }
}

/// The marks of `topic`'s pages on their way: (page id, until when).
fn page_marks(
    table: &impl ReadableTable<(&'static str, &'static str), u64>,
    topic: &Topic,
) -> Result<Vec<(String, u64)>, StoreError> {
    let mut marks = Vec::new();
    for entry in table.range((topic.as_str(), "")..).map_err(backend)? {
        let (key, until) = entry.map_err(backend)?;
        let (of, page) = key.value();
        if of != topic.as_str() {
            break;
        }
        marks.push((page.to_owned(), until.value()));
    }
    Ok(marks)
}

// --- the event log -----------------------------------------------------------------------

/// The event log. Besides the events by topic and id it keeps the order they were appended
/// in (a one-shard stream, as DynamoDB Streams gives the events table) and how far the local
/// mode's stream reader got, so a restarted process hands the publisher what it had not.
pub struct FileEventLog {
    store: FileStore,
}

impl FileEventLog {
    /// Appends `event`, refusing it if the write is ready to commit only after `deadline_ms`.
    async fn append_until(
        &self,
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
        self.store
            .run(move |store| {
                store.write(Commit::Durable, |tx| {
                    let key = (event.topic.as_str(), event.id.as_str());
                    let mut events = tx.open_table(EVENTS).map_err(backend)?;
                    if events.get(key).map_err(backend)?.is_some() {
                        return Err(StoreError::Conflict(format!("event {} exists", event.id)));
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
            })
            .await?;
        self.store.inner.appended.notify_one();
        Ok(())
    }

    /// Up to `max` unexpired events from stream position `from` on, in the order they were
    /// appended, and the position after them.
    pub async fn read_from(&self, from: u64, max: usize) -> Result<(Vec<Event>, u64), StoreError> {
        self.store
            .run(move |store| {
                let tx = store.read()?;
                let stream = tx.open_table(STREAM).map_err(backend)?;
                let events = tx.open_table(EVENTS).map_err(backend)?;
                let now = now_secs();
                let mut batch = Vec::new();
                let mut next = from;
                for entry in stream.range(from..).map_err(backend)?.take(max) {
                    let (sequence, key) = entry.map_err(backend)?;
                    next = sequence.value() + 1;
                    if let Some(value) = events.get(key.value()).map_err(backend)? {
                        let event: Event = from_json(value.value())?;
                        if event.expires_at > now {
                            batch.push(event);
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
            .run(move |store| {
                store.write(Commit::Light, |tx| {
                    tx.open_table(META)
                        .map_err(backend)?
                        .insert(STREAM_POSITION, position)
                        .map_err(backend)?;
                    Ok(())
                })
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
            .run(|store| {
                store.write(Commit::Durable, |tx| {
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
            })
            .await
    }
}

#[async_trait]
impl EventLog for FileEventLog {
    async fn append(&self, event: &Event) -> Result<(), StoreError> {
        self.append_until(event, None).await
    }

    /// Checked inside the write, once it holds the writer and has written the event, right
    /// before the commit: past the deadline the transaction is dropped, so an event refused
    /// as too late is not stored. One accepted may be readable an fsync after the deadline,
    /// which the publish deadline's spare quarter of the settle time covers.
    async fn append_by(&self, event: &Event, deadline_ms: u64) -> Result<(), StoreError> {
        self.append_until(event, Some(deadline_ms)).await
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
            .run(move |store| {
                store.write(Commit::Light, |tx| {
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
            })
            .await
    }
}

// --- app tables --------------------------------------------------------------------------

/// An app's table in the database file: values of one type under a partition key and a sort
/// key, a partition read back in sort-key order, as a DynamoDB table with both keys. Values
/// are stored as JSON. Every write is durable when it returns.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), broker::StoreError> {
/// # let dir = std::env::temp_dir().join(format!("broker-doc-{}", std::process::id()));
/// let store = broker::file::FileStore::open(dir.join("notes.redb"))?;
/// let notes = store.table::<String>("notes");
/// notes.put_new("alice", "01", &"first".to_owned()).await?;
/// notes.put("alice", "02", &"second".to_owned()).await?;
/// let all: Vec<String> = notes.partition("alice").await?.into_iter().map(|(_, v)| v).collect();
/// assert_eq!(all, ["first", "second"]);
/// # std::fs::remove_dir_all(dir).ok();
/// # Ok(())
/// # }
/// ```
pub struct Table<V> {
    store: FileStore,
    name: String,
    values: PhantomData<fn() -> V>,
}

impl<V> Clone for Table<V> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            name: self.name.clone(),
            values: PhantomData,
        }
    }
}

type AppTable<'a> = TableDefinition<'a, (&'static str, &'static str), &'static [u8]>;

impl<V: Serialize + DeserializeOwned + Send + 'static> Table<V> {
    fn definition(name: &str) -> AppTable<'_> {
        TableDefinition::new(name)
    }

    /// The value under `(partition, sort)`.
    pub async fn get(&self, partition: &str, sort: &str) -> Result<Option<V>, StoreError> {
        let (name, partition, sort) = (self.name.clone(), partition.to_owned(), sort.to_owned());
        self.store
            .run(move |store| {
                let tx = store.read()?;
                let table = match tx.open_table(Self::definition(&name)) {
                    Ok(table) => table,
                    Err(::redb::TableError::TableDoesNotExist(_)) => return Ok(None),
                    Err(e) => return Err(backend(e)),
                };
                table
                    .get((partition.as_str(), sort.as_str()))
                    .map_err(backend)?
                    .map(|v| from_json(v.value()))
                    .transpose()
            })
            .await
    }

    /// Stores `value`, replacing what was there.
    pub async fn put(&self, partition: &str, sort: &str, value: &V) -> Result<(), StoreError> {
        self.write(partition, sort, value, false).await
    }

    /// Stores `value`; [`StoreError::Conflict`] when the key is taken.
    pub async fn put_new(&self, partition: &str, sort: &str, value: &V) -> Result<(), StoreError> {
        self.write(partition, sort, value, true).await
    }

    async fn write(
        &self,
        partition: &str,
        sort: &str,
        value: &V,
        only_new: bool,
    ) -> Result<(), StoreError> {
        let (name, partition, sort) = (self.name.clone(), partition.to_owned(), sort.to_owned());
        let bytes = to_json(value)?;
        self.store
            .run(move |store| {
                store.write(Commit::Durable, |tx| {
                    let mut table = tx.open_table(Self::definition(&name)).map_err(backend)?;
                    let key = (partition.as_str(), sort.as_str());
                    if only_new && table.get(key).map_err(backend)?.is_some() {
                        return Err(StoreError::Conflict(format!(
                            "{name}: ({partition}, {sort}) exists"
                        )));
                    }
                    table.insert(key, bytes.as_slice()).map_err(backend)?;
                    Ok(())
                })
            })
            .await
    }

    /// Removes the value under `(partition, sort)`; whether it was there.
    pub async fn delete(&self, partition: &str, sort: &str) -> Result<bool, StoreError> {
        let (name, partition, sort) = (self.name.clone(), partition.to_owned(), sort.to_owned());
        self.store
            .run(move |store| {
                store.write(Commit::Durable, |tx| {
                    let mut table = tx.open_table(Self::definition(&name)).map_err(backend)?;
                    Ok(table
                        .remove((partition.as_str(), sort.as_str()))
                        .map_err(backend)?
                        .is_some())
                })
            })
            .await
    }

    /// Every value of `partition`, with its sort key, in sort-key order.
    pub async fn partition(&self, partition: &str) -> Result<Vec<(String, V)>, StoreError> {
        let (name, partition) = (self.name.clone(), partition.to_owned());
        self.store
            .run(move |store| {
                let tx = store.read()?;
                let table = match tx.open_table(Self::definition(&name)) {
                    Ok(table) => table,
                    Err(::redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
                    Err(e) => return Err(backend(e)),
                };
                let mut found = Vec::new();
                for entry in table.range((partition.as_str(), "")..).map_err(backend)? {
                    let (key, value) = entry.map_err(backend)?;
                    let (p, sort) = key.value();
                    if p != partition.as_str() {
                        break;
                    }
                    found.push((sort.to_owned(), from_json(value.value())?));
                }
                Ok(found)
            })
            .await
    }

    /// Removes every value of `partition` in one transaction; how many there were.
    pub async fn delete_partition(&self, partition: &str) -> Result<usize, StoreError> {
        let (name, partition) = (self.name.clone(), partition.to_owned());
        self.store
            .run(move |store| {
                store.write(Commit::Durable, |tx| {
                    let mut table = tx.open_table(Self::definition(&name)).map_err(backend)?;
                    let mut sorts = Vec::new();
                    for entry in table.range((partition.as_str(), "")..).map_err(backend)? {
                        let (key, _) = entry.map_err(backend)?;
                        let (p, sort) = key.value();
                        if p != partition.as_str() {
                            break;
                        }
                        sorts.push(sort.to_owned());
                    }
                    for sort in &sorts {
                        table
                            .remove((partition.as_str(), sort.as_str()))
                            .map_err(backend)?;
                    }
                    let removed = sorts.len();
                    Ok(removed)
                })
            })
            .await
    }
}
