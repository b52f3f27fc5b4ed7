//! Resuming a subscription from the last event its client saw.
//!
//! A client passes `"resumeFrom": "<eventId>"` in the `extensions` of its `subscribe` (or
//! legacy `start`) payload: the `extensions.eventId` of the last message it received. It
//! then gets every event of the subscription's topic published after that one, rendered for
//! its document and authorised like live delivery, before the live events.
//!
//! The log is read by id (a ULID, whose time part is the publication time). Ids from
//! different processes are not in commit order, so an event stamped before the
//! subscription can be stored after a read of the log has passed its place, and an event
//! of another process can sort before the cursor yet be stored after the client saw the
//! cursor's event. The replay therefore reads the log more than once, deduplicating by id:
//! 1. before the subscription is stored, from `resume_settle` before the cursor's time on
//!    (the bulk of the replay; the client may get events of that short window again, with
//!    the ids it has), then again until it has caught up;
//! 2. right after it is stored: what was published during those reads;
//! 3. once [`BrokerConfig::resume_settle`](crate::BrokerConfig) has passed since it was
//!    stored, from shortly before the first read began: events whose store took that long
//!    after their stamp.
//!
//! Until the replay is over, live delivery posts nothing to the subscription: it is stored
//! replaying ([`Subscription::replaying_until_ms`]), and live delivery holds each event
//! back, counting it ([`crate::ReplayGate::hold`]). The replay is the one sender
//! meanwhile, so nothing live overtakes what it sends. It ends by handing over
//! ([`crate::ReplayGate::hand_over`]) on the condition that no event was held back
//! since its last read began (every held event was stored before it was held, so that
//! read found it); otherwise it reads once more. After the hand-over, live delivery posts
//! again: every live event comes after everything the replay sent, which it sent read by
//! read, each read in id order. An event of the hand-over's instant may arrive twice,
//! replayed and live, with the same id; none is missed.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::Broker;
use crate::domain::{Event, Subscription, now_ms, ulid_ms};
use futures_util::StreamExt;
use futures_util::stream;

use crate::delivery::DeliveryReport;
use crate::domain::SubscriptionKey;
use crate::ports::{HandOver, Hold, StoreError};
use crate::protocol::CloseCode;
use crate::session::SessionError;

/// The `extensions` key a client puts its last event id under.
pub const RESUME_FROM: &str = "resumeFrom";

/// The `extensions.code` of the GraphQL error a subscriber gets when its cursor is older
/// than the event retention (or further behind than one replay may send): events may be
/// missing, so it should re-query the current state. The subscription goes on live.
pub const RESUME_EXPIRED: &str = "RESUME_EXPIRED";

/// Events read from the log per request.
const PAGE: usize = 500;

/// Reads that catch up with the log before a resuming subscription is stored, each after
/// the posts of the one before.
const CATCH_UP_READS: usize = 4;

/// Reads of the log a replay makes to hand over while events keep being held back (a topic
/// busier than one read and its posts): past them it hands over whatever was held, and
/// reads once more to send it.
const HAND_OVER_READS: usize = 20;

/// How long after its replay's settle time a replaying subscription holds live delivery
/// back at most: a replay that has not handed over by then was lost with its process.
const HAND_OVER_WITHIN_MS: u64 = 10_000;

/// A resume in progress: what the first read sent.
pub(crate) struct Replay {
    /// The client has this one: never sent again.
    cursor: String,
    /// Every later read starts here: a ULID stamped `resume_settle` before the first read.
    floor: String,
    sent: HashSet<String>,
    /// The latest publication time (ms) among the events sent.
    latest_ms: u64,
}

impl Replay {
    /// The earliest time a live subscription may start at: after every event sent, so
    /// none of them reaches it live again (one of the same millisecond would).
    pub(crate) fn live_from_ms(&self) -> u64 {
        if self.sent.is_empty() {
            0
        } else {
            self.latest_ms + 1
        }
    }
}

/// The longest a cursor is taken for out of reach before the events after it leave the log:
/// the time a replay has to read them.
const REPLAY_MARGIN_MS: u64 = 5 * 60 * 1000;

