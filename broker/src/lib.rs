//! Serverless realtime GraphQL: the broker's core.
//!
//! # Use it for your own API
//! Your GraphQL API is one crate (an *app*, under `apps/` in this workspace) implementing
//! [`App`]: the DynamoDB tables it needs as data ([`TableSpec`]) and its async-graphql schema
//! built on the storage the process chose ([`Storage`]). Resolvers take the caller from
//! [`principal`], a subscription resolver names its topic with [`listen`], and a mutation
//! publishes with [`Outbox::publish`]. Nothing else in the workspace changes: the app's four
//! Lambda binaries are one line each (`graphql_api::runtime::run_websocket(MyApp)`,
//! `run_http`, `publisher::runtime::run_stream`, `run_fanout`), `local_gateway::cli::main`
//! runs it locally, and `template.yaml`'s `App` parameter deploys it. The README's section
//! "Use it for your own API" walks through it, from a new crate to `sam deploy`.
//!
//! ```
//! use std::sync::Arc;
//!
//! use async_graphql::{Context, Object, Result, Schema, SimpleObject, Subscription};
//! use broker::memory::{
//!     MemoryConnectionStore, MemoryEventLog, MemorySubscriptionStore, RecordingGateway,
//! };
//! use broker::{
//!     App, AppSchema, Audience, AuthConfig, Authenticator, Broker, BrokerConfig, ConfigError,
//!     EventStream, Outbox, Ports, Storage, Topic, UserId, listen, principal, publish_error,
//! };
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Clone, SimpleObject, Serialize, Deserialize)]
//! struct Note {
//!     text: String,
//! }
//!
//! struct Query;
//!
//! #[Object]
//! impl Query {
//!     async fn me(&self, ctx: &Context<'_>) -> Result<String> {
//!         Ok(principal(ctx)?.to_string())
//!     }
//! }
//!
//! struct Mutation;
//!
//! #[Object]
//! impl Mutation {
//!     /// Publishes a note to the caller's own frontends.
//!     async fn add_note(&self, ctx: &Context<'_>, text: String) -> Result<Note> {
//!         let user = principal(ctx)?;
//!         let note = Note { text };
//!         let topic = Topic::private(user, "noteAdded");
//!         let audience = Audience::User(user.clone());
//!         ctx.data::<Outbox>()?
//!             .publish(topic, &note, audience)
//!             .await
//!             .map_err(publish_error)?;
//!         Ok(note)
//!     }
//! }
//!
//! struct Notes;
//!
//! #[Subscription]
//! impl Notes {
//!     async fn note_added(&self, ctx: &Context<'_>) -> Result<EventStream<Note>> {
//!         let user = principal(ctx)?;
//!         listen(ctx, Topic::private(user, "noteAdded"))
//!     }
//! }
//!
//! /// The app: no tables, so the default `tables()` (none) fits.
//! struct NotesApp;
//!
//! impl App for NotesApp {
//!     fn schema(&self, _storage: &Storage) -> Result<AppSchema, ConfigError> {
//!         Ok(Schema::new(Query, Mutation, Notes).into())
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // What the Lambda wiring and the local mode do with an app, here on memory adapters.
//! let ports = Ports {
//!     connections: Arc::new(MemoryConnectionStore::default()),
//!     subscriptions: Arc::new(MemorySubscriptionStore::default()),
//!     events: Arc::new(MemoryEventLog::default()),
//!     gateway: Arc::new(RecordingGateway::default()),
//!     fanout: None,
//! };
//! let auth = Authenticator::new(AuthConfig {
//!     secret: "a-secret-of-at-least-thirty-two-bytes".into(),
//!     issuer: None,
//!     audience: None,
//! });
//! let schema = NotesApp.schema(&Storage::Memory)?;
//! let broker = Broker::new(schema, ports, auth, BrokerConfig::default());
//!
//! let request = async_graphql::Request::new(r#"mutation { addNote(text: "hi") { text } }"#);
//! let response = broker.execute(UserId::new("alice"), request).await;
//! assert!(response.errors.is_empty(), "{:?}", response.errors);
//! assert_eq!(response.data.to_string(), r#"{addNote: {text: "hi"}}"#);
//! # Ok(())
//! # }
//! ```
//!
//! # Layout
//! - [`app`]: the plug-in point ([`App`], [`TableSpec`], [`Storage`]) and what resolvers
//!   reach ([`Outbox`]).
//! - [`domain`]: connections, subscriptions, events, users, topics.
//! - [`protocol`]: the `graphql-transport-ws` and legacy `graphql-ws` subprotocols as data.
//! - [`auth`]: JWT verification (and minting, for development).
//! - [`ports`]: the storage, queue and gateway interfaces the broker is written against.
//! - [`memory`]: in-memory adapters; `aws` (feature `aws`): DynamoDB, SQS, API Gateway, the
//!   tables' provisioning, and the broker built from the environment the template sets;
//!   `file` (feature `file`): the ports and the apps' tables in one redb database file, the
//!   local mode's durable store.
//! - [`cost`]: what one GraphQL document may cost, checked before any resolver runs.
//! - [`graphql`]: how an app's async-graphql schema is registered and rendered per event.
//! - [`hooks`]: lifecycle hooks an app may implement (connect, init, subscribe, complete,
//!   disconnect).
//! - [`session`]: the WebSocket routes (`$connect`, `$default`, `$disconnect`).
//! - [`delivery`]: publishing, delivering one event to its subscribers, fan-out pages,
//!   pushing to every connection of one user.
//! - [`unsubscribe`]: ending subscriptions from the server side (of a topic, a user, a
//!   connection), with a `complete` to each client.
//!
//! The broker knows nothing of Lambda: `graphql-api` and `publisher` translate Lambda events
//! into calls on [`Broker`], and so does the local gateway.

