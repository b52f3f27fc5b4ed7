//! The page marks port: fan-out pages on their way through an ordered queue.

use async_trait::async_trait;

use super::StoreError;
use crate::domain::Topic;

/// Marks of the fan-out pages ([`super::FanoutPage`]) on their way through an ordered
/// queue ([`super::FanoutQueue::ordered`]), by topic.
///
/// An ordered queue keeps one topic's pages in order, but an event delivered inline would
/// overtake the pages still queued before it: while any page of a topic is marked, later
/// events of the topic go through the queue too. A mark is taken when its page is done,
/// and lapses on its own at the expiry it was given, past which the page cannot be in the
/// queue any more: a mark whose `page_done` was lost holds the topic's events back only
/// until then.
#[async_trait]
pub trait PageMarks: Send + Sync {
    /// Marks fan-out pages of `topic` (by [`super::FanoutPage::id`]) on their way through an
    /// ordered queue, each until `expires_at` (epoch seconds), past which it cannot be in the
    /// queue any more. While one is, a later event of the topic goes through the queue too,
    /// never past it. Marking a page again only moves its expiry.
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
