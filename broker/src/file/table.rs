//! The apps' tables in the database file.

use std::marker::PhantomData;

use ::redb::{ReadableTable, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::store::Commit;
use super::{FileStore, backend, from_json, to_json};
use crate::changes::{Action, Changes, Condition};
use crate::ports::StoreError;

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
    pub(super) store: FileStore,
    pub(super) name: String,
    pub(super) values: PhantomData<fn() -> V>,
}

impl<V> std::fmt::Debug for Table<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
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
            .write(Commit::Durable, move |tx| {
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
            .await
    }

    /// Removes the value under `(partition, sort)`; whether it was there.
    pub async fn delete(&self, partition: &str, sort: &str) -> Result<bool, StoreError> {
        let (name, partition, sort) = (self.name.clone(), partition.to_owned(), sort.to_owned());
        self.store
            .write(Commit::Durable, move |tx| {
                let mut table = tx.open_table(Self::definition(&name)).map_err(backend)?;
                Ok(table
                    .remove((partition.as_str(), sort.as_str()))
                    .map_err(backend)?
                    .is_some())
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
            .write(Commit::Durable, move |tx| {
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
            .await
    }
}

/// Checks `changes`' conditions and makes them in `tx`, in the tables
/// [`FileStore::table`] names; the first failing condition is a [`StoreError::Conflict`],
/// and the caller drops the transaction.
pub(super) fn apply(tx: &::redb::WriteTransaction, changes: &Changes) -> Result<(), StoreError> {
    for change in changes {
        let name = table_name(change.table.name());
        let mut table = tx.open_table(AppTable::new(&name)).map_err(backend)?;
        let key = (change.partition.as_str(), change.sort.as_str());
        let there = table.get(key).map_err(backend)?.is_some();
        let holds = match change.condition {
            Condition::None => true,
            Condition::Exists => there,
            Condition::Absent => !there,
        };
        if !holds {
            let wanted = if there { "exists" } else { "does not exist" };
            return Err(StoreError::Conflict(format!(
                "{} {wanted}",
                change.describe()
            )));
        }
        match &change.action {
            Action::Put(value) => {
                table
                    .insert(key, to_json(value)?.as_slice())
                    .map_err(backend)?;
            }
            Action::Delete => {
                table.remove(key).map_err(backend)?;
            }
            Action::Check => {}
        }
    }
    Ok(())
}

/// The redb table holding the app's table `name`: its own namespace, so no app table can
/// clash with the broker's.
fn table_name(name: &str) -> String {
    format!("app/{name}")
}

impl FileStore {
    /// An app's table named `name` (its own namespace: no app table can clash with the
    /// broker's), holding values of type `V`.
    pub fn table<V>(&self, name: &str) -> Table<V> {
        Table {
            store: self.clone(),
            name: table_name(name),
            values: PhantomData,
        }
    }
}
