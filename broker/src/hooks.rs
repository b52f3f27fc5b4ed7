//! Lifecycle hooks: what an app may want to know of, or veto, in a connection's life.
//!
//! Every method has a default that does nothing and allows everything, so an app implements
//! only what it needs. Hooks run inside the WebSocket routes, in whichever process handles
//! the message (a Lambda invocation on AWS): they keep no state of their own between calls,
//! and whatever they remember goes to a store of the app's.

use async_trait::async_trait;

use crate::domain::{Connection, ConnectionId, Subscription, SubscriptionKey};

/// Why a hook refused: sent to the client (the HTTP reason of a refused upgrade, the close
/// reason of a refused init, the message of a refused subscription's GraphQL error), so it
/// must not carry anything the client may not see.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refusal(pub String);

impl Refusal {
    /// A refusal telling the client `message`.
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

/// How a subscription ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// The client sent `complete` (`stop` in the legacy protocol).
    Client,
    /// The server ended it ([`crate::Broker::end_subscriptions`]).
    Server,
}

/// What an app is told of, and may refuse, in a connection's life; install it with
/// [`App::hooks`](crate::App::hooks) or [`crate::Broker::with_hooks`].
#[async_trait]
pub trait Hooks: Send + Sync + 'static {
    /// `$connect`, after the subprotocol was agreed and a query-string token (if any) was
    /// verified (`connection.principal`), before anything is stored. A refusal answers the
    /// upgrade with 403.
    async fn on_connect(&self, connection: &Connection) -> Result<(), Refusal> {
        let _ = connection;
        Ok(())
    }

    /// `connection_init`, once its user is known (`connection.principal`) and before the
    /// acknowledgement. `payload` is the client's `connectionParams`. A refusal closes the
    /// socket with 4403 Forbidden.
    async fn on_init(
        &self,
        connection: &Connection,
        payload: Option<&serde_json::Value>,
    ) -> Result<(), Refusal> {
        let _ = (connection, payload);
        Ok(())
    }

    /// A subscription the schema accepted (authorised, topic known), before it is stored.
    /// A refusal answers the client with an `error` for this operation.
    async fn on_subscribe(&self, subscription: &Subscription) -> Result<(), Refusal> {
        let _ = subscription;
        Ok(())
    }

    /// A stored subscription ended, by the client or by the server. Not called for the
    /// subscriptions that end with their connection: see [`Hooks::on_disconnect`].
    async fn on_complete(&self, key: &SubscriptionKey, ending: Ending) {
        let _ = (key, ending);
    }

    /// `$disconnect`, before the connection and its subscriptions are forgotten;
    /// `connection` is `None` when it was never stored or has already been removed.
    async fn on_disconnect(&self, id: &ConnectionId, connection: Option<&Connection>) {
        let _ = (id, connection);
    }
}

/// The hooks of an app that needs none.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoHooks;

impl Hooks for NoHooks {}
