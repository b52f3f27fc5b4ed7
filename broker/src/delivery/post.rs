//! Posting frames through the gateway: concurrently, a failure that retrying may fix retried
//! for its subscriber alone, a gone connection cleaned up once.
//!
//! Each delivery posts up to [`crate::BrokerConfig::post_concurrency`] frames at a time, and
//! every post of every delivery of the process holds one of the broker's
//! [`crate::BrokerConfig::max_posts_in_flight`] slots while it is sent. Without that bound a
//! burst of publishes delivering at once (direct mode in one process) multiplies the two:
//! a thousand deliveries of 64 posts each opened 64,000 connections to the Management API at
//! once, ran the process out of file descriptors, and posts then failed, timed out (some after
//! they had landed, so their retry repeated them) and were retried, feeding the pile.

use std::collections::HashSet;

use futures_util::StreamExt;
use futures_util::stream;

use crate::Broker;
use crate::delivery::DeliveryReport;
use crate::domain::{ConnectionId, SubscriptionKey};
use crate::ports::GatewayError;

/// A post that fails for a reason retrying may fix (a timeout, a 5xx, a throttle) is tried
/// again this many times, for that subscriber alone, after these pauses.
const POST_RETRY_PAUSES: [std::time::Duration; 2] = [
    std::time::Duration::from_millis(100),
    std::time::Duration::from_millis(400),
];

/// One frame to post, and to whom.
pub(crate) struct Frame {
    connection: ConnectionId,
    /// The subscription it is for (none for a frame to a connection as a whole).
    key: Option<SubscriptionKey>,
    text: String,
    /// An [`EVENT_TOO_LARGE`] error in place of the event's frame.
    too_large: bool,
}

impl Frame {
    pub(crate) fn new(
        connection: ConnectionId,
        key: Option<SubscriptionKey>,
        text: String,
    ) -> Self {
        Self {
            connection,
            key,
            text,
            too_large: false,
        }
    }

    /// An [`EVENT_TOO_LARGE`](crate::delivery::EVENT_TOO_LARGE) error for `key`'s subscriber,
    /// posted in place of the event's frame.
    pub(crate) fn too_large(connection: ConnectionId, key: SubscriptionKey, text: String) -> Self {
        Self {
            too_large: true,
            ..Self::new(connection, Some(key), text)
        }
    }
}

impl Broker {
    /// Posts frames concurrently, cleaning up connections that are gone. A post that fails
    /// for a reason retrying may fix is retried here, for its subscriber alone.
    pub(crate) async fn post_all(&self, frames: Vec<Frame>) -> DeliveryReport {
        let gateway = &self.ports().gateway;
        let outcomes: Vec<_> = stream::iter(frames)
            .map(|frame| async move {
                // A slot per attempt, given back while the retry waits.
                let post = || async {
                    let _slot = self.inner.posts_in_flight.acquire().await;
                    gateway.post(&frame.connection, &frame.text).await
                };
                let mut outcome = post().await;
                for pause in POST_RETRY_PAUSES {
                    if !matches!(outcome, Err(GatewayError::Backend { .. })) {
                        break;
                    }
                    tokio::time::sleep(pause).await;
                    outcome = post().await;
                }
                (frame.connection, frame.key, frame.too_large, outcome)
            })
            .buffer_unordered(self.config().post_concurrency)
            .collect()
            .await;
        let mut report = DeliveryReport::default();
        let mut forgotten = HashSet::new();
        for (connection, key, too_large, outcome) in outcomes {
            match outcome {
                Ok(()) if too_large => report.too_large += 1,
                Ok(()) => report.delivered += 1,
                Err(GatewayError::Gone) => {
                    report.gone += 1;
                    // One gone connection can hold several of the subscriptions posted to.
                    if !forgotten.insert(connection.clone()) {
                        continue;
                    }
                    if let Err(e) = self.forget_connection(&connection).await {
                        tracing::warn!(%connection, error = %e, "cleanup of a gone connection failed");
                    }
                }
                Err(GatewayError::Rejected { source }) => {
                    report.dropped += 1;
                    tracing::warn!(%connection, error = %source, "post refused for good; dropped");
                }
                Err(e) => {
                    report.failed += 1;
                    report.failed_keys.extend(key);
                    tracing::warn!(%connection, error = %e, "post failed");
                }
            }
        }
        report
    }
}
