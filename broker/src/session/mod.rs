//! The WebSocket routes. Every call is stateless: what a connection has agreed to so far
//! (protocol, user, `connection_init`) lives in the connection store, so any process can
//! handle the next message of any connection.
//!
//! - this module: `$connect`, `$disconnect`, `$default` (one message to its handler), and
//!   posting to or closing one connection;
//! - [`init`]: `connection_init`, and the token's authority over the connection;
//! - [`operation`]: `subscribe` (`start`): a query or mutation runs at once, a subscription
//!   goes on to [`subscribe`];
//! - [`subscribe`]: storing a subscription, and the client's `complete` (`stop`);
//! - [`resume`]: a subscription that resumes from an earlier event replays the log first.

pub mod init;
pub mod operation;
pub mod resume;
pub mod subscribe;

use async_graphql::http::ClientMessage;

use crate::Broker;
use crate::domain::{
    CONNECTION_LIFETIME_SECS, Connection, ConnectionId, TOMBSTONE_SECS, now_ms, now_secs,
};
use crate::limits::Gauge;
use crate::ports::{GatewayError, StoreError};
use crate::protocol::{CloseCode, Protocol, parse_client_message};

pub use operation::MAX_OPERATION_ID_BYTES;

/// The answer to `$connect`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConnectOutcome {
    /// Accept; echo `protocol` in `Sec-WebSocket-Protocol` when the client offered one.
    Accepted {
        /// The agreed subprotocol, `None` when the client offered none.
        protocol: Option<Protocol>,
    },
    /// Refuse the upgrade with this HTTP status; nothing was stored.
    Rejected {
        /// The HTTP status of the refusal, e.g. 400 or 403.
        status: u16,
        /// Why, as the client may see it.
        reason: String,
    },
}

/// Why a connection over [`crate::BrokerConfig::max_sockets_per_user`] is refused.
pub(crate) fn too_many_sockets(limit: u64) -> String {
    format!("too many sockets: a user may hold at most {limit} at once")
}

/// A failure of the broker's own dependencies (not of the client): the route answers 500
/// and the platform's retry or the client's reconnect takes over.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// A store the session reads or writes failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Posting to or closing a socket through the gateway failed.
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
        // The connection has its user now: it takes one of the user's sockets.
        if let Some(user) = &connection.principal
            && !self.take_slot(Gauge::Sockets, user).await?
        {
            return Ok(ConnectOutcome::Rejected {
                status: 429,
                reason: too_many_sockets(self.config().max_sockets_per_user),
            });
        }
        if let Err(error) = self.ports().connections.put(&connection).await {
            if let Some(user) = &connection.principal {
                self.release_slots(Gauge::Sockets, user, 1).await;
            }
            return Err(error.into());
        }
        Ok(ConnectOutcome::Accepted { protocol: offered })
    }

    /// `$disconnect`: forget the connection and everything it subscribed to.
    pub async fn disconnect(&self, id: &ConnectionId) -> Result<(), SessionError> {
        let connection = self.ports().connections.get(id).await?;
        if self.has_hooks() {
            self.hooks().on_disconnect(id, connection.as_ref()).await;
        }
        self.forget_and_release(id, connection.as_ref()).await
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
            ClientMessage::Stop { id: op } => self.stop(&connection, op).await,
            ClientMessage::ConnectionTerminate => {
                self.close(id, CloseCode::Normal, "terminated by the client")
                    .await
            }
        }
    }

    pub(crate) async fn post(&self, id: &ConnectionId, frame: &str) -> Result<(), SessionError> {
        match self.ports().gateway.post(id, frame).await {
            Ok(()) => Ok(()),
            Err(GatewayError::Gone) => {
                let connection = self.ports().connections.get(id).await?;
                self.forget_and_release(id, connection.as_ref()).await
            }
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
        let connection = self.ports().connections.get(id).await?;
        self.forget_and_release(id, connection.as_ref()).await
    }

    /// Forgets a connection (see [`Self::forget_connection`]) and gives the slots it held
    /// back to its user's limits: its socket, and the subscriptions removed with it.
    /// `connection` is the connection as stored before, `None` when it was not.
    pub(crate) async fn forget_and_release(
        &self,
        id: &ConnectionId,
        connection: Option<&Connection>,
    ) -> Result<(), SessionError> {
        let removed = self.forget_connection(id).await?;
        if let Some(user) = connection.and_then(|c| c.principal.as_ref()) {
            self.release_slots(Gauge::Sockets, user, 1).await;
            self.release_slots(Gauge::Subscriptions, user, removed as u64)
                .await;
        }
        Ok(())
    }

    /// Removes a connection and its subscriptions (returns how many); the slots they held
    /// of their user's limits stay taken until the user's gauges are recounted
    /// ([`crate::limits`]) unless the caller releases them ([`Self::forget_and_release`]).
    pub(crate) async fn forget_connection(&self, id: &ConnectionId) -> Result<usize, SessionError> {
        // A `subscribe` of this connection still being handled stores nothing after this.
        let until = now_secs() + TOMBSTONE_SECS;
        let removed = self
            .ports()
            .subscriptions
            .close_connection(id, until)
            .await?;
        self.ports().connections.delete(id).await?;
        Ok(removed)
    }
}
