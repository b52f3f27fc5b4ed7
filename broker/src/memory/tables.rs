//! The apps' tables in memory, beside the in-memory event log so that an app's writes and
//! their event commit in one critical section ([`crate::EventLog::append_with`]).

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::lock;
use crate::changes::{Action, Change, Changes, Condition};
use crate::ports::StoreError;

/// Every app table's items: table name → (partition, sort) → JSON value.
pub(super) type Items = BTreeMap<String, BTreeMap<(String, String), serde_json::Value>>;

/// The apps' tables of one in-memory store ([`super::MemoryEventLog::tables`]): values
/// under a partition key and a sort key, a partition read back in sort-key order, as on
/// the database file ([`crate::file::Table`]) and DynamoDB.
#[derive(Clone, Default)]
pub struct MemoryTables {
    pub(super) items: Arc<Mutex<Items>>,
}

impl std::fmt::Debug for MemoryTables {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryTables").finish_non_exhaustive()
    }
}

impl MemoryTables {
    /// The table `name`, holding values of type `V`.
    pub fn table<V>(&self, name: &str) -> MemoryTable<V> {
        MemoryTable {
            tables: self.clone(),
            name: name.to_owned(),
            values: PhantomData,
        }
    }
}

/// Why `changes` cannot be made on `items`: the first change whose condition fails.
pub(super) fn check(items: &Items, changes: &Changes) -> Result<(), StoreError> {
    for change in changes {
        let there = items
            .get(change.table.name())
            .is_some_and(|t| t.contains_key(&(change.partition.clone(), change.sort.clone())));
        let holds = match change.condition {
            Condition::None => true,
            Condition::Exists => there,
            Condition::Absent => !there,
        };
        if !holds {
            return Err(conflict(change));
        }
    }
    Ok(())
}

/// The conflict of `change`'s condition.
pub(super) fn conflict(change: &Change) -> StoreError {
    let wanted = match change.condition {
        Condition::Absent => "exists",
        _ => "does not exist",
    };
    StoreError::Conflict(format!("{} {wanted}", change.describe()))
}

/// Makes `changes` on `items`, once [`check`] passed.
pub(super) fn apply(items: &mut Items, changes: &Changes) {
    for change in changes {
        let key = (change.partition.clone(), change.sort.clone());
        match &change.action {
            Action::Put(value) => {
                items
                    .entry(change.table.name().to_owned())
                    .or_default()
                    .insert(key, value.clone());
            }
            Action::Delete => {
                if let Some(table) = items.get_mut(change.table.name()) {
                    table.remove(&key);
                }
            }
            Action::Check => {}
        }
    }
}

/// An app's table in memory: see [`MemoryTables`]. Values are kept as JSON, as the other
/// stores keep them.
pub struct MemoryTable<V> {
    tables: MemoryTables,
    name: String,
    values: PhantomData<fn() -> V>,
}

impl<V> std::fmt::Debug for MemoryTable<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryTable")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl<V> Clone for MemoryTable<V> {
    fn clone(&self) -> Self {
        Self {
            tables: self.tables.clone(),
            name: self.name.clone(),
            values: PhantomData,
        }
    }
}

fn decode<V: DeserializeOwned>(value: &serde_json::Value) -> Result<V, StoreError> {
    serde_json::from_value(value.clone()).map_err(|e| StoreError::Malformed(e.to_string()))
}

impl<V: Serialize + DeserializeOwned> MemoryTable<V> {
    /// The value under `(partition, sort)`.
    pub fn get(&self, partition: &str, sort: &str) -> Result<Option<V>, StoreError> {
        let items = lock(&self.tables.items);
        items
            .get(&self.name)
            .and_then(|t| t.get(&(partition.to_owned(), sort.to_owned())))
            .map(decode)
            .transpose()
    }

    /// Stores `value`, replacing what was there.
    pub fn put(&self, partition: &str, sort: &str, value: &V) -> Result<(), StoreError> {
        let value = serde_json::to_value(value).map_err(StoreError::backend)?;
        lock(&self.tables.items)
            .entry(self.name.clone())
            .or_default()
            .insert((partition.to_owned(), sort.to_owned()), value);
        Ok(())
    }

    /// Removes the value under `(partition, sort)`; whether it was there.
    pub fn delete(&self, partition: &str, sort: &str) -> bool {
        lock(&self.tables.items)
            .get_mut(&self.name)
            .and_then(|t| t.remove(&(partition.to_owned(), sort.to_owned())))
            .is_some()
    }

    /// Every value of `partition`, with its sort key, in sort-key order.
    pub fn partition(&self, partition: &str) -> Result<Vec<(String, V)>, StoreError> {
        let items = lock(&self.tables.items);
        let Some(table) = items.get(&self.name) else {
            return Ok(Vec::new());
        };
        table
            .range((partition.to_owned(), String::new())..)
            .take_while(|((p, _), _)| p == partition)
            .map(|((_, sort), value)| Ok((sort.clone(), decode(value)?)))
            .collect()
    }

    /// Removes every value of `partition`; how many there were.
    pub fn delete_partition(&self, partition: &str) -> usize {
        let mut items = lock(&self.tables.items);
        let Some(table) = items.get_mut(&self.name) else {
            return 0;
        };
        let keys: Vec<_> = table
            .range((partition.to_owned(), String::new())..)
            .take_while(|((p, _), _)| p == partition)
            .map(|(key, _)| key.clone())
            .collect();
        for key in &keys {
            table.remove(key);
        }
        keys.len()
    }
}
