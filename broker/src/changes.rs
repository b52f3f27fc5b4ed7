//! An app's own writes, committed with the event they announce: [`Changes`] is what a
//! mutation wants saved, and [`crate::Outbox::publish_with`] stores it and the event in one
//! commit (one DynamoDB `TransactWriteItems`, one redb write transaction, one critical
//! section in memory), so either both are stored or neither is.
//!
//! A change names an app table ([`AppTable`]), a key (a partition and a sort key) and what
//! to do there: put a value (replacing what is there, or only where nothing is, or only
//! where something is), delete, or only check that the key is taken or free. A failed
//! condition fails the whole commit with [`crate::StoreError::Conflict`], naming the change.

use serde::Serialize;

/// The most items one commit holds: DynamoDB's `TransactWriteItems` takes 100 (the event
/// is one of them), and every store keeps to it, so an app behaves alike on each.
pub const MAX_ITEMS: usize = 100;

/// The most bytes one commit may carry, its keys and values as JSON text: DynamoDB's
/// `TransactWriteItems` takes 4 MB in all.
pub const MAX_BYTES: usize = 4 * 1024 * 1024;

/// An app table changes are written to, as the store holding it names it and its keys.
///
/// On the database file and in memory the name is the one the app reads the table with
/// (`store.table("orders")`); on DynamoDB it is the deployed table's name
/// ([`crate::aws::AppTables::name`]) and the key attributes are its own (`pk` and `sk` by
/// default; [`AppTable::keys`] names others).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppTable {
    name: String,
    partition_key: String,
    sort_key: Option<String>,
}

impl AppTable {
    /// The table `name`, keyed by the attributes `pk` and `sk`.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            partition_key: "pk".to_owned(),
            sort_key: Some("sk".to_owned()),
        }
    }

    /// The same table keyed by the attribute `partition` and, if given, the attribute
    /// `sort` (on DynamoDB; the other stores key every table by a partition and a sort key,
    /// the sort key empty for a table without one).
    pub fn keys(mut self, partition: impl Into<String>, sort: Option<&str>) -> Self {
        self.partition_key = partition.into();
        self.sort_key = sort.map(str::to_owned);
        self
    }

    /// The table's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The attribute holding the partition key (DynamoDB).
    pub fn partition_key(&self) -> &str {
        &self.partition_key
    }

    /// The attribute holding the sort key (DynamoDB), if the table has one.
    pub fn sort_key(&self) -> Option<&str> {
        self.sort_key.as_deref()
    }
}

/// What a change asks of the item under its key before it is made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Condition {
    /// Nothing: the change is made whatever is there.
    None,
    /// An item must be there.
    Exists,
    /// No item may be there.
    Absent,
}

/// What a change does to the item under its key.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Stores this value (JSON; on DynamoDB an object, whose fields are the item's
    /// attributes besides its keys).
    Put(serde_json::Value),
    /// Removes the item.
    Delete,
    /// Changes nothing: only the condition is checked.
    Check,
}

/// One change of [`Changes`].
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    /// The table it is made in.
    pub table: AppTable,
    /// The item's partition key.
    pub partition: String,
    /// The item's sort key (empty for a table without one).
    pub sort: String,
    /// What it does.
    pub action: Action,
    /// What must hold for it, and so for the whole commit, to be made.
    pub condition: Condition,
}

impl Change {
    /// How errors name it: `table (partition, sort)`.
    pub fn describe(&self) -> String {
        format!("{} ({}, {})", self.table.name, self.partition, self.sort)
    }

    /// Its size as the commit limit counts it: keys and value as JSON text.
    fn size(&self) -> usize {
        let value = match &self.action {
            Action::Put(value) => value.to_string().len(),
            Action::Delete | Action::Check => 0,
        };
        self.table.name.len() + self.partition.len() + self.sort.len() + value
    }
}

/// An app's writes to commit with an event ([`crate::Outbox::publish_with`]).
///
/// ```
/// use broker::{AppTable, Changes};
/// # #[derive(serde::Serialize)] struct Order { total: u32 }
/// let customers = AppTable::new("customers");
/// let orders = AppTable::new("orders");
/// let changes = Changes::new()
///     // The customer must still be there when the order is saved...
///     .require(&customers, "c-1", "")
///     // ...and the order is new.
///     .put_new(&orders, "c-1", "o-1", &Order { total: 42 })?;
/// assert_eq!(changes.len(), 2);
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Changes {
    changes: Vec<Change>,
}

impl Changes {
    /// No change yet.
    pub fn new() -> Self {
        Self::default()
    }

    fn with(
        mut self,
        table: &AppTable,
        partition: &str,
        sort: &str,
        action: Action,
        condition: Condition,
    ) -> Self {
        self.changes.push(Change {
            table: table.clone(),
            partition: partition.to_owned(),
            sort: sort.to_owned(),
            action,
            condition,
        });
        self
    }

