//! Publishing events and delivering them to subscribers.
//!
//! Delivering one event to many subscribers costs one gateway post each: the floor. Everything
//! else is kept below it: subscriptions that share a document, variables and user (every tab
//! of one user watching one board) render the event once, and posts run concurrently.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream;
use serde::Serialize;

use crate::domain::{
    Audience, ConnectionId, Event, Subscription, SubscriptionKey, Topic, UserId, now_ms,
};
use crate::graphql;
use crate::ports::{FanoutPage, GatewayError, Hold, StoreError};
use crate::protocol::CloseCode;
use crate::{Broker, DeliveryMode};

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("event payload is not JSON: {0}")]
    Payload(#[from] serde_json::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The event was not stored within [`crate::BrokerConfig::publish_deadline`] of its
    /// stamp, and the broker delivered nothing. A remote log may still store it later (in
    /// stream mode it is then delivered late). What the mutation saved before publishing
    /// stays saved: publishing again makes another event, with a new id.
    #[error("the event was not stored within {} ms; it may still be stored, and then reach subscribers late", .0.as_millis())]
    TimedOut(Duration),
}

/// The `extensions.code` of the GraphQL error for a publish that timed out
/// ([`PublishError::TimedOut`], through [`crate::publish_error`]).
pub const PUBLISH_TIMEOUT: &str = "PUBLISH_TIMEOUT";

/// A post that fails for a reason retrying may fix (a timeout, a 5xx, a throttle) is tried
/// again this many times, for that subscriber alone, after these pauses.
const POST_RETRY_PAUSES: [std::time::Duration; 2] = [
    std::time::Duration::from_millis(100),
    std::time::Duration::from_millis(400),
];

/// API Gateway's limit on one message posted to a connection: 128 KB.
pub const MAX_FRAME_BYTES: usize = 128 * 1024;

/// The `extensions.code` of the GraphQL error a subscriber gets in place of an event whose
/// frame would be over [`MAX_FRAME_BYTES`]; `extensions.eventId` names the event, so the
/// client can re-query what it changed. The subscription goes on.
pub const EVENT_TOO_LARGE: &str = "EVENT_TOO_LARGE";

/// What happened to one event (or one fan-out page).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeliveryReport {
    /// `next` frames posted.
    pub delivered: usize,
    /// Subscriptions whose document produced nothing for the event.
    pub filtered: usize,
    /// Subscriptions refused because the event's audience excludes their user.
    pub refused: usize,
    /// Connections found gone (410) and cleaned up.
    pub gone: usize,
    /// Frames the gateway refused for good: retrying cannot help.
    pub dropped: usize,
    /// Subscribers whose frame would have been over [`MAX_FRAME_BYTES`] and who were posted
    /// an [`EVENT_TOO_LARGE`] error in its place (not counted in `delivered`).
    pub too_large: usize,
    /// Posts that failed otherwise: the event must be retried.
    pub failed: usize,
    /// Fan-out pages handed to the queue instead of delivering here.
    pub pages_enqueued: usize,
    /// Subscriptions still replaying their resume, which the event was held back from:
    /// their replay sends it, in order with what it replays.
    pub held: usize,
    /// The subscriptions counted in `failed`: what a retry must reach, and nothing else.
    pub failed_keys: Vec<SubscriptionKey>,
}

impl DeliveryReport {
    pub fn is_complete(&self) -> bool {
        self.failed == 0
    }

    fn absorb(&mut self, other: DeliveryReport) {
        self.delivered += other.delivered;
        self.filtered += other.filtered;
        self.refused += other.refused;
        self.gone += other.gone;
        self.dropped += other.dropped;
        self.too_large += other.too_large;
        self.failed += other.failed;
        self.pages_enqueued += other.pages_enqueued;
        self.held += other.held;
        self.failed_keys.extend(other.failed_keys);
    }
}

