//! The fan-out queue port, and the pages it carries.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::StoreError;
use crate::domain::{EventRef, SubscriptionKey, Topic};

/// One page of a large fan-out: a queue message handled by a fan-out worker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FanoutPage {
    /// The event's topic.
    pub topic: Topic,
    /// The event this page delivers, read from the log by the worker.
    pub event_id: String,
    /// `"{topic}#{bucket}"` ([`crate::fanout`]): the queue keeps the pages of one group in
    /// order, and every subscription of a page is in its group. Empty in a page from before
    /// groups (it deserializes without one); such a page is ordered by its topic alone.
    #[serde(default)]
    pub group: String,
    /// The subscriptions this page delivers to ([`SubscriptionKey::encode`]d).
    pub subscription_keys: Vec<String>,
}

impl FanoutPage {
    /// The event this page delivers.
    pub fn event(&self) -> EventRef {
        EventRef {
            topic: self.topic.clone(),
            event_id: self.event_id.clone(),
        }
    }

    /// The subscriptions this page delivers to; keys that do not decode are skipped.
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
