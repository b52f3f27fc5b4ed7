//! The subscription store port.

use async_trait::async_trait;

use super::StoreError;
use crate::domain::{ConnectionId, Subscription, SubscriptionKey, Topic};

/// What [`SubscriptionStore::insert`] did with a subscription.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inserted {
    /// Stored: events of its topic reach it from now on.
    Stored,
    /// Not stored: its operation was completed first ([`SubscriptionStore::complete`] left a
    /// tombstone, which this insert used up).
    Completed,
    /// Not stored: its connection was closed first ([`SubscriptionStore::close_connection`]).
    ConnectionClosed,
}

/// Stored subscriptions, indexed by topic (delivery) and by connection (cleanup).
///
/// API Gateway does not keep one connection's messages in order, and `$disconnect` can be
/// handled before the connection's last `subscribe`: a `complete` may arrive before its
/// `subscribe`, and a `subscribe` after its connection was closed. Tombstones make both
/// orders end with no subscription: [`Self::complete`] of an operation not stored yet and
/// [`Self::close_connection`] leave one, each until a time the caller gives, and
/// [`Self::insert`] respects it, atomically with its own write.
///
/// A subscription stored replaying its resume ([`Subscription::replaying_until_ms`]) is
/// handed over to live delivery through the [`super::ReplayGate`] on the same store.
#[async_trait]
pub trait SubscriptionStore: Send + Sync {
    /// Stores a subscription unless a tombstone of its operation or of its connection is
    /// waiting (see [`Inserted`]). [`StoreError::Conflict`] when the connection already has
    /// a subscription with this operation id, whatever its topic.
    async fn insert(&self, subscription: &Subscription) -> Result<Inserted, StoreError> {
        self.insert_within(subscription, usize::MAX).await
    }
    /// As [`Self::insert`], and [`StoreError::LimitReached`] when the connection already
    /// holds `max_per_connection` subscriptions. The count is checked and changed in the same
    /// atomic write as the insert, so concurrent inserts never exceed the limit.
    async fn insert_within(
        &self,
        subscription: &Subscription,
        max_per_connection: usize,
    ) -> Result<Inserted, StoreError>;
    /// A client's `complete` (legacy `stop`): removes the subscription and returns `true`;
    /// when none is stored (its `subscribe` is still on its way) leaves a tombstone of the
    /// key until `tombstone_until` (epoch seconds), which makes the later insert of that key
    /// store nothing, and returns `false`. A tombstone is no subscription to any other read:
    /// `contains`, the counts and listings ignore it.
    async fn complete(
        &self,
        key: &SubscriptionKey,
        tombstone_until: u64,
    ) -> Result<bool, StoreError>;
    /// The connection has gone: removes every subscription of it (returns how many) and
    /// makes every insert for it store nothing until `closed_until` (epoch seconds).
    async fn close_connection(
        &self,
        id: &ConnectionId,
        closed_until: u64,
    ) -> Result<usize, StoreError>;
    /// Whether the connection has a subscription with this operation id (a consistent read:
    /// a query may not reuse the id of a subscription just made).
    async fn contains(&self, key: &SubscriptionKey) -> Result<bool, StoreError>;
    /// Removes one subscription; returns whether it existed.
    async fn delete(&self, key: &SubscriptionKey) -> Result<bool, StoreError>;
    /// Every live subscription to `topic`.
    async fn by_topic(&self, topic: &Topic) -> Result<Vec<Subscription>, StoreError>;
    /// The live subscriptions among `keys` of `topic` (a fan-out page).
    async fn get_many(
        &self,
        topic: &Topic,
        keys: &[SubscriptionKey],
    ) -> Result<Vec<Subscription>, StoreError>;
    /// How many subscriptions a connection holds (a consistent read: the per-connection
    /// limit is checked against it at `subscribe`).
    async fn count_by_connection(&self, id: &ConnectionId) -> Result<usize, StoreError>;
    /// The keys of every live subscription of a connection (a consistent read).
    async fn by_connection(&self, id: &ConnectionId) -> Result<Vec<SubscriptionKey>, StoreError>;
}