/// Whether the events right after a cursor of `cursor_ms` may be gone from the log by the
/// time a replay begun at `now_ms` reads them. An event expires with the second it was
/// published in (its `expires_at` is whole seconds), so those of the cursor's second go
/// first, up to a second before `cursor_ms` plus the retention; a replay is given a tenth of
/// the retention (at most [`REPLAY_MARGIN_MS`]) before that.
fn out_of_reach(cursor_ms: u64, retention: std::time::Duration, now_ms: u64) -> bool {
    let gone_at_ms = (cursor_ms / 1000 + retention.as_secs()).saturating_mul(1000);
    let margin = (retention.as_millis() as u64 / 10).min(REPLAY_MARGIN_MS);
    gone_at_ms <= now_ms.saturating_add(margin)
}

/// The lowest id a replay from `cursor` reads: `settle` before the cursor's time.
fn last_before(cursor: &str, settle: u64) -> String {
    let ms = ulid_ms(cursor).unwrap_or_default();
    ulid::Ulid::from_parts(ms.saturating_sub(settle), 0).to_string()
}

/// How far ahead of this process's clock a cursor's time may be: the clocks of the process
/// that stamped the event and of this one may differ by this much. A cursor further ahead
/// names no event yet published, and a subscription starting from it would miss the events
/// published before that time.
pub const MAX_CURSOR_SKEW_MS: u64 = 1_000;

/// The event id a subscribe payload resumes from: `Ok(None)` without one, `Err` with the
/// message of a GraphQL error when it is not an event id (a ULID in its canonical range) or
/// names a time later than `now_ms` by more than [`MAX_CURSOR_SKEW_MS`].
pub(crate) fn cursor(
    request: &async_graphql::Request,
    now_ms: u64,
) -> Result<Option<String>, String> {
    let Some(value) = request.extensions.get(RESUME_FROM) else {
        return Ok(None);
    };
    let text = match value {
        async_graphql::Value::Null => return Ok(None),
        async_graphql::Value::String(text) => text,
        _ => {
            return Err(format!(
                "extensions.{RESUME_FROM} must be an event id (a string)"
            ));
        }
    };
    // Quoted back in part only: the client has the rest.
    let quoted = || {
        let start: String = text.chars().take(40).collect();
        let more = if start.len() < text.len() { "…" } else { "" };
        format!("{start:?}{more}")
    };
    let id = match ulid::Ulid::from_string(text) {
        // Canonical form: the log compares ids as strings. A text past the largest ULID
        // (`8ZZZ…`) decodes into a smaller one: its canonical form then differs.
        Ok(id) if id.to_string().eq_ignore_ascii_case(text) => id,
        _ => {
            return Err(format!(
                "extensions.{RESUME_FROM} is not an event id: {}",
                quoted()
            ));
        }
    };
    if id.timestamp_ms() > now_ms.saturating_add(MAX_CURSOR_SKEW_MS) {
        return Err(format!(
            "extensions.{RESUME_FROM} names a time after now: {}",
            quoted()
        ));
    }
    Ok(Some(id.to_string()))
}

impl Broker {
    /// The first read, before `subscription` is stored. `Ok(None)` when the cursor is out of
    /// reach (the client was told); the subscription then starts live.
    pub(crate) async fn replay_begin(
        &self,
        subscription: &Subscription,
        cursor: String,
    ) -> Result<Option<Replay>, SessionError> {
        let started = now_ms();
        let cursor_ms = ulid_ms(&cursor).unwrap_or_default();
        if out_of_reach(cursor_ms, self.config().event_retention, started) {
            self.resume_expired(subscription, "older than the event retention")
                .await?;
            return Ok(None);
        }
        let limit = self.config().max_replay_events;
        let settle = self.config().resume_settle.as_millis() as u64;
        let mut events = Vec::new();
        // From `resume_settle` before the cursor: an event of another process can have a
        // smaller id than the cursor and be stored after the client saw the cursor's event.
        // The client may get events of that window again, with their ids.
        let mut last = last_before(&cursor, settle);
        loop {
            let page = self
                .ports()
                .events
                .after(
                    &subscription.topic,
                    &last,
                    PAGE.min(limit + 1 - events.len()),
                )
                .await?;
            let Some(end) = page.last() else { break };
            last = end.id.clone();
            events.extend(page);
            if events.len() > limit {
                self.resume_expired(subscription, "further behind than one replay sends")
                    .await?;
                return Ok(None);
            }
        }
        let floor = ulid::Ulid::from_parts(started.saturating_sub(settle), 0).to_string();
        let mut replay = Replay {
            floor: floor.max(last_before(&cursor, settle)),
            cursor,
            sent: HashSet::new(),
            latest_ms: 0,
        };
        if !self.replay_send(subscription, &mut replay, events).await? {
            return Ok(None);
        }
        // Catch up with what was published while those were posted, before the subscription
        // is stored: live delivery starts then, and may overtake what the reads after it
        // find. What is left for them is what was published in the instant between the last
        // of these reads and the store.
        for _ in 0..CATCH_UP_READS {
            let page = self
                .ports()
                .events
                .after(&subscription.topic, &last, PAGE)
                .await?;
            let Some(end) = page.last() else { break };
            last = end.id.clone();
            if !self.replay_send(subscription, &mut replay, page).await? {
                return Ok(None);
            }
        }
        Ok(Some(replay))
    }

