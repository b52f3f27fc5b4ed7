//! Serverless realtime GraphQL: the broker's core.
//!
//! # Use it for your own API
//! Your GraphQL API is one crate (an *app*, under `apps/` in this workspace) implementing
//! [`App`]: the DynamoDB tables it needs as data ([`TableSpec`]) and its async-graphql schema
//! built on the storage the process chose ([`Storage`]). Resolvers take the caller from
//! [`principal`], a subscription resolver names its topic with [`listen`], and a mutation
//! saves its writes and publishes their event in one commit with [`Outbox::publish_with`]
//! ([`Outbox::publish`] for an event without a write). Nothing else in the workspace
//! changes: the app's four Lambda binaries are one line each (`graphql_api::runtime::run_websocket(MyApp)`,
//! `run_http`, `publisher::runtime::run_stream`, `run_fanout`), `local_gateway::cli::main`
//! runs it locally, and `template.yaml`'s `App` parameter deploys it. The README's section
//! "Use it for your own API" walks through it, from a new crate to `sam deploy`.
//!
//! ```
//! use std::sync::Arc;
//!
//! use async_graphql::{Context, Object, Result, Schema, SimpleObject, Subscription};
//! use broker::memory::{
//!     MemoryConnectionStore, MemoryEventLog, MemoryPageMarks, MemoryQuotas,
//!     MemorySubscriptionStore, RecordingGateway,
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
//! let subscriptions = MemorySubscriptionStore::default();
//! let ports = Ports {
//!     connections: Arc::new(MemoryConnectionStore::default()),
//!     replay_gate: Arc::new(subscriptions.replay_gate()),
//!     subscriptions: Arc::new(subscriptions),
//!     page_marks: Arc::new(MemoryPageMarks::default()),
//!     quotas: Arc::new(MemoryQuotas::default()),
//!     events: Arc::new(MemoryEventLog::default()),
//!     gateway: Arc::new(RecordingGateway::default()),
//!     fanout: None,
//! };
//! let auth = Authenticator::new(AuthConfig {
//!     secret: "a-secret-of-at-least-thirty-two-bytes".into(),
//!     issuer: None,
//!     audience: None,
//!     leeway_secs: broker::auth::DEFAULT_LEEWAY_SECS,
//! });
//! let schema = NotesApp.schema(&Storage::Memory(Default::default()))?;
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
//! The [`Broker`] is one type whose work is spread over the modules of its concerns; each
//! module adds its own `impl Broker` block.
//!
//! What an app and its resolvers see:
//! - [`app`]: the plug-in point ([`App`], [`TableSpec`], [`Storage`]); `outbox`: what every
//!   request reaches ([`Outbox`], the caller); [`changes`]: an app's writes committed with
//!   its event ([`Changes`], [`Outbox::publish_with`]).
//! - [`hooks`]: lifecycle hooks an app may implement (connect, init, subscribe, complete,
//!   disconnect).
//! - [`graphql`]: how an app's async-graphql schema is registered and rendered per event.
//!
//! The broker's work, one concern a module:
//! - `broker`: the [`Broker`] and the [`Ports`] it is built on; queries and mutations.
//! - [`config`]: its tunables ([`BrokerConfig`]) and [`ConfigError`].
//! - [`session`]: the WebSocket routes (`$connect`, `$default`, `$disconnect`):
//!   `connection_init`, operations, storing subscriptions, and [`resume`] (replaying the log
//!   to a subscription that resumes, holding live events back until it hands over).
//! - [`publish`]: publishing an event within its deadline.
//! - [`delivery`]: delivering one event to its subscribers, rendered ([`delivery::render`])
//!   and posted ([`delivery::post`]), counted in a [`DeliveryReport`].
//! - [`fanout`]: large fan-outs through the queue, in pages ([`fanout::paging`]).
//! - `push`: a frame to, or a close of, every connection of one user.
//! - [`unsubscribe`]: ending subscriptions from the server side (of a topic, a user, a
//!   connection), with a `complete` to each client.
//! - [`limits`]: limits per user (sockets, subscriptions, publishes, replays), counted in
//!   the [`Quotas`] port so they hold across processes.
//! - [`metrics`]: each invocation's delivery counts in CloudWatch's embedded metric format.
//!
//! What it is written against, and what it runs on:
//! - [`domain`]: connections, subscriptions, events, users, topics.
//! - [`protocol`]: the `graphql-transport-ws` and legacy `graphql-ws` subprotocols as data.
//! - [`auth`]: JWT verification (and minting, for development).
//! - [`cost`]: what one GraphQL document may cost, checked before any resolver runs.
//! - [`ports`]: the storage, queue and gateway interfaces the broker is written against.
//! - [`memory`]: in-memory adapters; `aws` (feature `aws`): DynamoDB, SQS, API Gateway, the
//!   tables' provisioning, and the broker built from the environment the template sets;
//!   `file` (feature `file`): the ports and the apps' tables in one redb database file, the
//!   local mode's durable store.
//!
//! The broker knows nothing of Lambda: `graphql-api` and `publisher` translate Lambda events
//! into calls on [`Broker`], and so does the local gateway.

pub mod app;
pub mod auth;
#[cfg(feature = "aws")]
pub mod aws;
mod broker;
pub mod changes;
pub mod config;
pub mod cost;
pub mod delivery;
pub mod domain;
pub mod fanout;
#[cfg(feature = "file")]
pub mod file;
pub mod graphql;
pub mod hooks;
pub mod limits;
pub mod memory;
pub mod metrics;
mod outbox;
pub mod ports;
pub mod protocol;
pub mod publish;
mod push;
pub mod session;
pub mod settings;
pub mod unsubscribe;

pub use app::{App, AppSchema, IndexSpec, Storage, TableSpec};
pub use async_graphql;
pub use auth::{AuthConfig, Authenticator, Identity};
pub use broker::{Broker, Ports};
pub use changes::{AppTable, Changes};
pub use config::{BrokerConfig, ConfigError, DeliveryMode, MIN_RESUME_SETTLE_MS, RateLimit};
pub use cost::{CostError, CostLimits};
pub use delivery::{DeliveryReport, TopicRead};
pub use domain::{
    Audience, Connection, ConnectionId, Event, EventRef, Principal, Subscription, SubscriptionKey,
    Topic, UserId,
};
pub use graphql::{
    EventStream, GraphqlExecutor, PUBLIC_READS_VIEWER, Prevalidation, Roles, has_role,
    internal_error, listen, listen_public, principal, registering,
};
pub use hooks::{Ending, Hooks, NoHooks, Refusal};
pub use limits::RATE_LIMITED;
pub use outbox::Outbox;
pub use ports::{
    ConnectionGateway, ConnectionStore, EventLog, FanoutPage, FanoutQueue, GatewayError, HandOver,
    Hold, Inserted, PageMarks, Quotas, ReplayGate, StoreError, StreamRead, SubscriptionStore,
};
pub use protocol::{CloseCode, Protocol};
pub use publish::{INVALID_AUDIENCE, PUBLISH_TIMEOUT, PublishError, check_audience, publish_error};
pub use session::{ConnectOutcome, resume};
pub use unsubscribe::SubscriptionsOf;
