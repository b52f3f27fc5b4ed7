//! Fan-out: an event with more subscribers than the threshold goes to a queue in pages,
//! which workers deliver ([`Broker::deliver_page`]). On an ordered queue a topic's later
//! events follow its pages through the queue while they are on their way, so none overtakes
//! them. [`paging`] cuts an event's subscribers into the pages.

pub mod paging;

use std::sync::Arc;

use crate::Broker;
use crate::delivery::{DeliveryReport, TopicState};
use crate::domain::{Event, SubscriptionKey, Topic};
use crate::ports::{FanoutPage, StoreError};

pub use paging::{bucket_of, fnv1a64, group_name, pages};

impl Broker {
    /// Whether an event of the topic goes out in fan-out pages: when it has more subscribers
    /// than the threshold, and on an ordered queue also while pages of an earlier event are
    /// on their way, so that it never overtakes them by being posted inline.
    pub(crate) async fn goes_through_the_queue(
        &self,
        ordered: bool,
        state: &mut TopicState,
    ) -> Result<bool, StoreError> {
        if state.subscriptions.len() > self.config().fanout_threshold {
            return Ok(true);
        }
        if !ordered {
            return Ok(false);
        }
        if let Some(paging) = state.paging {
            return Ok(paging);
        }
        let in_flight = self
            .ports()
            .page_marks
            .pages_in_flight(&state.topic)
            .await?;
        Ok(*state.paging.insert(in_flight))
    }

    /// Enqueues `pages` of `topic`, each marked on its way first when the queue is ordered.
    /// A mark is never taken back here: when the queue refuses a batch, earlier batches may
    /// be in it already, and a mark too many only keeps the topic on the queue until it
    /// expires, where one too few would let a later event overtake.
    pub(crate) async fn enqueue(
        &self,
        queue: &dyn crate::ports::FanoutQueue,
        topic: &Topic,
        pages: &[FanoutPage],
    ) -> Result<(), StoreError> {
        if queue.ordered() && !pages.is_empty() {
            let lifetime = self.config().fanout_page_lifetime.as_secs();
            let until = crate::domain::now_secs().saturating_add(lifetime);
            let ids: Vec<String> = pages.iter().map(FanoutPage::id).collect();
            self.ports()
                .page_marks
                .pages_enqueued(topic, &ids, until)
                .await?;
        }
        queue.enqueue(pages).await
    }

    /// Delivers one fan-out page (the fan-out worker's job).
    /// A page whose report is complete is done: on an ordered queue it no longer holds the
    /// topic's later events back.
    pub async fn deliver_page(&self, page: &FanoutPage) -> Result<DeliveryReport, StoreError> {
        let report = self.deliver_page_once(page).await?;
        if report.is_complete() {
            // The page went out: failing it now would deliver it again. A mark left behind
            // only keeps the topic's events in the queue until it expires.
            self.page_done(page).await;
        }
        Ok(report)
    }

    /// Marks a page done on an ordered queue without delivering it: the queue gives up on
    /// it (its dead-letter queue takes it), so it holds the topic's later events back no
    /// longer.
    pub async fn page_given_up(&self, page: &FanoutPage) {
        tracing::error!(
            topic = %page.topic,
            event = %page.event_id,
            subscriptions = page.subscription_keys.len(),
            "a fan-out page goes to the dead-letter queue"
        );
        self.page_done(page).await;
    }

    pub(crate) async fn page_done(&self, page: &FanoutPage) {
        if !self.ports().fanout.as_ref().is_some_and(|q| q.ordered()) {
            return;
        }
        let done = self
            .ports()
            .page_marks
            .page_done(&page.topic, &page.id())
            .await;
        if let Err(error) = done {
            tracing::warn!(topic = %page.topic, %error, "a page done was not marked");
        }
    }

    pub(crate) async fn deliver_page_once(
        &self,
        page: &FanoutPage,
    ) -> Result<DeliveryReport, StoreError> {
        let reference = page.event();
        let Some(event) = self.ports().events.get(&reference).await? else {
            tracing::warn!(event = %reference.event_id, "fan-out page for an unknown event");
            return Ok(DeliveryReport::default());
        };
        let subscriptions = self
            .ports()
            .subscriptions
            .get_many(&reference.topic, &page.keys())
            .await?;
        let report = self
            .deliver_to(Arc::new(event.clone()), &subscriptions)
            .await;
        // When nothing was posted the page can be retried as it is (by the queue, then its
        // dead-letter queue) without a duplicate. Otherwise only the subscriptions that
        // failed go on, in a smaller page, and this one is done.
        if report.delivered + report.too_large == 0 {
            return Ok(report);
        }
        Ok(self.requeue_failures(&event, report).await)
    }

    /// The fan-out pages of `event` for `keys`: one bucket's subscriptions per page, each
    /// page in its bucket's group ([`crate::fanout`]).
    pub(crate) fn fanout_pages(
        &self,
        event: &Event,
        keys: impl IntoIterator<Item = SubscriptionKey>,
    ) -> Vec<FanoutPage> {
        crate::fanout::pages(
            &event.topic,
            &event.id,
            keys,
            self.config().fanout_groups,
            self.config().fanout_page_size,
        )
    }

    /// Hands the subscriptions an event failed to reach to the fan-out queue as pages of
    /// their own, so a retry reaches them and nobody else. Without a queue (or when it
    /// refuses) the report stays incomplete and the event is retried whole. On an ordered
    /// queue ([`crate::ports::FanoutQueue::ordered`]) too: a page enqueued now would come
    /// after pages of later events in its group, or be overtaken by later events the stream
    /// publisher posts itself, so the delivery is retried in place instead.
    pub(crate) async fn requeue_failures(
        &self,
        event: &Event,
        mut report: DeliveryReport,
    ) -> DeliveryReport {
        let Some(queue) = &self.ports().fanout else {
            return report;
        };
        if report.failed == 0 || report.failed_keys.len() != report.failed || queue.ordered() {
            return report;
        }
        let pages = self.fanout_pages(event, report.failed_keys.iter().cloned());
        match queue.enqueue(&pages).await {
            Ok(()) => {
                tracing::info!(event = %event.id, failed = report.failed, "failed posts re-enqueued alone");
                report.pages_enqueued += pages.len();
                report.failed = 0;
                report.failed_keys.clear();
            }
            Err(e) => {
                tracing::warn!(event = %event.id, error = %e, "re-enqueueing failed posts failed")
            }
        }
        report
    }
}