    /// Until when a replaying subscription stored at `stored_ms` holds live delivery back.
    pub(crate) fn replaying_until(&self, stored_ms: u64) -> u64 {
        let settle = self.config().resume_settle.as_millis() as u64;
        stored_ms
            .saturating_add(settle)
            .saturating_add(HAND_OVER_WITHIN_MS)
    }

    /// The reads after `subscription` was stored (at `stored`, a reading taken once the store
    /// answered), then the hand-over to live delivery.
    pub(crate) async fn replay_finish(
        &self,
        subscription: &Subscription,
        mut replay: Replay,
        stored: u64,
    ) -> Result<(), SessionError> {
        if !self.replay_read_and_send(subscription, &mut replay).await? {
            return Ok(());
        }
        let settled = stored + self.config().resume_settle.as_millis() as u64;
        let wait = settled.saturating_sub(now_ms());
        if wait > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
        }
        let replay_gate = &self.ports().replay_gate;
        let mut held = 0;
        for _ in 0..HAND_OVER_READS {
            if !self.replay_read_and_send(subscription, &mut replay).await? {
                return Ok(());
            }
            match replay_gate.hand_over(subscription, Some(held)).await? {
                HandOver::Done => return Ok(()),
                HandOver::Held(now) => held = now,
            }
        }
        // Events kept being held back faster than a read and its posts: hand over as it is,
        // then read once more. Whatever was held is in the log by now, so nothing is missed;
        // an event held in that instant may come after a live one.
        tracing::warn!(subscription = %subscription.key.encode(), "events kept being held back; handing over");
        replay_gate.hand_over(subscription, None).await?;
        self.replay_read_and_send(subscription, &mut replay).await?;
        Ok(())
    }

    /// Reads the log from the replay's floor and sends what was not sent yet. `false` when
    /// the replay is over: the connection is gone or was closed, or the client was told to
    /// re-query (and the subscription handed over).
    async fn replay_read_and_send(
        &self,
        subscription: &Subscription,
        replay: &mut Replay,
    ) -> Result<bool, SessionError> {
        let limit = self.config().max_replay_events;
        let mut events = Vec::new();
        let mut last = replay.floor.clone();
        loop {
            let page = self
                .ports()
                .events
                .after(&subscription.topic, &last, PAGE)
                .await?;
            let Some(end) = page.last() else { break };
            last = end.id.clone();
            events.extend(page);
            if events.len() > limit {
                self.resume_expired(subscription, "further behind than one replay sends")
                    .await?;
                self.ports()
                    .replay_gate
                    .hand_over(subscription, None)
                    .await?;
                return Ok(false);
            }
        }
        self.replay_send(subscription, replay, events).await
    }

    /// Sends the events not sent yet, in id order. A post that fails ends the subscription
    /// and closes the socket: the client reconnects and resumes from the last event it got,
    /// instead of living with a gap. `false` when the connection is gone or was closed.
    async fn replay_send(
        &self,
        subscription: &Subscription,
        replay: &mut Replay,
        events: Vec<Event>,
    ) -> Result<bool, SessionError> {
        // Rendered like live delivery (audience first, then the document as its user), but
        // without the start filter (these are the events before it), and never held back.
        let target = Subscription {
            starts_at_ms: 0,
            replaying_until_ms: 0,
            ..subscription.clone()
        };
        for event in events {
            if event.id == replay.cursor || !replay.sent.insert(event.id.clone()) {
                continue;
            }
            let id = event.id.clone();
            replay.latest_ms = replay.latest_ms.max(event.published_ms());
            let report = self
                .deliver_to(Arc::new(event), std::slice::from_ref(&target))
                .await;
            if report.gone > 0 {
                return Ok(false);
            }
            if report.failed > 0 {
                tracing::warn!(event = %id, subscription = %subscription.key.encode(), "replay failed; closing");
                self.close(
                    &subscription.key.connection_id,
                    crate::CloseCode::InternalError,
                    "replay failed; resume again",
                )
                .await?;
                return Ok(false);
            }
        }
        Ok(true)
    }

    async fn resume_expired(
        &self,
        subscription: &Subscription,
        why: &str,
    ) -> Result<(), SessionError> {
        let payload = serde_json::json!({
            "errors": [{
                "message": format!(
                    "cannot resume: the event id in {RESUME_FROM} is {why}; events may be missing, re-query the current state"
                ),
                "extensions": {"code": RESUME_EXPIRED},
            }],
        });
        let frame = subscription
            .protocol
            .next(&subscription.key.operation_id, &payload.to_string());
        self.post(&subscription.key.connection_id, &frame).await
    }
}

