//! Publishing: an event is stamped, stored in the log within its deadline, and (in direct
//! mode) delivered before the publish returns.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::changes::Changes;
use crate::config::RateLimit;
use crate::domain::{Audience, Event, Topic, now_ms};
use crate::graphql::internal_error;
use crate::limits::RATE_LIMITED;
use crate::ports::StoreError;
use crate::{Broker, DeliveryMode};

/// Why an event was not published.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The payload did not serialize to JSON.
    #[error("event payload is not JSON: {0}")]
    Payload(#[from] serde_json::Error),
    /// The event log failed to store the event.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The event was not stored within [`crate::BrokerConfig::publish_deadline`] of its
    /// stamp, and the broker delivered nothing. A remote log may still store it later (in
    /// stream mode it is then delivered late). What the mutation saved before publishing
    /// stays saved: publishing again makes another event, with a new id.
    #[error("the event was not stored within {} ms; it may still be stored, and then reach subscribers late", .0.as_millis())]
    TimedOut(Duration),
    /// The event and the app's writes committed with it ([`Broker::publish_with`]) could
    /// not commit within [`crate::BrokerConfig::publish_deadline`] of the event's stamp:
    /// nothing was saved, and nothing will be. The mutation can be tried again.
    #[error("the change and its event were not stored within {} ms: nothing was saved; try again", .0.as_millis())]
    NotSaved(Duration),
    /// The app's writes and the event do not fit one commit ([`crate::changes::MAX_ITEMS`],
    /// [`crate::changes::MAX_BYTES`], one change per key): nothing was stored.
    #[error("the change is too large to commit with its event: {0}")]
    TooLarge(String),
    /// The event's audience names no user an event could ever be delivered to
    /// ([`check_audience`]): nothing was stored.
    #[error("invalid audience: {0}")]
    Audience(String),
    /// The caller has published as many events as [`crate::BrokerConfig::publish_rate`]
    /// allows in its current window; nothing was published.
    #[error("too many publishes: at most {} per {} ms; try again later", .0.max, .0.window.as_millis())]
    RateLimited(RateLimit),
}

/// The `extensions.code` of the GraphQL error for a publish that timed out
/// ([`PublishError::TimedOut`], through [`crate::publish_error`]).
pub const PUBLISH_TIMEOUT: &str = "PUBLISH_TIMEOUT";

/// The `extensions.code` of the GraphQL error for a publish refused because of its audience
/// ([`PublishError::Audience`], through [`crate::publish_error`]).
pub const INVALID_AUDIENCE: &str = "INVALID_AUDIENCE";

/// The GraphQL error for a publish that failed: [`internal_error`], except a publish that
/// timed out, which tells the client so (`extensions.code` `PUBLISH_TIMEOUT`): after
/// [`Broker::publish`] what the mutation saved before is saved, but its subscribers were
/// not told, so the client should re-query rather than count on the event; after
/// [`Broker::publish_with`] nothing was saved ([`PublishError::NotSaved`]), as the message
/// says; one refused for its audience
/// (`extensions.code` `INVALID_AUDIENCE`, saying why); and a publish over the caller's rate
/// (`extensions.code` [`RATE_LIMITED`]), which published nothing.
pub fn publish_error(error: PublishError) -> async_graphql::Error {
    use async_graphql::ErrorExtensions;
    let code = match error {
        PublishError::TimedOut(_) | PublishError::NotSaved(_) => PUBLISH_TIMEOUT,
        PublishError::Audience(_) => INVALID_AUDIENCE,
        PublishError::RateLimited(_) => RATE_LIMITED,
        other => return internal_error(other),
    };
    async_graphql::Error::new(error.to_string()).extend_with(|_, e| e.set("code", code))
}

/// Whether an event for `audience` can be delivered: a user audience must name a user id
/// a token could carry ([`crate::auth::user_id_problem`]), and not `*`, which the
/// DynamoDB log stores for everyone. An event that fails this could never reach anyone;
/// it is refused at publish, and the stream publisher gives it up without retrying.
pub fn check_audience(audience: &Audience) -> Result<(), String> {
    match audience {
        Audience::Everyone => Ok(()),
        Audience::User(user) if user.as_str() == "*" => {
            Err("`*` is not a user id (an event for everyone has the audience Everyone)".into())
        }
        Audience::User(user) => match crate::auth::user_id_problem(user.as_str()) {
            Some(problem) => Err(format!("the user id {problem}")),
            None => Ok(()),
        },
    }
}

