//! Why a record of a batch was not delivered: what the functions log for it before
//! reporting it as a batch item failure, so Lambda hands it out again.

use broker::{StoreError, Topic};

/// A stream record or fan-out message that failed. Each keeps its cause; its message is the
/// `reason` the functions log with the failed record.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// The stream record's new image is not an event. No retry can deliver it.
    #[error("undecodable event: {0}")]
    UndecodableEvent(#[source] StoreError),
    /// The event's audience is no user a token could carry. No retry can deliver it.
    #[error("event {id}: {reason}")]
    Audience {
        /// The event's id.
        id: String,
        /// What is wrong with its audience.
        reason: String,
    },
    /// The SQS message's body is not a fan-out page.
    #[error("not a fan-out page: {0}")]
    MalformedPage(#[source] serde_json::Error),
    /// A store failed while delivering: reading subscriptions, the event log or its marks.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Some posts failed for a reason other than a gone connection: the event must be
    /// delivered again.
    #[error("{failed} posts failed")]
    Incomplete {
        /// How many posts failed.
        failed: usize,
    },
    /// An earlier event of the same topic in the batch failed: this one waits for it, so
    /// the topic's events reach subscribers in order.
    #[error("held back behind an earlier failure on {topic}")]
    HeldBack {
        /// The topic whose earlier event failed.
        topic: Topic,
    },
}
