//! The WebSocket routes. Every call is stateless: what a connection has agreed to so far
//! (protocol, user, `connection_init`) lives in the connection store, so any process can
//! handle the next message of any connection.

use async_graphql::http::ClientMessage;
use async_graphql::parser::types::OperationType;

use crate::Broker;
use crate::auth::{AuthError, Identity, token_from_init_payload};
use crate::domain::{
    CONNECTION_LIFETIME_SECS, Connection, ConnectionId, Subscription, SubscriptionKey,
    TOMBSTONE_SECS, now_ms, now_secs,
};
use crate::graphql::{self, errors_json};
use crate::hooks::Ending;
use crate::ports::{GatewayError, Inserted, StoreError};
use crate::protocol::{CloseCode, Protocol, parse_client_message};

/// Operation ids are chosen by clients and become part of storage keys and queue messages:
/// bounded, so a key stays far below DynamoDB's sort-key limit and a fan-out page far below
/// SQS's message size.
pub const MAX_OPERATION_ID_BYTES: usize = 128;

/// The answer to `$connect`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConnectOutcome {
    /// Accept; echo `protocol` in `Sec-WebSocket-Protocol` when the client offered one.
    Accepted { protocol: Option<Protocol> },
    /// Refuse the upgrade with this HTTP status; nothing was stored.
    Rejected { status: u16, reason: String },
}

/// A failure of the broker's own dependencies (not of the client): the route answers 500
/// and the platform's retry or the client's reconnect takes over.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Gateway(#[from] GatewayError),
}

impl Broker {
    /// `$connect`: negotiate the subprotocol, authenticate the query-string token if there is
    /// one, store the connection.
    pub async fn connect(
        &self,
        id: ConnectionId,
        protocols_header: Option<&str>,
        token: Option<&str>,
    ) -> Result<ConnectOutcome, SessionError> {
        let offered = match Protocol::negotiate(protocols_header) {
            Ok(p) => p,
            Err(e) => {
                return Ok(ConnectOutcome::Rejected {
                    status: 400,
                    reason: e.to_string(),
                });
            }
        };
        let identity = match token {
            Some(token) => self.authenticator().authenticate(token).await.map(Some),
            None => Ok(None),
        };
        let identity = match identity {
            Ok(identity) => identity,
            Err(e) => {
                return Ok(ConnectOutcome::Rejected {
                    status: 401,
                    reason: e.to_string(),
                });
            }
        };
        let connected_at_ms = now_ms();
        let connection = Connection {
            id,
            protocol: offered.unwrap_or(Protocol::GraphqlTransportWs),
            principal: identity.as_ref().map(|i| i.user.clone()),
            initialised: false,
            connected_at_ms,
            expires_at: connected_at_ms / 1000 + CONNECTION_LIFETIME_SECS,
            authorized_until: identity.map(|i| i.expires_at),
        };
        if let Err(refusal) = self.hooks().on_connect(&connection).await {
            return Ok(ConnectOutcome::Rejected {
                status: 403,
                reason: refusal.to_string(),
            });
        }
        self.ports().connections.put(&connection).await?;
        Ok(ConnectOutcome::Accepted { protocol: offered })
    }

    /// Closes the connection with 4408 if it has not been initialised yet. A gateway that can
    /// keep timers (the local one) calls this `init_timeout` after `$connect`; on API Gateway
    /// a late `connection_init` gets the same answer.
    pub async fn enforce_init_timeout(&self, id: &ConnectionId) -> Result<(), SessionError> {
        match self.ports().connections.get(id).await? {
            Some(connection) if !connection.initialised => {
                self.close(
                    id,
                    CloseCode::InitTimeout,
                    "Connection initialisation timeout",
                )
                .await
            }
            _ => Ok(()),
        }
    }

    /// `$disconnect`: forget the connection and everything it subscribed to.
    pub async fn disconnect(&self, id: &ConnectionId) -> Result<(), SessionError> {
        if self.has_hooks() {
            let connection = self.ports().connections.get(id).await?;
            self.hooks().on_disconnect(id, connection.as_ref()).await;
        }
        self.forget_connection(id).await
    }

