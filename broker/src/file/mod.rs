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
//! Reads run on tokio's blocking pool: redb's API is synchronous. Writes go to the store's
//! writer, which commits concurrent writes together (group commit): up to a group of them,
//! in the order they came, in one transaction with one commit (and one fsync when any of
//! them is durable), each caller still getting its own result; a write that fails fails
//! alone (see `FileStore::write`). [`FileStore::write_stats`] counts both.
//!
//! One store per file, each with the tables it owns: the database itself ([`FileStore`],
//! which hands out the stores), connections, subscriptions, their replay gate, the fan-out
//! page marks, the quotas of the per-user limits, the event log, and the apps' [`Table`]s.

mod connections;
mod events;
mod page_marks;
mod quotas;
mod replay_gate;
mod store;
mod subscriptions;
mod table;
mod tables;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::ports::StoreError;

pub use connections::FileConnectionStore;
pub use events::FileEventLog;
pub use page_marks::FilePageMarks;
pub use quotas::FileQuotas;
pub use replay_gate::FileReplayGate;
pub use store::{FileStore, WriteStats};
pub use subscriptions::FileSubscriptionStore;
pub use table::Table;

/// A redb error as [`StoreError::Backend`].
pub(super) fn backend(error: impl Into<::redb::Error>) -> StoreError {
    StoreError::backend(error.into())
}

/// A value as the JSON bytes a table stores.
pub(super) fn to_json(value: &impl Serialize) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(StoreError::backend)
}

/// Stored JSON bytes as a value; [`StoreError::Malformed`] when they do not fit.
pub(super) fn from_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Malformed(e.to_string()))
}
