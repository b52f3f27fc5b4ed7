//! The quotas in the database file.

use ::redb::ReadableTable;
use async_trait::async_trait;

use super::store::Commit;
use super::tables::QUOTAS;
use super::{FileStore, backend};
use crate::domain::now_secs;
use crate::ports::{Quotas, StoreError};

/// Counters in the database file ([`FileStore::quotas`]), committed without fsync like the
/// connections they count: every write of the file runs in the writer's transaction, one
/// after another, so a take's check and add are atomic. A new process starts them afresh
/// ([`FileStore::forget_connections`]).
#[derive(Clone)]
pub struct FileQuotas {
    pub(super) store: FileStore,
}

impl std::fmt::Debug for FileQuotas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileQuotas").finish_non_exhaustive()
    }
}

/// The live value of a counter: zero when absent or expired.
fn live(
    table: &impl ReadableTable<&'static str, (u64, u64)>,
    key: &str,
    now: u64,
) -> Result<Option<u64>, StoreError> {
    Ok(table
        .get(key)
        .map_err(backend)?
        .map(|entry| entry.value())
        .filter(|&(_, until)| until > now)
        .map(|(value, _)| value))
}

#[async_trait]
impl Quotas for FileQuotas {
    async fn take(&self, key: &str, limit: u64, expires_at: u64) -> Result<bool, StoreError> {
        let key = key.to_owned();
        self.store
            .write(Commit::Light, move |tx| {
                let mut table = tx.open_table(QUOTAS).map_err(backend)?;
                let now = now_secs();
                let value = live(&table, &key, now)?.unwrap_or(0);
                if value >= limit {
                    return Ok(false);
                }
                table
                    .insert(key.as_str(), (value + 1, expires_at))
                    .map_err(backend)?;
                Ok(true)
            })
            .await
    }

    async fn release(&self, key: &str, n: u64) -> Result<(), StoreError> {
        let key = key.to_owned();
        self.store
            .write(Commit::Light, move |tx| {
                let mut table = tx.open_table(QUOTAS).map_err(backend)?;
                let now = now_secs();
                let until = table
                    .get(key.as_str())
                    .map_err(backend)?
                    .map(|e| e.value().1);
                if let (Some(value), Some(until)) = (live(&table, &key, now)?, until) {
                    table
                        .insert(key.as_str(), (value.saturating_sub(n), until))
                        .map_err(backend)?;
                }
                Ok(())
            })
            .await
    }

    async fn set(&self, key: &str, value: u64, expires_at: u64) -> Result<(), StoreError> {
        let key = key.to_owned();
        self.store
            .write(Commit::Light, move |tx| {
                let mut table = tx.open_table(QUOTAS).map_err(backend)?;
                table
                    .insert(key.as_str(), (value, expires_at))
                    .map_err(backend)?;
                Ok(())
            })
            .await
    }

    async fn get(&self, key: &str) -> Result<u64, StoreError> {
        let key = key.to_owned();
        self.store
            .run(move |store| {
                let tx = store.read()?;
                let table = tx.open_table(QUOTAS).map_err(backend)?;
                Ok(live(&table, &key, now_secs())?.unwrap_or(0))
            })
            .await
    }
}

impl FileStore {
    /// The counters of the per-user limits.
    pub fn quotas(&self) -> FileQuotas {
        FileQuotas {
            store: self.clone(),
        }
    }
}