pub mod app;
pub mod auth;
#[cfg(feature = "aws")]
pub mod aws;
pub mod cost;
pub mod delivery;
pub mod domain;
pub mod fanout;
#[cfg(feature = "file")]
pub mod file;
pub mod graphql;
pub mod hooks;
pub mod memory;
pub mod metrics;
pub mod ports;
pub mod protocol;
pub mod resume;
pub mod session;
pub mod unsubscribe;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_graphql::parser::types::OperationType;

pub use app::{App, AppSchema, ConfigError, IndexSpec, Outbox, Storage, TableSpec};
pub use async_graphql;
pub use auth::{AuthConfig, Authenticator, Identity};
pub use cost::{CostError, CostLimits};
pub use delivery::{DeliveryReport, PUBLISH_TIMEOUT, PublishError, TopicRead};
pub use domain::{
    Audience, Connection, ConnectionId, Event, EventRef, Principal, Subscription, SubscriptionKey,
    Topic, UserId,
};
pub use graphql::{
    EventStream, GraphqlExecutor, Prevalidation, Roles, has_role, internal_error, listen,
    principal, publish_error, registering,
};
pub use hooks::{Ending, Hooks, NoHooks, Refusal};
pub use ports::{
    ConnectionGateway, ConnectionStore, EventLog, FanoutPage, FanoutQueue, GatewayError, HandOver,
    Hold, Inserted, StoreError, SubscriptionStore,
};
pub use protocol::{CloseCode, Protocol};
pub use session::ConnectOutcome;
pub use unsubscribe::SubscriptionsOf;

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
    /// Buckets a topic's subscribers are spread over by connection id ([`fanout`]): a fan-out
    /// page holds one bucket's subscriptions, and a FIFO queue keeps each bucket's pages in
    /// order. More groups let more workers share one topic's fan-out at once.
    pub fanout_groups: usize,
    /// Posts in flight at once for one delivery. API Gateway's account throttle
    /// (10,000 requests/s, shared) is what bounds it on AWS.
    pub post_concurrency: usize,
    /// A `connection_init` arriving later than this after `$connect` closes with 4408.
    pub init_timeout: Duration,
    /// The budget of every document the broker runs (HTTP, socket operations, subscriptions).
    pub limits: CostLimits,
    /// Bytes of one HTTP request body (or query string). API Gateway's WebSocket message
    /// limit (128 KB) by default, so a request is refused alike on either transport; at most
    /// the 6 MB a Lambda invocation can carry.
    pub max_request_bytes: usize,
    /// Subscriptions one connection may hold at once (AppSync's limit is 100).
    pub max_subscriptions_per_connection: usize,
    /// Rendering one event for one group of subscribers that takes longer fails that group's
    /// delivery (to be retried) instead of holding up the rest.
    pub render_timeout: Duration,
    /// Renderings of one event in flight at once.
    pub render_concurrency: usize,
    /// How long a fan-out page can be in the ordered queue at most: the queue's retention
    /// period plus its visibility timeout (a page received just before it would expire is
    /// still delivered); the template's queue keeps pages a day and hides them 180 s. On an
    /// ordered queue a topic's events go through the queue while its pages are on their way;
    /// a page's mark is forgotten this long after it was enqueued.
    pub fanout_page_lifetime: Duration,
    /// How many times the ordered queue hands a page out before its dead-letter queue takes
    /// it (the template's `maxReceiveCount`): a page that fails its last receive is marked
    /// done, so it holds the topic's later events back no longer. `None` (unknown): such a
    /// page's mark expires with [`Self::fanout_page_lifetime`].
    pub fanout_max_receives: Option<u32>,
    /// Whether one user's documents that differ only in what they select share one
    /// execution of a merged document (`graphql::merge`). Every payload is what the
    /// document gives alone, unless a resolver reads its own selection (`look_ahead`, its
    /// alias): set `MERGE_RENDERINGS=false` for such a schema.
    pub merge_renderings: bool,
    /// How long events stay in the log: the window a subscriber can resume within.
    pub event_retention: Duration,
    /// How long after stamping an event its publish may have stored it. A resume reads the
    /// log once more this long after it began, so an event stamped before the subscription
    /// but stored after the first read is replayed, not skipped. A publish is given
    /// [`Self::publish_deadline`] to store its event, and fails past it.
    pub resume_settle: Duration,
    /// The most events one resume replays; a subscriber further behind is told to re-query.
    pub max_replay_events: usize,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            delivery_mode: DeliveryMode::Stream,
            fanout_threshold: 100,
            fanout_page_size: 50,
            fanout_groups: 32,
            post_concurrency: 64,
            init_timeout: Duration::from_secs(30),
            limits: CostLimits::default(),
            max_request_bytes: 128 * 1024,
            max_subscriptions_per_connection: 100,
            render_timeout: Duration::from_secs(5),
            render_concurrency: 16,
            merge_renderings: true,
            fanout_page_lifetime: Duration::from_secs(24 * 60 * 60 + 180),
            fanout_max_receives: None,
            event_retention: Duration::from_secs(domain::EVENT_LIFETIME_SECS),
            resume_settle: Duration::from_millis(2000),
            max_replay_events: 10_000,
        }
    }
}

