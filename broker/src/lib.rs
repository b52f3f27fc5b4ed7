//! Serverless realtime GraphQL: the broker's core.
//!
//! # Layout
//! - [`domain`]: connections, subscriptions, events, users, topics.
//! - [`protocol`]: the `graphql-transport-ws` and legacy `graphql-ws` subprotocols as data.
//! - [`auth`]: JWT verification (and minting, for development).
//! - [`ports`]: the storage, queue and gateway interfaces the broker is written against.
//! - [`memory`]: in-memory adapters; `aws` (feature `aws`): DynamoDB, SQS, API Gateway.
//! - [`graphql`]: how an app's async-graphql schema is registered and rendered per event.
//! - [`session`]: the WebSocket routes (`$connect`, `$default`, `$disconnect`).
//! - [`delivery`]: publishing, delivering one event to its subscribers, fan-out pages,
//!   pushing to every connection of one user.
//!
//! The broker knows nothing of Lambda: `graphql-api` and `publisher` translate Lambda events
//! into calls on [`Broker`], and so does the local gateway.

pub mod auth;
#[cfg(feature = "aws")]
pub mod aws;
pub mod delivery;
pub mod domain;
pub mod graphql;
pub mod memory;
pub mod ports;
pub mod protocol;
pub mod session;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

pub use async_graphql;
pub use auth::{AuthConfig, Authenticator};
pub use delivery::{DeliveryReport, PublishError, Publisher};
pub use domain::{
    Audience, Connection, ConnectionId, Event, EventRef, Principal, Subscription, SubscriptionKey,
    Topic, UserId,
};
pub use graphql::{EventStream, GraphqlExecutor, internal_error, listen, principal};
pub use ports::{
    ConnectionGateway, ConnectionStore, EventLog, FanoutPage, FanoutQueue, GatewayError,
    StoreError, SubscriptionStore,
};
pub use protocol::{CloseCode, Protocol};
pub use session::ConnectOutcome;

/// Where a published event goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DeliveryMode {
    /// Append the event to the log and return; the stream publisher delivers it.
    #[default]
    Stream,
    /// Deliver inside the publishing call (the resolver waits for every post).
    Direct,
}

impl FromStr for DeliveryMode {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value.trim().to_ascii_lowercase().as_str() {
            "stream" => Ok(Self::Stream),
            "direct" => Ok(Self::Direct),
            other => Err(format!(
                "unknown delivery mode {other:?} (expected \"stream\" or \"direct\")"
            )),
        }
    }
}

/// Tunables, with defaults that suit API Gateway's limits.
#[derive(Clone, Debug)]
pub struct BrokerConfig {
    pub delivery_mode: DeliveryMode,
    /// Above this many subscribers an event is split into fan-out pages (when a queue is set).
    pub fanout_threshold: usize,
    /// Subscriptions per fan-out page.
    pub fanout_page_size: usize,
    /// Posts in flight at once for one delivery. API Gateway's account throttle
    /// (10,000 requests/s, shared) is what bounds it on AWS.
    pub post_concurrency: usize,
    /// A `connection_init` arriving later than this after `$connect` closes with 4408.
    pub init_timeout: Duration,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            delivery_mode: DeliveryMode::Stream,
            fanout_threshold: 100,
            fanout_page_size: 50,
            post_concurrency: 64,
            init_timeout: Duration::from_secs(30),
        }
    }
}

impl BrokerConfig {
    /// Reads `DELIVERY_MODE`, `FANOUT_THRESHOLD`, `FANOUT_PAGE_SIZE`, `POST_CONCURRENCY`;
    /// absent variables keep their defaults, malformed ones are an error.
    pub fn from_env() -> Result<Self, String> {
        fn var<T: FromStr>(name: &str) -> Result<Option<T>, String>
        where
            T::Err: std::fmt::Display,
        {
            match std::env::var(name) {
                Ok(v) if !v.trim().is_empty() => v
                    .trim()
                    .parse()
                    .map(Some)
                    .map_err(|e| format!("{name}={v:?}: {e}")),
                _ => Ok(None),
            }
        }
        let mut config = Self::default();
        if let Some(mode) = var("DELIVERY_MODE")? {
            config.delivery_mode = mode;
        }
        if let Some(n) = var("FANOUT_THRESHOLD")? {
            config.fanout_threshold = n;
        }
        if let Some(n) = var::<usize>("FANOUT_PAGE_SIZE")? {
            config.fanout_page_size = n.max(1);
        }
        if let Some(n) = var::<usize>("POST_CONCURRENCY")? {
            config.post_concurrency = n.max(1);
        }
        Ok(config)
    }
}

/// The adapters a broker runs on.
#[derive(Clone)]
pub struct Ports {
    pub connections: Arc<dyn ConnectionStore>,
    pub subscriptions: Arc<dyn SubscriptionStore>,
    pub events: Arc<dyn EventLog>,
    pub gateway: Arc<dyn ConnectionGateway>,
    /// Without a queue every fan-out is delivered inline.
    pub fanout: Option<Arc<dyn FanoutQueue>>,
}

/// The broker: one per process, cheap to clone, shared by every request.
#[derive(Clone)]
pub struct Broker {
    inner: Arc<Inner>,
}

struct Inner {
    executor: Arc<dyn GraphqlExecutor>,
    ports: Ports,
    auth: Authenticator,
    config: BrokerConfig,
}

impl Broker {
    pub fn new(
        executor: impl GraphqlExecutor,
        ports: Ports,
        auth: Authenticator,
        config: BrokerConfig,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                executor: Arc::new(executor),
                ports,
                auth,
                config,
            }),
        }
    }

    pub fn authenticator(&self) -> &Authenticator {
        &self.inner.auth
    }

    pub fn config(&self) -> &BrokerConfig {
        &self.inner.config
    }

    pub fn ports(&self) -> &Ports {
        &self.inner.ports
    }

    /// Runs a query or mutation as `user` (HTTP, or an operation sent over a socket).
    pub async fn execute(
        &self,
        user: UserId,
        request: async_graphql::Request,
    ) -> async_graphql::Response {
        self.inner
            .executor
            .execute(self.request_data(user, request))
            .await
    }

    /// What every request the broker runs can reach: who is asking, and how to publish.
    fn request_data(
        &self,
        user: UserId,
        request: async_graphql::Request,
    ) -> async_graphql::Request {
        request
            .data(Principal { user })
            .data(Publisher::new(self.clone()))
    }
}
