//! The event log port.

use async_trait::async_trait;

use super::StoreError;
use crate::changes::Changes;
use crate::domain::{Event, EventRef, Topic};

/// The append-only log of published events (the events table; its stream drives delivery).
#[async_trait]
pub trait EventLog: Send + Sync {
    /// Appends; never overwrites an event with the same id.
    async fn append(&self, event: &Event) -> Result<(), StoreError>;

    /// [`Self::append`], confirmed by `deadline_ms` (milliseconds since the epoch), or
    /// [`StoreError::TooLate`]. This one stops waiting at the deadline (and refuses an
    /// answer that came after it), so a remote store may still store the event; a store
    /// that checks the deadline inside its write (the embedded file) stores nothing then.
    /// A wrapper of another log must forward this, or it falls back to stopping waiting.
    async fn append_by(&self, event: &Event, deadline_ms: u64) -> Result<(), StoreError> {
        let now = crate::domain::now_ms();
        if now > deadline_ms {
            return Err(StoreError::TooLate);
        }
        let left = std::time::Duration::from_millis(deadline_ms - now);
        match tokio::time::timeout(left, self.append(event)).await {
            // Polled late (a starved process), the answer may be in after the deadline.
            Ok(Ok(())) if crate::domain::now_ms() > deadline_ms => Err(StoreError::TooLate),
            Ok(stored) => stored,
            Err(_) => Err(StoreError::TooLate),
        }
    }

    /// Stores `changes` (the app's writes) and `event` in one commit, by `deadline_ms`, or
    /// neither: a failed condition of a change, or an event with the same id in the log
    /// ([`StoreError::Conflict`] naming which), or a commit that would come after the
    /// deadline ([`StoreError::TooLate`]) stores nothing. A commit retried after its answer
    /// was lost finds its event there and is not made twice. The caller has checked the
    /// changes fit one commit ([`Changes::too_large`]).
    ///
    /// A log that holds no app tables refuses any change; with none it is
    /// [`Self::append_by`].
    async fn append_with(
        &self,
        changes: &Changes,
        event: &Event,
        deadline_ms: u64,
    ) -> Result<(), StoreError> {
        if changes.is_empty() {
            return self.append_by(event, deadline_ms).await;
        }
        Err(StoreError::backend(
            "this event log cannot commit an app's writes with an event",
        ))
    }

    /// One unexpired event, `None` when the log does not hold it (any more).
    async fn get(&self, event: &EventRef) -> Result<Option<Event>, StoreError>;
    /// Up to `limit` unexpired events of `topic` whose id sorts after `after`, in id order
    /// (a consistent read): what a subscriber resuming from `after` missed. Page on with the
    /// last id returned.
    async fn after(
        &self,
        topic: &Topic,
        after: &str,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError>;
    /// Whether `event` was delivered in full already: a retried stream batch skips it
    /// instead of delivering it twice.
    async fn is_delivered(&self, event: &EventRef) -> Result<bool, StoreError>;
    /// Records that `event` was delivered in full.
    async fn mark_delivered(&self, event: &EventRef) -> Result<(), StoreError>;
}

/// A read of a local log in stream order (the order events were appended in), as the local
/// mode's stream reader makes it: `MemoryEventLog::read_stream` and the database file's.
/// Positions of removed (expired) events are passed over.
#[derive(Clone)]
pub struct StreamRead {
    /// The first position read.
    pub from: u64,
    /// The position the read stops before.
    pub until: u64,
    /// Events passed over at most (returned or not); the end of the log ends the read sooner.
    pub scan: u64,
    /// Events returned at most: the read ends right after the last of them.
    pub take: usize,
    /// Which events are returned, by topic; the others are passed over (and, on the database
    /// file, never decoded).
    pub keep: std::sync::Arc<dyn Fn(&str) -> bool + Send + Sync>,
}

impl StreamRead {
    /// Every event, up to `max` of them, from `from` on.
    pub fn all(from: u64, max: usize) -> Self {
        Self {
            from,
            until: u64::MAX,
            scan: max as u64,
            take: max,
            keep: std::sync::Arc::new(|_| true),
        }
    }
}

impl std::fmt::Debug for StreamRead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamRead")
            .field("from", &self.from)
            .field("until", &self.until)
            .field("scan", &self.scan)
            .field("take", &self.take)
            .finish_non_exhaustive()
    }
}
