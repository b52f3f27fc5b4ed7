//! Ports: what the broker needs from the outside world. Adapters live in [`crate::memory`]
//! (unit tests, the embedded local mode) and `crate::aws` (DynamoDB, SQS, API Gateway).

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::domain::{
    Connection, ConnectionId, Event, EventRef, Subscription, SubscriptionKey, Topic, UserId,
};
use crate::protocol::CloseCode;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A conditional write found the item already there (or missing, for an update).
    #[error("conflict: {0}")]
    Conflict(String),
    /// A conditional write found a bound already reached (a connection's subscriptions).
    #[error("limit reached: {0}")]
    LimitReached(String),
    /// The item exists but cannot be read back as the domain type.
    #[error("malformed item: {0}")]
    Malformed(String),
    /// The write was not confirmed by its deadline ([`EventLog::append_by`]); a remote
    /// store may still make it.
    #[error("not stored by its deadline")]
    TooLate,
    #[error("storage backend failed: {source}")]
    Backend {
        #[source]
        source: BoxError,
    },
}

impl StoreError {
    pub fn backend(source: impl Into<BoxError>) -> Self {
        Self::Backend {
            source: source.into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The connection no longer exists (API Gateway answers 410 Gone).
    #[error("connection is gone")]
    Gone,
    /// The gateway refused this frame for this connection for good (a permanent client
    /// error such as 403 Forbidden or 413 Payload Too Large); retrying cannot help.
    #[error("gateway rejected the frame: {source}")]
    Rejected {
        #[source]
        source: BoxError,
    },
    #[error("gateway failed: {source}")]
    Backend {
        #[source]
        source: BoxError,
    },
}

impl GatewayError {
    pub fn backend(source: impl Into<BoxError>) -> Self {
        Self::Backend {
            source: source.into(),
        }
    }
}

/// Open connections, indexed by id and by user.
#[async_trait]
pub trait ConnectionStore: Send + Sync {
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
    async fn delete(&self, id: &ConnectionId) -> Result<(), StoreError>;
    /// Every live connection of one user: a backend pushing to all of a user's frontends.
    async fn by_user(&self, user: &UserId) -> Result<Vec<Connection>, StoreError>;
}

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

/// What [`SubscriptionStore::hold`] did with a live event for a subscription.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hold {
    /// Held back: the subscription's replay sends it.
    Held,
    /// The replay has handed over (or the subscription is gone): post it live.
    Live,
    /// The replay's time is over and it never handed over: its process ended, and what it
    /// held back may never have been sent.
    Abandoned,
}

/// What [`SubscriptionStore::hand_over`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandOver {
    /// Live delivery posts to the subscription from now on (or it is gone).
    Done,
    /// Events were held back since the count the replay gave: this many in all. The replay
    /// reads the log again and tries again with it.
    Held(u64),
}

/// Stored subscriptions, indexed by topic (delivery) and by connection (cleanup).
///
/// API Gateway does not keep one connection's messages in order, and `$disconnect` can be
/// handled before the connection's last `subscribe`: a `complete` may arrive before its
/// `subscribe`, and a `subscribe` after its connection was closed. Tombstones make both
/// orders end with no subscription: [`Self::complete`] of an operation not stored yet and
/// [`Self::close_connection`] leave one, each until a time the caller gives, and
/// [`Self::insert`] respects it, atomically with its own write.
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
    /// Removes every subscription of a connection; returns how many there were.
    async fn delete_by_connection(&self, id: &ConnectionId) -> Result<usize, StoreError>;
    /// Holds a live event back from a subscription whose replay has not handed over yet
    /// ([`Subscription::replaying_until_ms`]), counting it, atomically with the check.
    async fn hold(&self, subscription: &Subscription) -> Result<Hold, StoreError>;
    /// Hands a replaying subscription over to live delivery if no event was held back since
    /// the replay's last read, when `held` were (atomically with the check); `None` hands
    /// over whatever was held.
    async fn hand_over(
        &self,
        subscription: &Subscription,
        held: Option<u64>,
    ) -> Result<HandOver, StoreError>;
    /// Marks fan-out pages of `topic` (by [`FanoutPage::id`]) on their way through an ordered
    /// queue, each until `expires_at` (epoch seconds), past which it cannot be in the queue
    /// any more. While one is, a later event of the topic goes through the queue too, never
    /// past it. Marking a page again only moves its expiry.
    async fn pages_enqueued(
        &self,
        topic: &Topic,
        pages: &[String],
        expires_at: u64,
    ) -> Result<(), StoreError>;
    /// Marks one of `topic`'s pages done (delivered, or given up on). A page done twice (a
    /// redelivery) is done once, and a page never marked is nothing.
    async fn page_done(&self, topic: &Topic, page: &str) -> Result<(), StoreError>;
    /// Whether any page of `topic` is on its way (a consistent read).
    async fn pages_in_flight(&self, topic: &Topic) -> Result<bool, StoreError>;
}

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

