//! What the broker gives every request it runs: who is asking ([`crate::principal`]) and the
//! [`Outbox`] to publish through.

use serde::Serialize;

use crate::Broker;
use crate::changes::Changes;
use crate::domain::{Audience, Event, Principal, Topic, UserId};
use crate::publish::PublishError;

/// The rate counter of publishes ([`crate::limits`]).
const PUBLISHES: &str = "publishes";

/// The handle resolvers publish changes with: `ctx.data::<Outbox>()?.publish(...)`.
///
/// In stream mode a published change is appended to the event log and the stream publisher
/// delivers it later; in direct mode it is delivered before `publish` returns.
///
/// Every publish counts against the caller's [`crate::BrokerConfig::publish_rate`] (the user
/// whose request runs, whoever the event is for): over it the publish fails with
/// [`PublishError::RateLimited`] and nothing is published.
#[derive(Clone, Debug)]
pub struct Outbox {
    broker: Broker,
    /// Whose request publishes.
    caller: UserId,
}

impl Outbox {
    pub(crate) fn new(broker: Broker, caller: UserId) -> Self {
        Self { broker, caller }
    }

    /// Publishes `payload` on `topic` for `audience`: see [`Broker::publish`]. Counted
    /// against the caller's publish rate first.
    pub async fn publish(
        &self,
        topic: Topic,
        payload: &impl Serialize,
        audience: Audience,
    ) -> Result<Event, PublishError> {
        let rate = self.broker.config().publish_rate;
        if !self.broker.take_rate(PUBLISHES, rate, &self.caller).await? {
            return Err(PublishError::RateLimited(rate));
        }
        self.broker.publish(topic, payload, audience).await
    }

    /// Saves `changes` (the mutation's own writes) and publishes `payload` on `topic` for
    /// `audience` in one commit: both are stored or neither. See [`Broker::publish_with`].
    /// Counted against the caller's publish rate first, and refused for its audience or its
    /// size before anything is written. A `PUBLISH_TIMEOUT` ([`crate::publish_error`]) then
    /// means nothing was saved.
    pub async fn publish_with(
        &self,
        changes: Changes,
        topic: Topic,
        payload: &impl Serialize,
        audience: Audience,
    ) -> Result<Event, PublishError> {
        let rate = self.broker.config().publish_rate;
        if !self.broker.take_rate(PUBLISHES, rate, &self.caller).await? {
            return Err(PublishError::RateLimited(rate));
        }
        self.broker
            .publish_with(&changes, topic, payload, audience)
            .await
    }

    /// Ends subscriptions (a deleted board's, a user's who lost access): see
    /// [`Broker::end_subscriptions`].
    pub async fn end_subscriptions(
        &self,
        which: crate::SubscriptionsOf,
    ) -> Result<usize, crate::StoreError> {
        self.broker.end_subscriptions(which).await
    }
}

impl Broker {
    /// What every request the broker runs can reach: who is asking, and how to publish.
    pub(crate) fn request_data(
        &self,
        user: UserId,
        request: async_graphql::Request,
    ) -> async_graphql::Request {
        request
            .data(Outbox::new(self.clone(), user.clone()))
            .data(Principal { user })
    }
}