impl Broker {
    /// Leaves out of `admitted` the subscriptions whose resume is still replaying: the event
    /// is held back from each ([`crate::ReplayGate::hold`]), and its replay, which
    /// reads the log once more before it hands over, sends it. A replay that ran out of time
    /// without handing over may not have sent what it held: its connection is closed, so
    /// that the client resumes again instead of living with a gap.
    pub(crate) async fn hold_back_from_replays<'s>(
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_cursor_is_out_of_reach_before_the_events_of_its_second_expire() {
        let five = Duration::from_secs(5);
        // 306 ms into second 100: that second's events leave the log at 105 s.
        let cursor = 100_306;
        assert!(!out_of_reach(cursor, five, cursor + 1_000));
        // Inside the retention by the cursor's milliseconds, yet within the replay's margin
        // (half a second, a tenth of the retention) of its second's expiry.
        assert!(out_of_reach(cursor, five, cursor + 4_744));
        assert!(out_of_reach(cursor, five, 104_500));
        assert!(!out_of_reach(cursor, five, 104_499));
        // A day's retention gives a replay five minutes, not a tenth of the day.
        let day = Duration::from_secs(86_400);
        let gone = (100 + 86_400) * 1000;
        assert!(out_of_reach(cursor, day, gone - REPLAY_MARGIN_MS));
        assert!(!out_of_reach(cursor, day, gone - REPLAY_MARGIN_MS - 1));
    }

    fn resuming_from(cursor: &str) -> async_graphql::Request {
        let mut request = async_graphql::Request::new("subscription { a }");
        request.extensions.insert(
            RESUME_FROM.to_owned(),
            async_graphql::Value::String(cursor.to_owned()),
        );
        request
    }

    #[test]
    fn a_cursor_is_a_canonical_event_id_no_later_than_now() {
        let now = 1_800_000_000_000;
        let id = ulid::Ulid::from_parts(now - 5, 7).to_string();
        assert_eq!(cursor(&resuming_from(&id), now), Ok(Some(id.clone())));
        // Lower case is the same id, given back in its canonical form.
        let lower = id.to_ascii_lowercase();
        assert_eq!(cursor(&resuming_from(&lower), now), Ok(Some(id)));
        // Within the clocks' skew, and past it.
        let skewed = ulid::Ulid::from_parts(now + MAX_CURSOR_SKEW_MS, 0).to_string();
        assert!(cursor(&resuming_from(&skewed), now).is_ok());
        let ahead = ulid::Ulid::from_parts(now + MAX_CURSOR_SKEW_MS + 1, 0).to_string();
        let error = cursor(&resuming_from(&ahead), now).unwrap_err();
        assert!(error.contains("after now"), "{error}");
        // The largest ULID is in the year 10889; one past it overflows.
        for text in [
            "7ZZZZZZZZZZZZZZZZZZZZZZZZZ",
            "8ZZZZZZZZZZZZZZZZZZZZZZZZZ",
            "nope",
        ] {
            assert!(cursor(&resuming_from(text), now).is_err(), "{text}");
        }
    }
}