/// A topic's subscriptions as read for one event, kept for the topic's next events of the
/// same batch ([`Broker::deliver_event_in`]), and whether its fan-out pages are on their way.
#[derive(Debug, Default)]
pub struct TopicRead(Option<TopicState>);

#[derive(Debug)]
struct TopicState {
    topic: Topic,
    subscriptions: Vec<Subscription>,
    /// Whether pages of the topic are in an ordered queue, once known.
    paging: Option<bool>,
}

/// Subscriptions with the same key render the same payload: document, operation name,
/// variables (as JSON text) and user.
type GroupKey<'a> = (&'a str, Option<&'a str>, String, &'a UserId);

/// What rendering an event for a group of subscriptions gave: a payload, nothing (the
/// subscription does not produce anything for this event), or a timeout.
type Rendered = Result<Option<String>, TimedOut>;

/// A rendering that outlived the render timeout.
#[derive(Clone, Copy, Debug)]
struct TimedOut;

/// Render groups (indices into the admitted subscriptions) that execute together.
enum RenderJob {
    Alone(Vec<usize>),
    /// A union's members, in the order it merged them.
    Merged(graphql::Union, Vec<Vec<usize>>),
}

impl From<(graphql::Union, Vec<Vec<usize>>)> for RenderJob {
    fn from((union, mut groups): (graphql::Union, Vec<Vec<usize>>)) -> Self {
        if groups.len() == 1 {
            return Self::Alone(groups.remove(0));
        }
        Self::Merged(union, groups)
    }
}

/// One frame to post, and to whom.
struct Frame {
    connection: ConnectionId,
    /// The subscription it is for (none for a frame to a connection as a whole).
    key: Option<SubscriptionKey>,
    text: String,
    /// An [`EVENT_TOO_LARGE`] error in place of the event's frame.
    too_large: bool,
}

impl Frame {
    fn new(connection: ConnectionId, key: Option<SubscriptionKey>, text: String) -> Self {
        Self {
            connection,
            key,
            text,
            too_large: false,
        }
    }
}

/// The payload a subscriber gets in place of an event whose frame would be `bytes` long.
fn too_large_payload(event_id: &str, bytes: usize) -> String {
    serde_json::json!({
        "errors": [{
            "message": format!(
                "event {event_id} is too large to deliver ({bytes} bytes; the limit is {MAX_FRAME_BYTES}); re-query what it changed"
            ),
            "extensions": {"code": EVENT_TOO_LARGE, "eventId": event_id},
        }],
        "extensions": {"eventId": event_id},
    })
    .to_string()
}

impl Broker {
    /// Publishes a change. In stream mode it is appended to the event log and this returns;
    /// in direct mode it is delivered to every subscriber before this returns (and posts that
    /// fail are logged, not retried).
    /// Backends and other services publish through this too.
    pub async fn publish(
        &self,
        topic: Topic,
        payload: &impl Serialize,
        audience: Audience,
    ) -> Result<Event, PublishError> {
        let mut event = Event::new(topic, serde_json::to_value(payload)?, audience);
        event.expires_at = event.published_at_ms / 1000 + self.config().event_retention.as_secs();
        match self.config().delivery_mode {
            DeliveryMode::Stream => self.append_in_time(&event).await?,
            DeliveryMode::Direct => {
                // Logged first, marked as delivered here: a subscriber that misses it can
                // resume from the log, and the stream publisher leaves it alone.
                event.direct = true;
                self.append_in_time(&event).await?;
                let subscriptions = self.ports().subscriptions.by_topic(&event.topic).await?;
                let report = self
                    .deliver_to(Arc::new(event.clone()), &subscriptions)
                    .await;
                crate::metrics::record(&report, Some(event.published_at_ms));
                // The change is saved whatever happens to its delivery: failing the mutation
                // now would only make the client retry it. Nothing retries direct delivery,
                // which is the trade-off of this mode; the log says what was lost.
                if !report.is_complete() {
                    tracing::warn!(event = %event.id, failed = report.failed, "direct delivery incomplete");
                }
            }
        }
        Ok(event)
    }

