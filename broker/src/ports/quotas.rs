//! The quotas port: counters every process shares, behind the per-user limits
//! ([`crate::limits`]).

use async_trait::async_trait;

use super::StoreError;

/// Named counters, each with a time past which it counts as zero.
///
/// Two kinds of limit are built on them ([`crate::limits`]): a *rate* is one counter per
/// user and fixed window (its key names the window, and it expires when the window ends);
/// a *gauge* (sockets or subscriptions a user holds) is one counter per user, taken when a
/// slot is taken and released when it is given back, which expires a connection's lifetime
/// after its last take, so a release that was lost cannot hold a slot for longer.
///
/// [`Self::take`] checks and adds atomically, whatever the number of processes: concurrent
/// takes never pass the limit.
#[async_trait]
pub trait Quotas: Send + Sync {
    /// Adds one to counter `key` if it is below `limit`, atomically with the check, and
    /// makes it expire at `expires_at` (epoch seconds): `true` when it was added. A counter
    /// past its expiry counts as zero (the take sets it to one).
    async fn take(&self, key: &str, limit: u64, expires_at: u64) -> Result<bool, StoreError>;
    /// Subtracts `n` from counter `key`, not below zero. An absent or expired counter stays
    /// as it is.
    async fn release(&self, key: &str, n: u64) -> Result<(), StoreError>;
    /// Sets counter `key` to `value`, expiring at `expires_at`: a gauge recounted from the
    /// stores.
    async fn set(&self, key: &str, value: u64, expires_at: u64) -> Result<(), StoreError>;
    /// The value of counter `key`: zero when it is absent or expired.
    async fn get(&self, key: &str) -> Result<u64, StoreError>;
}