/// An event's size as the commit limit counts it: its JSON text.
fn event_size(event: &Event) -> usize {
    serde_json::to_string(event).map_or(0, |text| text.len())
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
        self.publish_with(&Changes::new(), topic, payload, audience)
            .await
    }

    /// Saves an app's writes and publishes their event in one commit: both are stored, or
    /// neither ([`crate::EventLog::append_with`]); then, in direct mode, delivers the event
    /// as [`Self::publish`] does. Refused before anything is written when the audience
    /// cannot be delivered to or the changes do not fit one commit
    /// ([`PublishError::TooLarge`]); a failed condition of a change is
    /// [`PublishError::Store`] with [`StoreError::Conflict`]; not committed within the
    /// deadline, [`PublishError::NotSaved`]. With no change, it is [`Self::publish`].
    pub async fn publish_with(
        &self,
        changes: &Changes,
        topic: Topic,
        payload: &impl Serialize,
        audience: Audience,
    ) -> Result<Event, PublishError> {
        check_audience(&audience).map_err(PublishError::Audience)?;
        let mut event = Event::new(topic, serde_json::to_value(payload)?, audience);
        event.expires_at = event.published_at_ms / 1000 + self.config().event_retention.as_secs();
        if let Some(why) = changes.too_large(event_size(&event)) {
            return Err(PublishError::TooLarge(why));
        }
        match self.config().delivery_mode {
            DeliveryMode::Stream => self.append_in_time(changes, &event).await?,
            DeliveryMode::Direct => {
                // Logged first, marked as delivered here: a subscriber that misses it can
                // resume from the log, and the stream publisher leaves it alone.
                event.direct = true;
                self.append_in_time(changes, &event).await?;
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
    ///
    /// With changes, the log commits them with the event or neither: past the deadline it
    /// stores nothing ([`PublishError::NotSaved`]), and a condition that failed is the
    /// caller's answer.
    async fn append_in_time(&self, changes: &Changes, event: &Event) -> Result<(), PublishError> {
        let deadline = self.config().publish_deadline();
        let by = event
            .published_ms()
            .saturating_add(deadline.as_millis() as u64);
        let events = &self.ports().events;
        let stored = if changes.is_empty() {
            events.append_by(event, by).await
        } else {
            events.append_with(changes, event, by).await
        };
        let error = match stored {
            Ok(()) => return Ok(()),
            Err(StoreError::TooLate) if !changes.is_empty() => {
                tracing::warn!(event = %event.id, topic = %event.topic, deadline_ms = deadline.as_millis() as u64, "publish timed out; nothing saved");
                crate::metrics::record_publish_timeout();
                return Err(PublishError::NotSaved(deadline));
            }
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
    ///
    /// After a commit with changes whose answer said the event was there already (a retry
    /// of one that was made), the changes were made with it.
    async fn stored_as_is(&self, event: &Event) -> Result<bool, StoreError> {
        let stored = self.ports().events.get(&event.reference()).await?;
        Ok(stored.as_ref() == Some(event))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::UserId;

    fn user(id: &str) -> Audience {
        Audience::User(UserId::new(id))
    }

    #[test]
    fn an_audience_no_token_could_name_is_refused() {
        assert_eq!(check_audience(&Audience::Everyone), Ok(()));
        assert_eq!(check_audience(&user("alice")), Ok(()));
        assert_eq!(check_audience(&user("é")), Ok(()));
        let longest = "u".repeat(crate::auth::MAX_SUBJECT_BYTES);
        assert_eq!(check_audience(&user(&longest)), Ok(()));
        let too_long = "u".repeat(crate::auth::MAX_SUBJECT_BYTES + 1);
        for bad in [
            "",
            "*",
            " ",
            "\u{3000}",
            "al\tice",
            "al\u{2028}ice",
            "\u{feff}alice",
            too_long.as_str(),
        ] {
            let refused = check_audience(&user(bad));
            assert!(refused.is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn a_refused_audience_is_a_graphql_error_with_its_code() {
        let error = publish_error(PublishError::Audience("the user id is empty".into()));
        let extensions = error.extensions.expect("extensions");
        assert_eq!(
            extensions.get("code"),
            Some(&async_graphql::Value::from(INVALID_AUDIENCE))
        );
        assert!(error.message.contains("the user id is empty"));
    }
}
