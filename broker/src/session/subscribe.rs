//! Storing a subscription (its document registered, the app's hook asked, the connection's
//! limit and the user's limits kept, a resume begun), and ending one at the client's
//! request.

use crate::Broker;
use crate::domain::{
    Connection, ConnectionId, Subscription, SubscriptionKey, TOMBSTONE_SECS, UserId, now_ms,
    now_secs,
};
use crate::graphql::{self, errors_json};
use crate::hooks::Ending;
use crate::limits::{Gauge, rate_limited};
use crate::ports::{Inserted, StoreError};
use crate::protocol::{CloseCode, Protocol};
use crate::session::SessionError;

/// The rate counter of subscribes with `resumeFrom` ([`crate::limits`]).
const REPLAYS: &str = "replays";

impl Broker {
    /// Stores the subscription `request` asks for under `key`, once its document is known
    /// to be a subscription within the cost limits.
    pub(crate) async fn subscribe(
        &self,
        connection: &Connection,
        user: UserId,
        key: SubscriptionKey,
        request: async_graphql::Request,
    ) -> Result<(), SessionError> {
        let id = &connection.id;
        let protocol = connection.protocol;
        let operation_id = key.operation_id.clone();
        // A cheap early refusal; the insert below checks the limit again, atomically.
        let limit = self.config().max_subscriptions_per_connection;
        if self.ports().subscriptions.count_by_connection(id).await? >= limit {
            return self.refuse_over_limit(id, protocol, &operation_id).await;
        }

        let resume_from = match crate::resume::cursor(&request, now_ms()) {
            Ok(cursor) => cursor,
            Err(message) => {
                let errors = vec![serde_json::json!({"message": message})];
                return self.post(id, &protocol.error(&operation_id, errors)).await;
            }
        };
        let document = request.query.clone();
        let operation_name = request.operation_name.clone();
        let variables = request
            .variables
            .clone()
            .into_value()
            .into_json()
            .unwrap_or_default();
        let registration = self.request_data(user.clone(), request);
        let registered = match graphql::register(self.inner.executor.as_ref(), registration).await {
            Ok(registered) => registered,
            Err(errors) => {
                let frame = protocol.error(&operation_id, errors_json(&errors));
                return self.post(id, &frame).await;
            }
        };
        let mut subscription = Subscription {
            key,
            topic: registered.topic,
            protocol,
            principal: user,
            document,
            operation_name,
            variables,
            // No event reaches it once the token has expired: the stores hide expired
            // subscriptions from delivery.
            expires_at: connection
                .authorized_until
                .map_or(connection.expires_at, |exp| exp.min(connection.expires_at)),
            starts_at_ms: 0,
            replaying_until_ms: 0,
            public: registered.public,
        };
        if let Err(refusal) = self.hooks().on_subscribe(&subscription).await {
            let error = async_graphql::ServerError::new(refusal.to_string(), None);
            let frame = protocol.error(&operation_id, errors_json(&[error]));
            return self.post(id, &frame).await;
        }
        // The user's limits, before anything is read of the log: a replay counts against
        // the user's rate of replays, and the subscription takes one of the user's slots
        // (given back below unless it is stored).
        let replays = self.config().replay_rate;
        if resume_from.is_some()
            && !self
                .take_rate(REPLAYS, replays, &subscription.principal)
                .await?
        {
            let message = format!(
                "too many resumes: at most {} per {} s; re-query, and subscribe without resumeFrom",
                replays.max,
                replays.window.as_secs_f64()
            );
            return self
                .refuse_rate_limited(id, protocol, &operation_id, message)
                .await;
        }
        let user = subscription.principal.clone();
        if !self.take_slot(Gauge::Subscriptions, &user).await? {
            let limit = self.config().max_subscriptions_per_user;
            let message = format!("too many subscriptions: a user may hold at most {limit}");
            return self
                .refuse_rate_limited(id, protocol, &operation_id, message)
                .await;
        }
        let replay = match resume_from {
            Some(cursor) => match self.replay_begin(&subscription, cursor).await {
                Ok(replay) => replay,
                Err(error) => {
                    self.release_slots(Gauge::Subscriptions, &user, 1).await;
                    return Err(error);
                }
            },
            None => None,
        };
        // Stamped when stored: live delivery starts here, the replay covers what came before,
        // and holds live delivery back until it hands over.
        subscription.starts_at_ms = now_ms().max(replay.as_ref().map_or(0, |r| r.live_from_ms()));
        if replay.is_some() {
            subscription.replaying_until_ms = self.replaying_until(subscription.starts_at_ms);
        }
        let stored = self
            .ports()
            .subscriptions
            .insert_within(&subscription, limit)
            .await;
        if !matches!(stored, Ok(Inserted::Stored)) {
            self.release_slots(Gauge::Subscriptions, &user, 1).await;
        }
        match stored {
            Ok(Inserted::Stored) => match replay {
                Some(replay) => {
                    let stored = now_ms().max(subscription.starts_at_ms);
                    let finished = self.replay_finish(&subscription, replay, stored).await;
                    // Stored replaying, with events held back for a replay that cannot go
                    // on: the client resumes again rather than living with a gap.
                    if let Err(error) = finished {
                        tracing::warn!(subscription = %subscription.key.encode(), %error, "replay failed; closing");
                        return self
                            .close(id, CloseCode::InternalError, "replay failed; resume again")
                            .await;
                    }
                    Ok(())
                }
                None => Ok(()),
            },
            // The client completed it before this `subscribe` was handled: it is over, and
            // the client expects nothing more of it.
            Ok(Inserted::Completed) => {
                self.hooks()
                    .on_complete(&subscription.key, Ending::Client)
                    .await;
                Ok(())
            }
            // `$disconnect` was handled first: there is nobody to tell.
            Ok(Inserted::ConnectionClosed) => Ok(()),
            Err(StoreError::Conflict(_)) => self.reject_duplicate(id, &operation_id).await,
            Err(StoreError::LimitReached(_)) => {
                self.refuse_over_limit(id, protocol, &operation_id).await
            }
            Err(e) => Err(e.into()),
        }
    }

