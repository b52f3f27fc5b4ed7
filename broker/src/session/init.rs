//! `connection_init`: who the connection speaks for and until when, and closing it when
//! that authority ends (4403), never began in time (4408), or would give its user more
//! sockets than [`crate::BrokerConfig::max_sockets_per_user`] (4429).

use crate::Broker;
use crate::auth::{AuthError, Identity, token_from_init_payload};
use crate::domain::{Connection, ConnectionId, now_ms, now_secs};
use crate::limits::Gauge;
use crate::ports::StoreError;
use crate::protocol::CloseCode;
use crate::session::{SessionError, too_many_sockets};

impl Broker {
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

    pub(crate) async fn init(
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
                // Past the end of its authority (`exp` and the leeway): a verifier of the
                // app's own may hand such an identity back.
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
        // The connection gets its user now, unless its token at `$connect` gave it one (and
        // took the socket's slot then).
        let takes_slot = connection.principal.is_none();
        if takes_slot && !self.take_slot(Gauge::Sockets, &identity.user).await? {
            let limit = self.config().max_sockets_per_user;
            return self
                .close(id, CloseCode::TooManyInitRequests, &too_many_sockets(limit))
                .await;
        }
        let marked = self
            .ports()
            .connections
            .mark_initialised(id, &identity.user, identity.expires_at)
            .await;
        if marked.is_err() && takes_slot {
            self.release_slots(Gauge::Sockets, &identity.user, 1).await;
        }
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
}