    /// Stores `event` in the log within the publish deadline from its stamp, or fails: a
    /// resume reads the log once more `resume_settle` after its subscription was stored,
    /// and an event stored later than that after its stamp could sort before the place
    /// that read started from.
    async fn append_in_time(&self, event: &Event) -> Result<(), PublishError> {
        let deadline = self.config().publish_deadline();
        let by = event
            .published_ms()
            .saturating_add(deadline.as_millis() as u64);
        let error = match self.ports().events.append_by(event, by).await {
            Ok(()) => return Ok(()),
            Err(error) => error,
        };
        // A write that failed may have stored the event all the same: a retry that found
        // what an attempt whose answer was lost stored (a conflict: ids are this process's
        // own), or an attempt that failed after storing it. Read back, within the deadline;
        // stored late or not known in time, it timed out.
        if !matches!(error, StoreError::TooLate) {
            let left = Duration::from_millis(by.saturating_sub(now_ms()));
            match tokio::time::timeout(left, self.stored_as_is(event)).await {
                Ok(Ok(true)) if now_ms() <= by => return Ok(()),
                Ok(Ok(false) | Err(_)) => return Err(error.into()),
                _ => {}
            }
        }
        let deadline_ms = deadline.as_millis() as u64;
        tracing::warn!(event = %event.id, topic = %event.topic, deadline_ms, %error, "publish timed out");
        crate::metrics::record_publish_timeout();
        Err(PublishError::TimedOut(deadline))
    }

    /// Whether the log holds `event` exactly as it is.
    async fn stored_as_is(&self, event: &Event) -> Result<bool, StoreError> {
        let stored = self.ports().events.get(&event.reference()).await?;
        Ok(stored.as_ref() == Some(event))
    }

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
                DeliveryReport {
                    pages_enqueued: pages.len(),
                    ..Default::default()
                }
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

