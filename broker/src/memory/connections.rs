//! The in-memory connection store.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

use super::lock;
use crate::domain::{Connection, ConnectionId, UserId, now_secs};
use crate::ports::{ConnectionStore, StoreError};

/// Connections in a map by id.
#[derive(Default)]
pub struct MemoryConnectionStore {
    connections: Mutex<HashMap<ConnectionId, Connection>>,
}

impl std::fmt::Debug for MemoryConnectionStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryConnectionStore")
            .finish_non_exhaustive()
    }
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
