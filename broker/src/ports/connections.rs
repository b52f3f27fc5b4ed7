//! The connection store port.

use async_trait::async_trait;

use super::StoreError;
use crate::domain::{Connection, ConnectionId, UserId};

/// Open connections, indexed by id and by user.
#[async_trait]
pub trait ConnectionStore: Send + Sync {
    /// Stores a connection, replacing one with the same id.
    async fn put(&self, connection: &Connection) -> Result<(), StoreError>;
    /// `None` for unknown or expired connections.
    async fn get(&self, id: &ConnectionId) -> Result<Option<Connection>, StoreError>;
    /// Records an accepted `connection_init`. [`StoreError::Conflict`] when the connection was
    /// already initialised (a second init, even a concurrent one) or does not exist.
    /// `authorized_until` is the `exp` of the token that named `user`.
    async fn mark_initialised(
        &self,
        id: &ConnectionId,
        user: &UserId,
        authorized_until: u64,
    ) -> Result<(), StoreError>;
    /// Removes a connection; removing one that is not there is no error.
    async fn delete(&self, id: &ConnectionId) -> Result<(), StoreError>;
    /// Every live connection of one user: a backend pushing to all of a user's frontends.
    async fn by_user(&self, user: &UserId) -> Result<Vec<Connection>, StoreError>;
}
