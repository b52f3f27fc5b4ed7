//! Delivering one event to its subscribers.
//!
//! Delivering one event to many subscribers costs one gateway post each: the floor. Everything
//! else is kept below it: subscriptions that share a document, variables and user (every tab
//! of one user watching one board) render the event once, and posts run concurrently.
//!
//! - this module: the event from the log ([`Broker::deliver_event`]) and the order of the
//!   checks ([`Broker::deliver_to`]): audience, start, resume hold-back, render, post;
//! - [`render`]: the event as each subscriber's document selects it;
//! - [`post`]: the frames through the gateway, retried and cleaned up;
//! - [`report`]: what happened ([`DeliveryReport`]).

pub mod post;
pub mod render;
pub mod report;

use std::sync::Arc;

use crate::Broker;
use crate::domain::{Event, Subscription, Topic};
use crate::ports::StoreError;

pub use render::{EVENT_TOO_LARGE, MAX_FRAME_BYTES};
pub use report::{Counters, DeliveryReport};

/// A topic's subscriptions as read for one event, kept for the topic's next events of the
/// same batch ([`Broker::deliver_event_in`]), and whether its fan-out pages are on their way.
#[derive(Debug, Default)]
pub struct TopicRead(pub(crate) Option<TopicState>);

#[derive(Debug)]
pub(crate) struct TopicState {
    pub(crate) topic: Topic,
    pub(crate) subscriptions: Vec<Subscription>,
    /// Whether pages of the topic are in an ordered queue, once known.
    pub(crate) paging: Option<bool>,
}

impl Broker {
    /// Delivers one event from the log (the stream publisher's job). Above the fan-out
    /// threshold, and with a queue configured, it enqueues pages for the workers instead.
    /// An event already delivered in full (a retried batch) is skipped.
    pub async fn deliver_event(&self, event: Event) -> Result<DeliveryReport, StoreError> {
        self.deliver_event_in(event, &mut TopicRead::default())
            .await
    }

    /// [`Self::deliver_event`] for one of several events of a topic delivered one after
    /// another (a stream batch): the topic's subscriptions are read for the first of them
    /// and `read` keeps them for the next. That misses no subscriber: every event of a batch
    /// was published before the batch is handled, so a subscription stored after the read
    /// starts after all of them and receives none live.
    pub async fn deliver_event_in(
        &self,
        event: Event,
        read: &mut TopicRead,
    ) -> Result<DeliveryReport, StoreError> {
        let reference = event.reference();
        if event.direct {
            return Ok(DeliveryReport::default());
        }
        if self.ports().events.is_delivered(&reference).await? {
            tracing::info!(event = %reference.event_id, "skipping an event delivered before");
            return Ok(DeliveryReport::default());
        }
        let state = match &mut read.0 {
            Some(state) if state.topic == event.topic => state,
            _ => read.0.insert(TopicState {
                topic: event.topic.clone(),
                subscriptions: self.ports().subscriptions.by_topic(&event.topic).await?,
                paging: None,
            }),
        };
        let report = match &self.ports().fanout {
            Some(queue) if self.goes_through_the_queue(queue.ordered(), state).await? => {
                let keys = state.subscriptions.iter().map(|s| s.key.clone());
                let pages = self.fanout_pages(&event, keys);
                self.enqueue(queue.as_ref(), &event.topic, &pages).await?;
                state.paging = Some(queue.ordered());
                DeliveryReport::of(Counters {
                    pages_enqueued: pages.len(),
                    ..Default::default()
                })
            }
            _ => {
                let report = self
                    .deliver_to(Arc::new(event.clone()), &state.subscriptions)
                    .await;
                // Retrying the whole event would post again to every subscriber already
                // served: with a queue, only the failed ones go to a fan-out page.
                self.requeue_failures(&event, report).await
            }
        };
        if report.gone > 0 {
            // Cleaned up: the next event reads the topic's subscriptions again.
            read.0 = None;
        }
        if report.is_complete() {
            self.ports().events.mark_delivered(&reference).await?;
        }
        Ok(report)
    }

    /// Renders and posts `event` to `subscriptions`.
    pub async fn deliver_to(
        &self,
        event: Arc<Event>,
        subscriptions: &[Subscription],
    ) -> DeliveryReport {
        let mut report = DeliveryReport::default();

        // The audience check comes first and does not depend on the document or resolver:
        // whatever was stored, a user's event reaches only that user's connections.
        let (admitted, refused): (Vec<&Subscription>, Vec<_>) = subscriptions
            .iter()
            .partition(|s| s.topic == event.topic && event.audience.admits(&s.principal));
        // A subscription starts at its own beginning: what was published before it was
        // stored is for `resumeFrom` to replay, not for live delivery.
        let published = event.published_ms();
        let (admitted, earlier): (Vec<_>, Vec<_>) = admitted
            .into_iter()
            .partition(|s| published >= s.starts_at_ms);
        report.filtered += earlier.len();
        for s in &refused {
            tracing::warn!(
                event = %event.id,
                subscription = %s.key.encode(),
                "refused delivery outside the event's audience"
            );
        }
        report.refused = refused.len();
        let admitted = self.hold_back_from_replays(admitted, &mut report).await;
        let frames = self.render_frames(&admitted, &event, &mut report).await;
        report.absorb(self.post_all(frames).await);
        tracing::debug!(event = %event.id, ?report, "delivered");
        report
    }
}