    /// `$default`: one text frame from the client.
    pub async fn receive(&self, id: &ConnectionId, text: &str) -> Result<(), SessionError> {
        let Some(connection) = self.ports().connections.get(id).await? else {
            // Expired or never connected through `$connect`: nothing to talk about.
            return self
                .close(id, CloseCode::BadRequest, "unknown connection")
                .await;
        };
        if connection.authority_expired(now_secs()) {
            return self.close_expired(id).await;
        }
        let message = match parse_client_message(connection.protocol, text) {
            Ok(m) => m,
            Err(reason) => return self.close(id, CloseCode::BadRequest, &reason).await,
        };
        match message {
            ClientMessage::ConnectionInit { payload } => self.init(&connection, payload).await,
            ClientMessage::Ping { payload } => match connection.protocol.pong(payload) {
                Some(pong) => self.post(id, &pong).await,
                None => Ok(()),
            },
            ClientMessage::Pong { .. } => Ok(()),
            ClientMessage::Start { id: op, payload } => self.start(&connection, op, payload).await,
            ClientMessage::Stop { id: op } => {
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
            ClientMessage::ConnectionTerminate => {
                self.close(id, CloseCode::Normal, "terminated by the client")
                    .await
            }
        }
    }

    async fn init(
        &self,
        connection: &Connection,
        payload: Option<serde_json::Value>,
    ) -> Result<(), SessionError> {
        let id = &connection.id;
        if connection.initialised {
            return self
                .close(
                    id,
                    CloseCode::TooManyInitRequests,
                    "Too many initialisation requests",
                )
                .await;
        }
        let waited = now_ms().saturating_sub(connection.connected_at_ms);
        if waited > self.config().init_timeout.as_millis() as u64 {
            return self
                .close(
                    id,
                    CloseCode::InitTimeout,
                    "Connection initialisation timeout",
                )
                .await;
        }
        let identity = match self.init_identity(connection, payload.as_ref()).await {
            Ok(identity) if identity.expires_at <= now_secs() => {
                // Within the verifier's clock-skew leeway, but past `exp`.
                return self.close_expired(id).await;
            }
            Ok(identity) => identity,
            Err(e) => {
                if let Some(frame) = connection.protocol.connection_error(&e.to_string()) {
                    self.post(id, &frame).await?;
                }
                // 4403 for an expired token: stock clients reconnect with a fresh one, while
                // they give up on 4401.
                return match e {
                    AuthError::Expired => self.close_expired(id).await,
                    _ => {
                        self.close(id, CloseCode::Unauthorized, "Unauthorized")
                            .await
                    }
                };
            }
        };
        let accepted = Connection {
            principal: Some(identity.user.clone()),
            authorized_until: Some(identity.expires_at),
            ..connection.clone()
        };
        if let Err(refusal) = self.hooks().on_init(&accepted, payload.as_ref()).await {
            return self
                .close(id, CloseCode::Forbidden, &refusal.to_string())
                .await;
        }
        let marked = self
            .ports()
            .connections
            .mark_initialised(id, &identity.user, identity.expires_at)
            .await;
        match marked {
            Ok(()) => {}
            // Two inits raced and the other one won.
            Err(StoreError::Conflict(_)) => {
                return self
                    .close(
                        id,
                        CloseCode::TooManyInitRequests,
                        "Too many initialisation requests",
                    )
                    .await;
            }
            Err(e) => return Err(e.into()),
        }
        self.post(id, &connection.protocol.ack()).await
    }

    /// The user a `connection_init` makes the connection speak for, and until when: its
    /// payload's token, or the token verified at `$connect`. When both are given they must
    /// name the same user.
    async fn init_identity(
        &self,
        connection: &Connection,
        payload: Option<&serde_json::Value>,
    ) -> Result<Identity, AuthError> {
        match (token_from_init_payload(payload), &connection.principal) {
            (Some(token), at_connect) => {
                let identity = self.authenticator().authenticate(token).await?;
                match at_connect {
                    Some(other) if *other != identity.user => Err(AuthError::invalid(
                        "the init token names another user than the connect token",
                    )),
                    _ => Ok(identity),
                }
            }
            (None, Some(user)) => Ok(Identity {
                user: user.clone(),
                // Roles reach HTTP resolvers only; a connection does not keep them.
                roles: Vec::new(),
                // Set with the principal at `$connect`.
                expires_at: connection.authorized_until.unwrap_or(0),
            }),
            (None, None) => Err(AuthError::MissingToken),
        }
    }

    /// Closes a connection whose token has expired with 4403, which stock clients answer by
    /// reconnecting with a fresh token (`graphql-ws` re-reads `connectionParams`).
    pub async fn close_expired(&self, id: &ConnectionId) -> Result<(), SessionError> {
        self.close(id, CloseCode::Forbidden, "token expired").await
    }

    /// The second at which this connection's authority ends, if it has a principal yet; a
    /// gateway that can keep timers (the local one) closes the socket then with
    /// [`Self::enforce_token_expiry`].
    pub async fn authority_deadline(&self, id: &ConnectionId) -> Result<Option<u64>, SessionError> {
        Ok(self
            .ports()
            .connections
            .get(id)
            .await?
            .and_then(|c| c.authorized_until))
    }

    /// Closes the connection with 4403 if its token has expired.
    pub async fn enforce_token_expiry(&self, id: &ConnectionId) -> Result<(), SessionError> {
        match self.ports().connections.get(id).await? {
            Some(connection) if connection.authority_expired(now_secs()) => {
                self.close_expired(id).await
            }
            _ => Ok(()),
        }
    }

    async fn start(
        &self,
        connection: &Connection,
        operation_id: String,
        request: async_graphql::Request,
    ) -> Result<(), SessionError> {
        let id = &connection.id;
        let protocol = connection.protocol;
        let user = match (&connection.principal, connection.initialised) {
            (Some(user), true) => user.clone(),
            _ => {
                return self
                    .close(id, CloseCode::Unauthorized, "Unauthorized")
                    .await;
            }
        };
        if operation_id.is_empty() || operation_id.len() > MAX_OPERATION_ID_BYTES {
            let reason = format!("operation id must have 1 to {MAX_OPERATION_ID_BYTES} bytes");
            return self.close(id, CloseCode::BadRequest, &reason).await;
        }

        let key = SubscriptionKey {
            connection_id: id.clone(),
            operation_id: operation_id.clone(),
        };
        // Parsed and priced once, before any resolver runs; the parsed document travels
        // with the request.
        let prepared = self.prepare(request);
        if !matches!(prepared, Ok((_, OperationType::Subscription))) {
            // Its `complete` (or `error`) would end the client's subscription of the same id.
            if self.ports().subscriptions.contains(&key).await? {
                return self.reject_duplicate(id, &operation_id).await;
            }
        }
        let request = match prepared {
            Ok((request, OperationType::Subscription)) => request,
            Ok((request, _)) => {
                let response = self.execute_prepared(user, request).await;
                let payload = serde_json::to_string(&response)
                    .expect("a GraphQL response serializes to JSON");
                self.post(id, &protocol.next(&operation_id, &payload))
                    .await?;
                return self.post(id, &protocol.complete(&operation_id)).await;
            }
            // Over budget or not a document: refused before execution, as the protocol's
            // `error` message says ("usually due to validation errors").
            Err(error) => {
                let frame = protocol.error(&operation_id, errors_json(&[error]));
                return self.post(id, &frame).await;
            }
        };

        // A cheap early refusal; the insert below checks the limit again, atomically.
        let limit = self.config().max_subscriptions_per_connection;
        if self.ports().subscriptions.count_by_connection(id).await? >= limit {
            return self.refuse_over_limit(id, protocol, &operation_id).await;
        }

        let resume_from = match crate::resume::cursor(&request) {
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
        let topic = match graphql::register(self.inner.executor.as_ref(), registration).await {
            Ok(topic) => topic,
            Err(errors) => {
                let frame = protocol.error(&operation_id, errors_json(&errors));
                return self.post(id, &frame).await;
            }
        };
        let mut subscription = Subscription {
            key,
            topic,
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
        };
        if let Err(refusal) = self.hooks().on_subscribe(&subscription).await {
            let error = async_graphql::ServerError::new(refusal.to_string(), None);
            let frame = protocol.error(&operation_id, errors_json(&[error]));
            return self.post(id, &frame).await;
        }
        let replay = match resume_from {
            Some(cursor) => self.replay_begin(&subscription, cursor).await?,
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

    async fn reject_duplicate(
        &self,
        id: &ConnectionId,
        operation_id: &str,
    ) -> Result<(), SessionError> {
        let reason = format!("Subscriber for {operation_id} already exists");
        self.close(id, CloseCode::SubscriberAlreadyExists, &reason)
            .await
    }

    pub(crate) async fn post(&self, id: &ConnectionId, frame: &str) -> Result<(), SessionError> {
        match self.ports().gateway.post(id, frame).await {
            Ok(()) => Ok(()),
            Err(GatewayError::Gone) => self.forget_connection(id).await,
            Err(e) => Err(e.into()),
        }
    }

    /// Closes a connection and forgets it at once: the platform's `$disconnect` will come
    /// too, but nothing of a refused connection may outlive this call.
    pub async fn close(
        &self,
        id: &ConnectionId,
        code: CloseCode,
        reason: &str,
    ) -> Result<(), SessionError> {
        tracing::info!(connection = %id, code = code.code(), reason, "closing connection");
        match self.ports().gateway.close(id, code, reason).await {
            Ok(()) | Err(GatewayError::Gone) => {}
            Err(e) => tracing::warn!(connection = %id, error = %e, "close failed"),
        }
        self.forget_connection(id).await
    }

    pub(crate) async fn forget_connection(&self, id: &ConnectionId) -> Result<(), SessionError> {
        // A `subscribe` of this connection still being handled stores nothing after this.
        let until = now_secs() + TOMBSTONE_SECS;
        self.ports()
            .subscriptions
            .close_connection(id, until)
            .await?;
        self.ports().connections.delete(id).await?;
        Ok(())
    }
}
