//! What the broker gives every request it runs: who is asking ([`crate::principal`]) and the
//! [`Outbox`] to publish through.

use serde::Serialize;

use crate::Broker;
use crate::domain::{Audience, Event, Principal, Topic, UserId};
use crate::publish::PublishError;

/// The handle resolvers publish changes with: `ctx.data::<Outbox>()?.publish(...)`.
///
/// In stream mode a published change is appended to the event log and the stream publisher
/// delivers it later; in direct mode it is delivered before `publish` returns.
#[derive(Clone, Debug)]
pub struct Outbox {
    broker: Broker,
}

impl Outbox {
    pub(crate) fn new(broker: Broker) -> Self {
        Self { broker }
    }

    /// Publishes `payload` on `topic` for `audience`: see [`Broker::publish`].
    pub async fn publish(
        &self,
        topic: Topic,
        payload: &impl Serialize,
        audience: Audience,
    ) -> Result<Event, PublishError> {
        self.broker.publish(topic, payload, audience).await
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
            .data(Principal { user })
            .data(Outbox::new(self.clone()))
    }
}