/// Posts frames to connections: the API Gateway Management API, or the local gateway.
#[async_trait]
pub trait ConnectionGateway: Send + Sync {
    async fn post(&self, id: &ConnectionId, frame: &str) -> Result<(), GatewayError>;
    /// Closes a connection. API Gateway cannot send a close code; the local gateway does.
    async fn close(
        &self,
        id: &ConnectionId,
        code: CloseCode,
        reason: &str,
    ) -> Result<(), GatewayError>;
}

/// One page of a large fan-out: a queue message handled by a fan-out worker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FanoutPage {
    pub topic: Topic,
    pub event_id: String,
    /// `"{topic}#{bucket}"` ([`crate::fanout`]): the queue keeps the pages of one group in
    /// order, and every subscription of a page is in its group. Empty in a page from before
    /// groups (it deserializes without one); such a page is ordered by its topic alone.
    #[serde(default)]
    pub group: String,
    pub subscription_keys: Vec<String>,
}

impl FanoutPage {
    pub fn event(&self) -> EventRef {
        EventRef {
            topic: self.topic.clone(),
            event_id: self.event_id.clone(),
        }
    }

    pub fn keys(&self) -> Vec<SubscriptionKey> {
        self.subscription_keys
            .iter()
            .filter_map(|k| SubscriptionKey::decode(k))
            .collect()
    }

    /// The page's id: the hex SHA-256 of its event id, its group and its subscription keys
    /// (each length-prefixed, so no two pages share an input). The same page built again has
    /// the same id; any other page of the event (another bucket, another chunk, the failed
    /// remainder of a page) differs in its group or keys. It is the page's
    /// MessageDeduplicationId on a FIFO queue and its mark while on its way.
    pub fn id(&self) -> String {
        use sha2::{Digest, Sha256};
        use std::fmt::Write;
        let mut digest = Sha256::new();
        let mut field = |bytes: &[u8]| {
            digest.update((bytes.len() as u64).to_be_bytes());
            digest.update(bytes);
        };
        field(self.event_id.as_bytes());
        field(self.ordering_group().as_bytes());
        for key in &self.subscription_keys {
            field(key.as_bytes());
        }
        digest
            .finalize()
            .iter()
            .fold(String::with_capacity(64), |mut s, b| {
                let _ = write!(s, "{b:02x}");
                s
            })
    }

    /// What the queue orders this page by: its group, or its topic for a page from before
    /// groups.
    pub fn ordering_group(&self) -> &str {
        if self.group.is_empty() {
            self.topic.as_str()
        } else {
            &self.group
        }
    }
}

/// The queue that spreads large fan-outs over workers (SQS on AWS).
#[async_trait]
pub trait FanoutQueue: Send + Sync {
    /// Sends `pages` in this order.
    async fn enqueue(&self, pages: &[FanoutPage]) -> Result<(), StoreError>;

    /// Whether the queue keeps each group's pages in order and its consumer hands them to the
    /// worker one after another, retrying a failed page before the later pages of its group
    /// (an SQS FIFO queue; the local mode's embedded queue). Then a delivery whose posts
    /// partly failed is retried in place (the page redelivered, or the stream record
    /// retried), reaching the subscribers it already served again with the same event id,
    /// instead of re-enqueueing the failed subscriptions behind later events' pages. A
    /// standard queue (the default) orders nothing, and the failed subscriptions go to pages
    /// of their own.
    fn ordered(&self) -> bool {
        false
    }
}