    /// `complete` (legacy `stop`) from the client: the subscription ends, and a legacy client
    /// is answered with `complete`.
    pub(crate) async fn stop(
        &self,
        connection: &Connection,
        op: String,
    ) -> Result<(), SessionError> {
        let id = &connection.id;
        let key = SubscriptionKey {
            connection_id: id.clone(),
            operation_id: op,
        };
        // Before its `subscribe` was handled (API Gateway keeps no order), this
        // leaves a tombstone that the `subscribe` respects.
        let until = now_secs() + TOMBSTONE_SECS;
        if !self.ports().subscriptions.complete(&key, until).await? {
            return Ok(());
        }
        if let Some(user) = &connection.principal {
            self.release_slots(Gauge::Subscriptions, user, 1).await;
        }
        self.hooks().on_complete(&key, Ending::Client).await;
        // A legacy `stop` of a stored subscription is answered by `complete`, as
        // subscriptions-transport-ws servers do; after a `graphql-transport-ws`
        // client's `complete` the server sends nothing more for the id.
        match connection.protocol {
            Protocol::GraphqlWs => {
                let complete = connection.protocol.complete(&key.operation_id);
                self.post(id, &complete).await
            }
            Protocol::GraphqlTransportWs => Ok(()),
        }
    }

    /// The `error` for a subscribe over the connection's limit; the connection stays open.
    async fn refuse_over_limit(
        &self,
        id: &ConnectionId,
        protocol: Protocol,
        operation_id: &str,
    ) -> Result<(), SessionError> {
        let limit = self.config().max_subscriptions_per_connection;
        let error = async_graphql::ServerError::new(
            format!("a connection may hold at most {limit} subscriptions"),
            None,
        );
        self.post(id, &protocol.error(operation_id, errors_json(&[error])))
            .await
    }

    /// The `error` for a subscribe over one of the user's limits (`extensions.code`
    /// [`crate::RATE_LIMITED`]); the connection stays open.
    async fn refuse_rate_limited(
        &self,
        id: &ConnectionId,
        protocol: Protocol,
        operation_id: &str,
        message: String,
    ) -> Result<(), SessionError> {
        let error = rate_limited(message);
        self.post(id, &protocol.error(operation_id, errors_json(&[error])))
            .await
    }

    pub(crate) async fn reject_duplicate(
        &self,
        id: &ConnectionId,
        operation_id: &str,
    ) -> Result<(), SessionError> {
        let reason = format!("Subscriber for {operation_id} already exists");
        self.close(id, CloseCode::SubscriberAlreadyExists, &reason)
            .await
    }
}
