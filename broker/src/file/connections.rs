//! The connection store in the database file.

use ::redb::ReadableTable;
use async_trait::async_trait;

use super::store::Commit;
use super::tables::{CONNECTIONS, CONNECTIONS_BY_USER};
use super::{FileStore, backend, from_json, to_json};
use crate::domain::{Connection, ConnectionId, UserId, now_secs};
use crate::ports::{ConnectionStore, StoreError};

/// Connections in the database file, without fsync (see the documentation of [`crate::file`]).
#[derive(Debug)]
pub struct FileConnectionStore {
    pub(super) store: FileStore,
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
            .write(Commit::Light, move |tx| {
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
            .write(Commit::Light, move |tx| {
                let mut table = tx.open_table(CONNECTIONS).map_err(backend)?;
                let found = table
                    .get(id.as_str())
                    .map_err(backend)?
                    .map(|v| from_json::<Connection>(v.value()))
                    .transpose()?;
                let mut connection = match found {
                    Some(c) if !c.initialised => c,
                    Some(_) => {
                        return Err(StoreError::Conflict(format!("{id} is already initialised")));
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
            .await
    }

    async fn delete(&self, id: &ConnectionId) -> Result<(), StoreError> {
        let id = id.clone();
        self.store
            .write(Commit::Light, move |tx| {
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

impl FileStore {
    /// The connection store.
    pub fn connections(&self) -> FileConnectionStore {
        FileConnectionStore {
            store: self.clone(),
        }
    }
}