/// The shortest [`BrokerConfig::resume_settle`] a broker takes (a shorter one is raised to
/// it): below it, a store could hardly answer within the publish deadline.
pub const MIN_RESUME_SETTLE_MS: u64 = 100;

impl BrokerConfig {
    /// How long a publish waits for its event to be stored, counted from the event's stamp:
    /// three quarters of [`Self::resume_settle`]. The quarter left covers the difference
    /// between the clocks of the publishing and the resuming process. An event whose
    /// publish succeeded was therefore stored within the settle time of its stamp, which is
    /// what a resume relies on to miss nothing.
    pub fn publish_deadline(&self) -> Duration {
        self.resume_settle - self.resume_settle / 4
    }

    /// Reads `DELIVERY_MODE`, `FANOUT_THRESHOLD`, `FANOUT_PAGE_SIZE`, `FANOUT_GROUPS` (at
    /// least 1), `FANOUT_PAGE_LIFETIME_SECS`, `FANOUT_MAX_RECEIVES`, `POST_CONCURRENCY`, `INIT_TIMEOUT_SECS`, `MAX_REQUEST_BYTES`,
    /// `MAX_DOCUMENT_BYTES`, `MAX_FIELDS`, `MAX_DEPTH`, `MAX_SUBSCRIPTIONS_PER_CONNECTION`, `RENDER_TIMEOUT_MS`, `EVENT_RETENTION_SECS`,
    /// `RESUME_SETTLE_MS` (at least [`MIN_RESUME_SETTLE_MS`], see [`Broker::new`]), `MAX_REPLAY_EVENTS`; absent variables keep their defaults,
    /// malformed ones are an error.
    pub fn from_env() -> Result<Self, ConfigError> {
        fn var<T: FromStr>(name: &str) -> Result<Option<T>, ConfigError>
        where
            T::Err: std::fmt::Display,
        {
            match std::env::var(name) {
                Ok(v) if !v.trim().is_empty() => {
                    v.trim()
                        .parse()
                        .map(Some)
                        .map_err(|e: T::Err| ConfigError::Invalid {
                            name: name.to_owned(),
                            value: v.clone(),
                            reason: e.to_string(),
                        })
                }
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
        if let Some(n) = var::<usize>("FANOUT_GROUPS")? {
            if n == 0 {
                return Err(ConfigError::Invalid {
                    name: "FANOUT_GROUPS".to_owned(),
                    value: n.to_string(),
                    reason: "at least one group is needed".to_owned(),
                });
            }
            config.fanout_groups = n;
        }
        if let Some(n) = var::<usize>("POST_CONCURRENCY")? {
            config.post_concurrency = n.max(1);
        }
        if let Some(n) = var::<usize>("MAX_REQUEST_BYTES")? {
            config.max_request_bytes = n.clamp(1024, 6 * 1024 * 1024);
        }
        if let Some(n) = var::<usize>("MAX_DOCUMENT_BYTES")? {
            config.limits.max_document_bytes = n.max(64);
        }
        if let Some(n) = var::<u64>("MAX_FIELDS")? {
            config.limits.max_fields = n.max(1);
        }
        if let Some(n) = var::<usize>("MAX_DEPTH")? {
            config.limits.max_depth = n.max(1);
        }
        if let Some(n) = var("MAX_SUBSCRIPTIONS_PER_CONNECTION")? {
            config.max_subscriptions_per_connection = n;
        }
        if let Some(secs) = var::<u64>("INIT_TIMEOUT_SECS")? {
            config.init_timeout = Duration::from_secs(secs.max(1));
        }
        if let Some(ms) = var::<u64>("RENDER_TIMEOUT_MS")? {
            config.render_timeout = Duration::from_millis(ms.max(1));
        }
        if let Some(secs) = var::<u64>("FANOUT_PAGE_LIFETIME_SECS")? {
            config.fanout_page_lifetime = Duration::from_secs(secs);
        }
        if let Some(n) = var::<u32>("FANOUT_MAX_RECEIVES")? {
            config.fanout_max_receives = Some(n.max(1));
        }
        if let Some(merge) = var::<bool>("MERGE_RENDERINGS")? {
            config.merge_renderings = merge;
        }
        if let Some(secs) = var::<u64>("EVENT_RETENTION_SECS")? {
            config.event_retention = Duration::from_secs(secs.max(1));
        }
        if let Some(ms) = var::<u64>("RESUME_SETTLE_MS")? {
            config.resume_settle = Duration::from_millis(ms);
        }
        if let Some(n) = var::<usize>("MAX_REPLAY_EVENTS")? {
            config.max_replay_events = n.max(1);
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
    /// Documents parsed and cost-checked once, reused by every later request and event.
    documents: graphql::DocumentCache,
    ports: Ports,
    auth: Authenticator,
    config: BrokerConfig,
    /// `None`: the app has none, and nothing is read to call them.
    hooks: Option<Arc<dyn Hooks>>,
}

impl Broker {
    pub fn new(
        schema: impl Into<AppSchema>,
        ports: Ports,
        auth: Authenticator,
        mut config: BrokerConfig,
    ) -> Self {
        config.resume_settle = config
            .resume_settle
            .max(Duration::from_millis(MIN_RESUME_SETTLE_MS));
        Self {
            inner: Arc::new(Inner {
                executor: schema.into().0,
                documents: graphql::DocumentCache::new(graphql::DOCUMENT_CACHE_BYTES),
                ports,
                auth,
                config,
                hooks: None,
            }),
        }
    }

    /// [`Broker::with_hooks`] with `app`'s own hooks ([`App::hooks`]), if it has any.
    pub fn with_app_hooks(self, app: &dyn App) -> Self {
        match app.hooks() {
            Some(hooks) => self.with_hooks(hooks),
            None => self,
        }
    }

    /// The same broker with the app's lifecycle hooks. Call it where the broker is built,
    /// before it is cloned: the clones made earlier keep the hooks they had.
    pub fn with_hooks(self, hooks: Arc<dyn Hooks>) -> Self {
        let inner = Arc::try_unwrap(self.inner).unwrap_or_else(|shared| Inner {
            executor: shared.executor.clone(),
            documents: graphql::DocumentCache::new(graphql::DOCUMENT_CACHE_BYTES),
            ports: shared.ports.clone(),
            auth: shared.auth.clone(),
            config: shared.config.clone(),
            hooks: shared.hooks.clone(),
        });
        Self {
            inner: Arc::new(Inner {
                hooks: Some(hooks),
                ..inner
            }),
        }
    }

    pub(crate) fn hooks(&self) -> &dyn Hooks {
        self.inner.hooks.as_deref().unwrap_or(&NoHooks)
    }

    pub(crate) fn has_hooks(&self) -> bool {
        self.inner.hooks.is_some()
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

    /// Runs a query or mutation as `user` (HTTP, or an operation sent over a socket). A
    /// document over the cost limits is answered with a GraphQL error and runs nothing.
    pub async fn execute(
        &self,
        user: UserId,
        request: async_graphql::Request,
    ) -> async_graphql::Response {
        match self.prepare(request) {
            Ok((request, _)) => self.execute_prepared(user, request).await,
            Err(error) => async_graphql::Response::from_errors(vec![error]),
        }
    }

    /// [`Broker::execute`] for a caller whose token granted `roles` (HTTP, where every
    /// request carries its token); resolvers check them with [`has_role`].
    pub async fn execute_with_roles(
        &self,
        user: UserId,
        roles: Vec<String>,
        request: async_graphql::Request,
    ) -> async_graphql::Response {
        self.execute(user, request.data(Roles(roles))).await
    }

    async fn execute_prepared(
        &self,
        user: UserId,
        request: async_graphql::Request,
    ) -> async_graphql::Response {
        self.inner
            .executor
            .execute(self.request_data(user, request))
            .await
    }

    /// Parses and cost-checks a request's document (once per distinct document and
    /// process): the request with its parsed document attached, so async-graphql does not
    /// parse it again, and the kind of operation it runs.
    pub fn prepare(
        &self,
        mut request: async_graphql::Request,
    ) -> Result<(async_graphql::Request, OperationType), async_graphql::ServerError> {
        let document = self
            .inner
            .documents
            .get_or_parse(&self.config().limits, &request.query)?;
        let ty = graphql::selected_operation(&document, request.operation_name.as_deref())
            .ok_or_else(|| match &request.operation_name {
                Some(name) => async_graphql::ServerError::new(
                    format!("Unknown operation named \"{name}\""),
                    None,
                ),
                None => {
                    async_graphql::ServerError::new("Operation name required in request.", None)
                }
            })?;
        request.set_parsed_query(document.as_ref().clone());
        Ok((request, ty))
    }

    /// The kind of operation a request would run, `None` when its document is refused
    /// (running it reports why). Cheap: the parsed document is kept for the run.
    pub fn operation_type(&self, request: &async_graphql::Request) -> Option<OperationType> {
        let document = self
            .inner
            .documents
            .get_or_parse(&self.config().limits, &request.query)
            .ok()?;
        graphql::selected_operation(&document, request.operation_name.as_deref())
    }

    /// What every request the broker runs can reach: who is asking, and how to publish.
    fn request_data(
        &self,
        user: UserId,
        request: async_graphql::Request,
    ) -> async_graphql::Request {
        request
            .data(Principal { user })
            .data(Outbox::new(self.clone()))
    }
}
