//! The database file, and the stores it hands out.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ::redb::{Database, Durability, ReadableDatabase, ReadableTableMetadata, WriteTransaction};
use tokio::sync::Notify;

use super::backend;
use super::tables::{
    CLOSED, CONNECTIONS, CONNECTIONS_BY_USER, DELIVERED, EVENTS, EXPIRY, HELD, META, PAGES, QUOTAS,
    STREAM, SUBSCRIPTION_TOPICS, SUBSCRIPTIONS, TOMBSTONES,
};
use crate::ports::StoreError;

/// Every this many commits without fsync, one with: redb frees pages of a non-durable
/// commit only after a durable one, so a file seeing only connection churn would grow.
const DURABLE_EVERY: u64 = 256;

/// One database file: the broker's stores and the apps' tables.
#[derive(Clone)]
pub struct FileStore {
    pub(super) inner: Arc<Inner>,
}

impl std::fmt::Debug for FileStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileStore").finish_non_exhaustive()
    }
}

pub(super) struct Inner {
    db: Database,
    /// Notified on every append to the event log.
    pub(super) appended: Notify,
    light_commits: AtomicU64,
}

/// How a write transaction is committed.
#[derive(Clone, Copy)]
pub(super) enum Commit {
    /// fsync before returning.
    Durable,
    /// Without fsync (see the documentation of [`crate::file`]).
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
            tx.open_table(QUOTAS).map_err(backend)?;
            Ok(())
        })?;
        Ok(store)
    }

    /// Removes every connection and subscription (and their tombstones, the marks of
    /// fan-out pages on their way, and the per-user quotas): a new process calls it at start, since the sockets they
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
            // The sockets and subscriptions they counted are gone; the rates start afresh.
            tx.delete_table(QUOTAS).map_err(backend)?;
            tx.open_table(CONNECTIONS).map_err(backend)?;
            tx.open_table(CONNECTIONS_BY_USER).map_err(backend)?;
            tx.open_table(SUBSCRIPTIONS).map_err(backend)?;
            tx.open_table(SUBSCRIPTION_TOPICS).map_err(backend)?;
            tx.open_table(TOMBSTONES).map_err(backend)?;
            tx.open_table(CLOSED).map_err(backend)?;
            tx.open_table(HELD).map_err(backend)?;
            tx.open_table(PAGES).map_err(backend)?;
            tx.open_table(QUOTAS).map_err(backend)?;
            Ok((connections, subscriptions))
        })
    }

    /// Runs `f` in a write transaction and commits it.
    pub(super) fn write<T>(
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
    pub(super) async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&FileStore) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(StoreError::backend)?
    }

    pub(super) fn read(&self) -> Result<::redb::ReadTransaction, StoreError> {
        self.inner.db.begin_read().map_err(backend)
    }
}