    /// Whether an event of the topic goes out in fan-out pages: when it has more subscribers
    /// than the threshold, and on an ordered queue also while pages of an earlier event are
    /// on their way, so that it never overtakes them by being posted inline.
    async fn goes_through_the_queue(
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
    async fn enqueue(
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

    async fn page_done(&self, page: &FanoutPage) {
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

    async fn deliver_page_once(&self, page: &FanoutPage) -> Result<DeliveryReport, StoreError> {
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
    fn fanout_pages(
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
    async fn requeue_failures(&self, event: &Event, mut report: DeliveryReport) -> DeliveryReport {
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

    /// Leaves out of `admitted` the subscriptions whose resume is still replaying: the event
    /// is held back from each ([`crate::ReplayGate::hold`]), and its replay, which
    /// reads the log once more before it hands over, sends it. A replay that ran out of time
    /// without handing over may not have sent what it held: its connection is closed, so
    /// that the client resumes again instead of living with a gap.
    async fn hold_back_from_replays<'s>(
        &self,
        admitted: Vec<&'s Subscription>,
        report: &mut DeliveryReport,
    ) -> Vec<&'s Subscription> {
        if admitted.iter().all(|s| s.replaying_until_ms == 0) {
            return admitted;
        }
        // Owned: the concurrent holds' futures borrow nothing of the caller's.
        let replaying: Vec<Subscription> = admitted
            .iter()
            .filter(|s| s.replaying_until_ms != 0)
            .map(|s| (*s).clone())
            .collect();
        let store = self.ports().replay_gate.clone();
        let holds: HashMap<SubscriptionKey, Result<Hold, StoreError>> = stream::iter(replaying)
            .map(|s| {
                let store = store.clone();
                async move {
                    let hold = store.hold(&s).await;
                    (s.key, hold)
                }
            })
            .buffer_unordered(self.config().post_concurrency.max(1))
            .collect()
            .await;
        let mut live = Vec::with_capacity(admitted.len());
        for s in admitted {
            match holds.get(&s.key) {
                None | Some(Ok(Hold::Live)) => live.push(s),
                Some(Ok(Hold::Held)) => report.held += 1,
                // Its replay is lost, or the event cannot be held for it: the client resumes
                // again, and the event is not failed (nor retried) for everyone else.
                Some(Ok(Hold::Abandoned)) => {
                    tracing::warn!(subscription = %s.key.encode(), "a resume never handed over; closing");
                    self.close_for_a_new_resume(s).await;
                    report.gone += 1;
                }
                Some(Err(error)) => {
                    tracing::warn!(subscription = %s.key.encode(), %error, "holding an event back failed; closing");
                    self.close_for_a_new_resume(s).await;
                    report.gone += 1;
                }
            }
        }
        live
    }

    async fn close_for_a_new_resume(&self, s: &Subscription) {
        let connection = &s.key.connection_id;
        let reason = "the resume did not finish; resume again";
        if let Err(error) = self
            .close(connection, CloseCode::InternalError, reason)
            .await
        {
            tracing::warn!(%connection, %error, "closing after a lost resume failed");
        }
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

        // Render once per distinct (document, operation, variables, user), and once per
        // union of one user's documents that differ only in what they select (see
        // `graphql::merge`). Renderings run concurrently, each bounded by the render timeout:
        // a slow resolver delays its own group only. The documents come parsed and priced
        // from the cache. Groups hold indices into `admitted`: owned values keep the
        // concurrent renderings' futures free of borrowed arguments.
        let mut groups: HashMap<GroupKey<'_>, Vec<usize>> = HashMap::new();
        for (index, s) in admitted.iter().enumerate() {
            let key = (
                s.document.as_str(),
                s.operation_name.as_deref(),
                s.variables.to_string(),
                &s.principal,
            );
            groups.entry(key).or_default().push(index);
        }
        // In the order the store gave: the same subscribers make the same unions at every
        // event, so a union is parsed and validated once, not once per event.
        let mut groups: Vec<_> = groups.into_iter().collect();
        groups.sort_unstable_by_key(|(_, members)| members[0]);
        let jobs = self.render_jobs(&admitted, groups);
        let (admitted, event) = (&admitted, &event);
        let concurrency = self.config().render_concurrency.max(1);
        let rendered: Vec<Vec<(Vec<usize>, Option<Rendered>)>> = stream::iter(jobs)
            .map(|job| self.render_job(admitted, event, job))
            .buffer_unordered(concurrency)
            .collect()
            .await;
        // What a union could not render for, each document on its own, after the unions: an
        // error's path and null propagation are those of the document that asked for the
        // field, and a slow field delays only the documents that ask for it.
        let (mut renderings, alone): (Vec<_>, Vec<_>) = rendered
            .into_iter()
            .flatten()
            .partition(|(_, rendered)| rendered.is_some());
        let alone: Vec<(Vec<usize>, Option<Rendered>)> = stream::iter(alone)
            .map(|(members, _)| async move {
                let rendered = self.render_alone(admitted[members[0]], event).await;
                (members, Some(rendered))
            })
            .buffer_unordered(concurrency)
            .collect()
            .await;
        renderings.extend(alone);
        let renderings = renderings
            .into_iter()
            .filter_map(|(members, rendered)| Some((members, rendered?)));
        let mut frames: Vec<Frame> = Vec::with_capacity(admitted.len());
        for (members, rendered) in renderings {
            let members: Vec<&Subscription> = members.iter().map(|&i| admitted[i]).collect();
            match rendered {
                Ok(Some(payload)) => frames.extend(members.iter().map(|s| {
                    let frame = s.protocol.next(&s.key.operation_id, &payload);
                    if frame.len() <= MAX_FRAME_BYTES {
                        return Frame::new(s.key.connection_id.clone(), Some(s.key.clone()), frame);
                    }
                    // The gateway would refuse it: say so instead of dropping it in silence.
                    tracing::warn!(
                        event = %event.id,
                        subscription = %s.key.encode(),
                        bytes = frame.len(),
                        limit = MAX_FRAME_BYTES,
                        "event too large for its subscriber; sent EVENT_TOO_LARGE instead"
                    );
                    let error = too_large_payload(&event.id, frame.len());
                    Frame {
                        too_large: true,
                        ..Frame::new(
                            s.key.connection_id.clone(),
                            Some(s.key.clone()),
                            s.protocol.next(&s.key.operation_id, &error),
                        )
                    }
                })),
                Ok(None) => report.filtered += members.len(),
                Err(_) => {
                    tracing::error!(event = %event.id, "rendering timed out");
                    report.failed += members.len();
                    report
                        .failed_keys
                        .extend(members.iter().map(|s| s.key.clone()));
                }
            }
        }

        report.absorb(self.post_all(frames).await);
        tracing::debug!(event = %event.id, ?report, "delivered");
        report
    }

    /// Sorts render groups into what runs alone and unions of one subscriber's documents of
    /// the same shape.
    fn render_jobs(
        &self,
        admitted: &[&Subscription],
        groups: Vec<(GroupKey<'_>, Vec<usize>)>,
    ) -> Vec<RenderJob> {
        let documents = &self.inner.documents;
        let limits = &self.config().limits;
        if !self.config().merge_renderings {
            return groups
                .into_iter()
                .map(|(_, m)| RenderJob::Alone(m))
                .collect();
        }
        let mut jobs = Vec::new();
        let mut shaped = Vec::new();
        for ((_, _, _, user), members) in groups {
            match documents.shape(limits, admitted[members[0]].into()) {
                Some(shape) => shaped.push((user, shape, members)),
                None => jobs.push(RenderJob::Alone(members)),
            }
        }
        let mut families: HashMap<_, Vec<(Arc<graphql::Shape>, Vec<usize>)>> = HashMap::new();
        for (user, shape, members) in &shaped {
            families
                .entry((*user, shape.merge_key()))
                .or_default()
                .push((shape.clone(), members.clone()));
        }
        for family in families.into_values() {
            if family.len() == 1 {
                jobs.extend(
                    family
                        .into_iter()
                        .map(|(_, members)| RenderJob::Alone(members)),
                );
                continue;
            }
            let mut family = family.into_iter();
            let Some((shape, members)) = family.next() else {
                continue;
            };
            let mut union = (graphql::Union::new(&shape, limits), vec![members]);
            for (shape, members) in family {
                if union.0.add(&shape) {
                    union.1.push(members);
                } else {
                    jobs.push(RenderJob::from(union));
                    union = (graphql::Union::new(&shape, limits), vec![members]);
                }
            }
            jobs.push(RenderJob::from(union));
        }
        jobs
    }

    /// Renders one job: the payload for each of its groups, or `None` for the groups a union
    /// could not render for.
    async fn render_job(
        &self,
        admitted: &[&Subscription],
        event: &Arc<Event>,
        job: RenderJob,
    ) -> Vec<(Vec<usize>, Option<Rendered>)> {
        match job {
            RenderJob::Alone(members) => {
                let rendered = self.render_alone(admitted[members[0]], event).await;
                vec![(members, Some(rendered))]
            }
            RenderJob::Merged(union, groups) => {
                let principal = &admitted[groups[0][0]].principal;
                debug_assert_eq!(union.members(), groups.len());
                match self.render_union(principal, event, &union).await {
                    Some(rendered) => groups
                        .into_iter()
                        .zip(rendered.into_iter().map(Some))
                        .collect(),
                    None => groups.into_iter().map(|g| (g, None)).collect(),
                }
            }
        }
    }

    async fn render_alone(&self, subscription: &Subscription, event: &Arc<Event>) -> Rendered {
        let execution = graphql::execute(
            self.inner.executor.as_ref(),
            &self.inner.documents,
            &self.config().limits,
            subscription.into(),
            event,
            |r| self.request_data(subscription.principal.clone(), r),
        );
        let response = tokio::time::timeout(self.config().render_timeout, execution)
            .await
            .map_err(|_| TimedOut)?;
        Ok(response.map(|r| graphql::payload(&r)))
    }

    /// The union's payload for each of its members, or `None` when they must be rendered
    /// one by one: the union was refused, timed out, its result holds an error, or a
    /// member's field is missing from it.
    async fn render_union(
        &self,
        principal: &UserId,
        event: &Arc<Event>,
        union: &graphql::Union,
    ) -> Option<Vec<Rendered>> {
        let documents = &self.inner.documents;
        let limits = &self.config().limits;
        let text = union.document();
        let spec = graphql::Spec {
            document: &text,
            operation_name: Some(graphql::UNION_OPERATION),
            variables: union.variables(),
        };
        if !documents.admit_union(limits, spec) {
            return None;
        }
        let execution = graphql::execute(
            self.inner.executor.as_ref(),
            documents,
            limits,
            spec,
            event,
            |r| self.request_data(principal.clone(), r),
        );
        let response = match tokio::time::timeout(self.config().render_timeout, execution).await {
            Err(_) => return None,
            Ok(None) => return Some(vec![Ok(None); union.members()]),
            Ok(Some(response)) if response.errors.is_empty() => response,
            Ok(Some(response)) => {
                // Errors of no field (the schema's validation, its own limits) come back at
                // every event: the union is not tried again.
                if response.data == async_graphql::Value::Null
                    && response.errors.iter().all(|e| e.path.is_empty())
                {
                    documents.refuse_union(spec);
                }
                return None;
            }
        };
        (0..union.members())
            .map(|member| {
                let payload = union.payload(member, &response.data, &response.extensions)?;
                Some(Ok(Some(payload)))
            })
            .collect()
    }

    /// Posts frames concurrently, cleaning up connections that are gone. A post that fails
    /// for a reason retrying may fix is retried here, for its subscriber alone.
    async fn post_all(&self, frames: Vec<Frame>) -> DeliveryReport {
        let gateway = &self.ports().gateway;
        let outcomes: Vec<_> = stream::iter(frames)
            .map(|frame| async move {
                let mut outcome = gateway.post(&frame.connection, &frame.text).await;
                for pause in POST_RETRY_PAUSES {
                    if !matches!(outcome, Err(GatewayError::Backend { .. })) {
                        break;
                    }
                    tokio::time::sleep(pause).await;
                    outcome = gateway.post(&frame.connection, &frame.text).await;
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

    /// Posts one raw frame to every open connection of `user` (every frontend they have
    /// open). Returns how many connections received it.
    pub async fn send_to_user(&self, user: &UserId, frame: &str) -> Result<usize, StoreError> {
        let connections = self.ports().connections.by_user(user).await?;
        let frames = connections
            .into_iter()
            .filter(|c| c.initialised)
            .map(|c| Frame::new(c.id, None, frame.to_owned()))
            .collect();
        Ok(self.post_all(frames).await.delivered)
    }

    /// Closes every connection of `user` (sign-out everywhere, a revoked account). Returns
    /// how many were closed.
    pub async fn disconnect_user(
        &self,
        user: &UserId,
        code: CloseCode,
    ) -> Result<usize, StoreError> {
        let connections = self.ports().connections.by_user(user).await?;
        let count = connections.len();
        for connection in connections {
            if let Err(e) = self
                .close(&connection.id, code, "disconnected by the server")
                .await
            {
                tracing::warn!(connection = %connection.id, error = %e, "disconnect failed");
            }
        }
        Ok(count)
    }
}
