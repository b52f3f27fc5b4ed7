//! In-memory adapters: for unit tests and the embedded store of the local mode, one store
//! per file.
//!
//! Each keeps its state behind a `std::sync::Mutex`: critical sections are a few map
//! operations and never span an `.await`, which is what std's mutex is good at. Their
//! `Debug` shows none of that state: it would take the lock and print every entry.

mod connections;
mod events;
mod gateway;
mod page_marks;
mod queue;
mod quotas;
mod replay_gate;
mod subscriptions;
mod tables;

use std::sync::Mutex;

pub use connections::MemoryConnectionStore;
pub use events::MemoryEventLog;
pub use gateway::RecordingGateway;
pub use page_marks::MemoryPageMarks;
pub use queue::ChannelFanoutQueue;
pub use quotas::MemoryQuotas;
pub use replay_gate::MemoryReplayGate;
pub use subscriptions::MemorySubscriptionStore;
pub use tables::{MemoryTable, MemoryTables};

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain data behind, still consistent
    // enough to keep serving: recover instead of poisoning every later request.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