    fn with_value(
        self,
        table: &AppTable,
        partition: &str,
        sort: &str,
        value: &impl Serialize,
        condition: Condition,
    ) -> Result<Self, serde_json::Error> {
        let value = serde_json::to_value(value)?;
        Ok(self.with(table, partition, sort, Action::Put(value), condition))
    }

    /// Stores `value` under `(partition, sort)`, replacing what is there.
    pub fn put(
        self,
        table: &AppTable,
        partition: &str,
        sort: &str,
        value: &impl Serialize,
    ) -> Result<Self, serde_json::Error> {
        self.with_value(table, partition, sort, value, Condition::None)
    }

    /// Stores `value` under `(partition, sort)`, where nothing may be yet.
    pub fn put_new(
        self,
        table: &AppTable,
        partition: &str,
        sort: &str,
        value: &impl Serialize,
    ) -> Result<Self, serde_json::Error> {
        self.with_value(table, partition, sort, value, Condition::Absent)
    }

    /// Replaces the value under `(partition, sort)`, which must be there.
    pub fn update(
        self,
        table: &AppTable,
        partition: &str,
        sort: &str,
        value: &impl Serialize,
    ) -> Result<Self, serde_json::Error> {
        self.with_value(table, partition, sort, value, Condition::Exists)
    }

    /// Removes the item under `(partition, sort)`, if there is one.
    pub fn delete(self, table: &AppTable, partition: &str, sort: &str) -> Self {
        self.with(table, partition, sort, Action::Delete, Condition::None)
    }

    /// Removes the item under `(partition, sort)`, which must be there.
    pub fn delete_existing(self, table: &AppTable, partition: &str, sort: &str) -> Self {
        self.with(table, partition, sort, Action::Delete, Condition::Exists)
    }

    /// Writes nothing, but commits only if an item is under `(partition, sort)`.
    pub fn require(self, table: &AppTable, partition: &str, sort: &str) -> Self {
        self.with(table, partition, sort, Action::Check, Condition::Exists)
    }

    /// Writes nothing, but commits only if no item is under `(partition, sort)`.
    pub fn require_absent(self, table: &AppTable, partition: &str, sort: &str) -> Self {
        self.with(table, partition, sort, Action::Check, Condition::Absent)
    }

    /// The changes, in the order they were added.
    pub fn iter(&self) -> std::slice::Iter<'_, Change> {
        self.changes.iter()
    }

    /// How many changes there are.
    pub fn len(&self) -> usize {
        self.changes.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// Why these changes and an event of `event_bytes` bytes cannot be one commit, if they
    /// cannot: more than [`MAX_ITEMS`] items, more than [`MAX_BYTES`] bytes, or one key
    /// changed twice (DynamoDB refuses a transaction touching an item twice).
    pub fn too_large(&self, event_bytes: usize) -> Option<String> {
        let items = self.changes.len() + 1;
        if items > MAX_ITEMS {
            return Some(format!(
                "{items} items (the event and {} changes); one commit holds at most {MAX_ITEMS}",
                self.changes.len()
            ));
        }
        let bytes = event_bytes + self.changes.iter().map(Change::size).sum::<usize>();
        if bytes > MAX_BYTES {
            return Some(format!(
                "{bytes} bytes; one commit holds at most {MAX_BYTES}"
            ));
        }
        let mut keys = std::collections::HashSet::new();
        for change in &self.changes {
            if !keys.insert((&change.table.name, &change.partition, &change.sort)) {
                return Some(format!("{} is changed twice", change.describe()));
            }
        }
        None
    }
}

impl<'a> IntoIterator for &'a Changes {
    type Item = &'a Change;
    type IntoIter = std::slice::Iter<'a, Change>;

    fn into_iter(self) -> Self::IntoIter {
        self.changes.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_commit_over_dynamodbs_limits_is_named() {
        let table = AppTable::new("t");
        let mut changes = Changes::new();
        for i in 0..MAX_ITEMS - 1 {
            changes = changes.delete(&table, &i.to_string(), "");
        }
        assert_eq!(changes.too_large(100), None);
        let over = changes.delete(&table, "last", "");
        assert!(over.too_large(100).unwrap().contains("101 items"));

        let big = "x".repeat(MAX_BYTES);
        let large = Changes::new().put(&table, "p", "s", &big).unwrap();
        assert!(large.too_large(100).unwrap().contains("bytes"));

        let twice = Changes::new()
            .require(&table, "p", "s")
            .delete(&table, "p", "s");
        assert!(twice.too_large(100).unwrap().contains("changed twice"));
    }
}
