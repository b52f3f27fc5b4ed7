//! The local mode: the whole system on one machine, no AWS account, for any app
//! ([`Options::app`]).
//!
//! # Layout
//! - [`server`]: API Gateway's part: GraphQL over HTTP and WebSocket at `/graphql`, the
//!   Management API at `/@connections/{id}`. Socket events become the same API Gateway
//!   events Lambda receives and go to the same handlers (`graphql_api::websocket`,
//!   `graphql_api::http_api`).
//! - [`stream`]: Lambda's stream polling, feeding `publisher::stream` with INSERT records:
//!   from the embedded or file event log, or ([`stream::dynamodb`]) the events table's real
//!   stream through `aws-sdk-dynamodbstreams`.
//! - [`fanout`]: Lambda's SQS polling, feeding `publisher::fanout` with pages: from the
//!   embedded queue, or ([`fanout::sqs`]) a real SQS queue.
//! - [`aws`]: the state on DynamoDB (an emulator or an account): the tables, their
//!   provisioning, and what the DynamoDB stream and SQS pollers read.
//! - [`cleanup`]: closed sockets' `$disconnect`s, a bounded number at once, off the path
//!   of the sockets still open.
//! - [`events`]: the API Gateway event shapes.
//! - [`web`]: the web app at `/` and its development sign-in (local mode only).
//! - [`cli`]: the `broker-local` command line, for the apps a binary is built with.
//!
//! Handlers post to sockets through the real `aws-sdk-apigatewaymanagement` client, pointed
//! at this process's own Management API: every frame takes the hop it takes on AWS.

pub mod aws;
pub mod cleanup;
pub mod cli;
pub mod events;
pub mod fanout;
pub mod server;
pub mod sockets;
pub mod stream;
pub mod web;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use broker::auth::jwks::JwksConfig;
use broker::aws::{ApiGatewayConnectionGateway, PostClient};
use broker::file::FileStore;
use broker::memory::{
    ChannelFanoutQueue, MemoryConnectionStore, MemoryEventLog, MemoryPageMarks,
    MemorySubscriptionStore,
};
use broker::{
    App, AuthConfig, Authenticator, Broker, BrokerConfig, ConfigError, Ports, Storage, settings,
};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::cleanup::Cleanup;
use crate::server::AppState;
use crate::sockets::Sockets;
pub use crate::web::{CorsOrigins, WebOptions};

/// How the local mode runs.
#[derive(Clone)]
#[expect(
    missing_debug_implementations,
    reason = "holds the app and its secrets; nothing of it is printed"
)]
pub struct Options {
    /// The app served: its schema, and its tables on DynamoDB.
    pub app: Arc<dyn App>,
    /// HS256 tokens with this secret, unless `key_set` is given.
    pub auth: AuthConfig,
    /// Tokens of an identity provider, verified against its published key set (`JWT_JWKS_URL`).
    pub key_set: Option<JwksConfig>,
    /// The broker's tunables (delivery mode, limits, fan-out).
    pub broker: BrokerConfig,
    /// Wait between two polls of an empty stream; zero waits for the next append instead.
    pub poll_interval: Duration,
    /// How the stream hands records to the publisher: concurrency, read-ahead, retries.
    pub stream: stream::StreamOptions,
    /// Where state lives: memory, a database file, or DynamoDB.
    pub backend: Backend,
    /// The web app and the development sign-in.
    pub web: WebOptions,
    /// Timeouts, queue and connection limits of the gateway.
    pub limits: server::Limits,
}

/// Where state lives.
#[derive(Clone, Debug, Default)]
pub enum Backend {
    /// In this process's memory: nothing to install, gone at exit (tests).
    #[default]
    Memory,
    /// In one database file (redb): the events, their delivery, the app's data survive a
    /// restart, even a `kill -9`. Connections and subscriptions of an earlier process are
    /// removed at start: their sockets died with it.
    File(PathBuf),
    /// DynamoDB (and optionally SQS) at an endpoint: the AWS adapters themselves.
    Aws(aws::AwsBackend),
}

