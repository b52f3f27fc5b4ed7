//! Ending subscriptions from the server side: a board is deleted, a user loses access, an
//! account is closed. Each subscription ended gets its `complete` frame (both subprotocols
//! have one), so the client knows nothing more is coming and nothing keeps listening.

use futures_util::StreamExt;
use futures_util::stream;

use crate::Broker;
use crate::domain::{ConnectionId, SubscriptionKey, Topic, UserId};
use crate::hooks::Ending;
use crate::ports::StoreError;
use crate::protocol::Protocol;

/// Which subscriptions to end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SubscriptionsOf {
    /// One subscription.
    One(SubscriptionKey),
    /// Every subscription of one connection (the connection stays open).
    Connection(ConnectionId),
    /// Every subscription of every connection of one user.
    User(UserId),
    /// Every subscription to one topic (the thing it is about is gone).
    Topic(Topic),
    /// One user's subscriptions to one topic (that user lost access to it).
    UserOnTopic {
        /// The user whose subscriptions end.
        user: UserId,
        /// The topic they listen to.
        topic: Topic,
    },
}

impl Broker {
    /// Ends the subscriptions `which` names: each is removed from the store and its client
    /// receives `complete`. Returns how many were ended. Ending is immediate in both delivery
    /// modes; events of an ended subscription still on their way find nobody to deliver to.
    /// Apps call it from a resolver through [`crate::Outbox::end_subscriptions`]; backends
    /// call it on a broker of their own.
    pub async fn end_subscriptions(&self, which: SubscriptionsOf) -> Result<usize, StoreError> {
        let targets = self.subscriptions_of(which).await?;
        let ended = stream::iter(targets)
            .map(|(key, protocol)| async move { self.end_one(key, protocol).await })
            .buffer_unordered(self.config().post_concurrency)
            .collect::<Vec<Result<bool, StoreError>>>()
            .await;
        let mut count = 0;
        for outcome in ended {
            if outcome? {
                count += 1;
            }
        }
        Ok(count)
    }

    /// The subscriptions to end, with the protocol their `complete` is written in (`None`
    /// when their connection is gone: removed without a frame).
    async fn subscriptions_of(
        &self,
        which: SubscriptionsOf,
    ) -> Result<Vec<(SubscriptionKey, Option<Protocol>)>, StoreError> {
        let ports = self.ports();
        Ok(match which {
            SubscriptionsOf::One(key) => {
                let connection = ports.connections.get(&key.connection_id).await?;
                vec![(key, connection.map(|c| c.protocol))]
            }
            SubscriptionsOf::Connection(id) => {
                let protocol = ports.connections.get(&id).await?.map(|c| c.protocol);
                let keys = ports.subscriptions.by_connection(&id).await?;
                keys.into_iter().map(|k| (k, protocol)).collect()
            }
            SubscriptionsOf::User(user) => {
                let mut targets = Vec::new();
                for connection in ports.connections.by_user(&user).await? {
                    let keys = ports.subscriptions.by_connection(&connection.id).await?;
                    targets.extend(keys.into_iter().map(|k| (k, Some(connection.protocol))));
                }
                targets
            }
            SubscriptionsOf::Topic(topic) => ports
                .subscriptions
                .by_topic(&topic)
                .await?
                .into_iter()
                .map(|s| (s.key, Some(s.protocol)))
                .collect(),
            SubscriptionsOf::UserOnTopic { user, topic } => ports
                .subscriptions
                .by_topic(&topic)
                .await?
                .into_iter()
                .filter(|s| s.principal == user)
                .map(|s| (s.key, Some(s.protocol)))
                .collect(),
        })
    }

    /// Removes one subscription and, if this call removed it (the client may have sent its
    /// own `complete` meanwhile), tells the client. A failed post is logged: the
    /// subscription is gone either way.
    async fn end_one(
        &self,
        key: SubscriptionKey,
        protocol: Option<Protocol>,
    ) -> Result<bool, StoreError> {
        if !self.ports().subscriptions.delete(&key).await? {
            return Ok(false);
        }
        self.hooks().on_complete(&key, Ending::Server).await;
        if let Some(protocol) = protocol {
            let frame = protocol.complete(&key.operation_id);
            if let Err(e) = self.post(&key.connection_id, &frame).await {
                tracing::warn!(subscription = %key.encode(), error = %e, "complete not sent");
            }
        }
        Ok(true)
    }
}