impl Options {
    /// The configuration the Lambda functions read (`JWT_*` including `JWT_JWKS_URL`,
    /// `DELIVERY_MODE`, `FANOUT_*`),
    /// with the documented development secret when `JWT_SECRET` is unset, and the local
    /// mode's own variables of [`broker::settings`]: `STREAM_POLL_INTERVAL_MS`, the web app
    /// from `BROKER_WEB_DIR` (default: this source tree's `web/dist`), `CORS_ALLOWED_ORIGINS`
    /// and the gateway's limits; serving `app`. The development sign-in is on only
    /// while the development secret is in use.
    pub fn from_env(app: Arc<dyn App>) -> Result<Self, ConfigError> {
        let auth = AuthConfig::from_env(settings::JWT_SECRET.local_default())?;
        let key_set = JwksConfig::from_env()?;
        let broker = BrokerConfig::from_env()?;
        let poll_interval = Duration::from_millis(settings::STREAM_POLL_INTERVAL_MS.value()?);
        let web = WebOptions {
            dir: Some(match settings::BROKER_WEB_DIR.get()? {
                Some(dir) => dir,
                None => WebOptions::source_tree_dir(),
            }),
            dev_tokens: key_set.is_none() && auth.secret == broker::auth::DEVELOPMENT_SECRET,
            cors_origins: web::CorsOrigins::from_env()?,
        };
        Ok(Self {
            app,
            auth,
            key_set,
            broker,
            poll_interval,
            stream: stream::StreamOptions::default(),
            backend: Backend::Memory,
            web,
            limits: server::Limits::from_env()?,
        })
    }
}

/// A running local gateway. Dropping it does not stop it: call [`LocalGateway::shutdown`].
#[expect(
    missing_debug_implementations,
    reason = "a handle to running tasks, with nothing to print"
)]
pub struct LocalGateway {
    addr: SocketAddr,
    broker: Broker,
    sockets: Arc<Sockets>,
    given_up: stream::GivenUp,
    cleanup: Cleanup,
    tasks: Vec<JoinHandle<()>>,
}

impl LocalGateway {
    /// Starts serving on `listener`.
    pub async fn start(listener: TcpListener, options: Options) -> anyhow::Result<Self> {
        let addr = listener.local_addr()?;
        let gateway = Arc::new(management_gateway(addr).await?);
        let auth = match &options.key_set {
            Some(key_set) => Authenticator::from_key_set(key_set.clone())?,
            None => Authenticator::new(options.auth.clone()),
        };
        let (broker, given_up, mut tasks) = match &options.backend {
            Backend::Memory => {
                let events = Arc::new(MemoryEventLog::default());
                let (queue, pages) = ChannelFanoutQueue::ordered();
                let subscriptions = MemorySubscriptionStore::default();
                let ports = Ports {
                    connections: Arc::new(MemoryConnectionStore::default()),
                    replay_gate: Arc::new(subscriptions.replay_gate()),
                    subscriptions: Arc::new(subscriptions),
                    page_marks: Arc::new(MemoryPageMarks::default()),
                    quotas: Arc::new(broker::memory::MemoryQuotas::default()),
                    events: events.clone(),
                    gateway,
                    fanout: Some(Arc::new(queue)),
                };
                let schema = options.app.schema(&Storage::Memory(events.tables()))?;
                let broker = Broker::new(schema, ports, auth, options.broker.clone())
                    .with_app_hooks(options.app.as_ref());
                let scheduler = stream::Scheduler::start(broker.clone(), options.stream.clone());
                let given_up = scheduler.given_up().clone();
                let tasks = vec![
                    tokio::spawn(stream::feed_embedded(
                        events,
                        options.poll_interval,
                        scheduler,
                    )),
                    tokio::spawn(fanout::work_embedded(broker.clone(), pages)),
                ];
                (broker, given_up, tasks)
            }
            Backend::File(path) => {
                let store = FileStore::open(path)
                    .with_context(|| format!("cannot open the database file {}", path.display()))?;
                let (connections, subscriptions) = store.forget_connections()?;
                tracing::info!(
                    file = %path.display(),
                    connections,
                    subscriptions,
                    "database file opened; connections of an earlier process removed"
                );
                let events = Arc::new(store.events());
                // The fan-out queue stays in memory: every page names subscriptions of
                // this process's sockets, which a restart removes anyway. What a lost page
                // would have delivered is in the log, for those who resume.
                let (queue, pages) = ChannelFanoutQueue::ordered();
                let ports = Ports {
                    connections: Arc::new(store.connections()),
                    subscriptions: Arc::new(store.subscriptions()),
                    replay_gate: Arc::new(store.replay_gate()),
                    page_marks: Arc::new(store.page_marks()),
                    quotas: Arc::new(store.quotas()),
                    events: events.clone(),
                    gateway,
                    fanout: Some(Arc::new(queue)),
                };
                let schema = options.app.schema(&Storage::File(store))?;
                let broker = Broker::new(schema, ports, auth, options.broker.clone())
                    .with_app_hooks(options.app.as_ref());
                let scheduler = stream::Scheduler::start(broker.clone(), options.stream.clone());
                let given_up = scheduler.given_up().clone();
                let tasks = vec![
                    tokio::spawn(stream::feed_file(events, options.poll_interval, scheduler)),
                    tokio::spawn(fanout::work_embedded(broker.clone(), pages)),
                ];
                (broker, given_up, tasks)
            }
            Backend::Aws(backend) => {
                let parts = aws::connect(backend, options.app.as_ref(), gateway).await?;
                let broker = Broker::new(parts.schema, parts.ports, auth, options.broker.clone())
                    .with_app_hooks(options.app.as_ref());
                let scheduler = stream::Scheduler::start(broker.clone(), options.stream.clone());
                let given_up = scheduler.given_up().clone();
                let mut tasks = vec![tokio::spawn(stream::dynamodb::poll(
                    parts.streams,
                    parts.stream_arn,
                    options.poll_interval,
                    scheduler,
                ))];
                if let Some((sqs, url)) = parts.sqs {
                    // Lambda runs several workers at once; two pollers stand in for them.
                    let receiving = fanout::sqs::Receiving::default();
                    for _ in 0..2 {
                        let poller = fanout::sqs::poll(
                            broker.clone(),
                            sqs.clone(),
                            url.clone(),
                            receiving.clone(),
                        );
                        tasks.push(tokio::spawn(poller));
                    }
                }
                (broker, given_up, tasks)
            }
        };
        let sockets = Arc::new(Sockets::new(options.limits.full_timeout));
        let (cleanup, worker) = Cleanup::start(
            broker.clone(),
            options.limits.cleanup_concurrency,
            options.limits.cleanup_queue,
        );
        tasks.push(worker);
        let app = server::router(
            AppState {
                broker: broker.clone(),
                sockets: sockets.clone(),
                limits: options.limits.clone(),
                cleanup: cleanup.clone(),
            },
            options.web.cors_origins.layer(),
        )
        .merge(web::router(&options.web, broker.authenticator().clone()));
        tasks.push(tokio::spawn(server::serve(
            listener,
            app,
            options.limits.clone(),
        )));
        Ok(Self {
            addr,
            broker,
            sockets,
            given_up,
            cleanup,
            tasks,
        })
    }

    /// The address the gateway listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The web app's address (when [`Options::web`] names its folder).
    pub fn web_url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// The broker the gateway runs.
    pub fn broker(&self) -> &Broker {
        &self.broker
    }

    /// The URL of GraphQL over HTTP.
    pub fn graphql_url(&self) -> String {
        format!("http://{}/graphql", self.addr)
    }

    /// The URL of the WebSocket API.
    pub fn websocket_url(&self) -> String {
        format!("ws://{}/graphql", self.addr)
    }

    /// The Management API endpoint, as `MANAGEMENT_ENDPOINT` names it on AWS.
    pub fn management_endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Open sockets right now.
    /// Sockets closed because their outbox stayed full (clients reading too slowly).
    pub fn sockets_closed_too_slow(&self) -> u64 {
        self.sockets.closed_too_slow()
    }

    /// The stream records given up after failing every retry (the local on-failure
    /// destination).
    pub fn stream_given_up(&self) -> &stream::GivenUp {
        &self.given_up
    }

    /// How many sockets are open now.
    pub fn open_sockets(&self) -> usize {
        self.sockets.len()
    }

    /// Closed sockets whose `$disconnect` has not finished yet (see [`cleanup`]).
    pub fn cleanup_backlog(&self) -> usize {
        self.cleanup.backlog()
    }

    /// Stops serving and waits for the server's tasks to end.
    pub async fn shutdown(self) {
        for task in &self.tasks {
            task.abort();
        }
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// The real Management API gateway, pointed at this process, posting as `MANAGEMENT_POST`
/// chooses (as on AWS). Requests are signed as on AWS, with fixed local credentials (the
/// local gateway does not check signatures).
async fn management_gateway(addr: SocketAddr) -> anyhow::Result<ApiGatewayConnectionGateway> {
    let credentials = aws_sdk_apigatewaymanagement::config::Credentials::new(
        "local", "local", None, None, "local",
    );
    let config = broker::aws::config_loader(Some(&format!("http://{addr}")))
        .credentials_provider(credentials)
        .load()
        .await;
    Ok(ApiGatewayConnectionGateway::from_config_with(
        &config,
        &format!("http://{addr}"),
        PostClient::from_env()?,
    ))
}
