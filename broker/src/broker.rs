//! The [`Broker`] itself: what it is built from ([`Ports`], the app's schema and hooks) and
//! the queries and mutations it runs. Its other work lives in the module of its concern.

use std::sync::Arc;
use std::time::Duration;

use async_graphql::parser::types::OperationType;

use crate::app::{App, AppSchema};
use crate::auth::Authenticator;
use crate::config::{BrokerConfig, MIN_RESUME_SETTLE_MS};
use crate::domain::UserId;
use crate::graphql::{self, GraphqlExecutor, Roles};
use crate::hooks::{Hooks, NoHooks};
use crate::ports::{
    ConnectionGateway, ConnectionStore, EventLog, FanoutQueue, PageMarks, Quotas, ReplayGate,
    SubscriptionStore,
};

/// The adapters a broker runs on.
#[derive(Clone)]
pub struct Ports {
    /// Where connections are stored.
    pub connections: Arc<dyn ConnectionStore>,
    /// Where subscriptions are stored, by connection and by topic.
    pub subscriptions: Arc<dyn SubscriptionStore>,
    /// The resume's hand-over from replay to live delivery: it acts on the subscriptions
    /// `subscriptions` stores.
    pub replay_gate: Arc<dyn ReplayGate>,
    /// Fan-out pages on their way through an ordered queue.
    pub page_marks: Arc<dyn PageMarks>,
    /// The counters of the per-user limits ([`crate::limits`]), shared by every process.
    pub quotas: Arc<dyn Quotas>,
    /// The log events are appended to and resumed from.
    pub events: Arc<dyn EventLog>,
    /// How messages reach a connection's socket, and how it is closed.
    pub gateway: Arc<dyn ConnectionGateway>,
    /// Without a queue every fan-out is delivered inline.
    pub fanout: Option<Arc<dyn FanoutQueue>>,
}

impl std::fmt::Debug for Ports {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ports")
            .field("fanout", &self.fanout.is_some())
            .finish_non_exhaustive()
    }
}

/// The broker: one per process, cheap to clone, shared by every request.
#[derive(Clone)]
pub struct Broker {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) executor: Arc<dyn GraphqlExecutor>,
    /// Documents parsed and cost-checked once, reused by every later request and event.
    pub(crate) documents: graphql::DocumentCache,
    ports: Ports,
    auth: Authenticator,
    config: BrokerConfig,
    /// `None`: the app has none, and nothing is read to call them.
    hooks: Option<Arc<dyn Hooks>>,
    /// The slots of [`BrokerConfig::max_posts_in_flight`], shared by every delivery of the
    /// process (and every clone of the broker).
    pub(crate) posts_in_flight: Arc<tokio::sync::Semaphore>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("config", &self.inner.config)
            .field("auth", &self.inner.auth)
            .field("hooks", &self.inner.hooks.is_some())
            .finish_non_exhaustive()
    }
}

impl Broker {
    /// A broker running `schema` on `ports`, without hooks. `config.resume_settle` is raised to
    /// its minimum if set below it.
    pub fn new(
        schema: impl Into<AppSchema>,
        ports: Ports,
        auth: Authenticator,
        mut config: BrokerConfig,
    ) -> Self {
        config.resume_settle = config
            .resume_settle
            .max(Duration::from_millis(MIN_RESUME_SETTLE_MS));
        let posts_in_flight = Arc::new(tokio::sync::Semaphore::new(
            config
                .max_posts_in_flight
                .clamp(1, tokio::sync::Semaphore::MAX_PERMITS),
        ));
        Self {
            inner: Arc::new(Inner {
                executor: schema.into().0,
                documents: graphql::DocumentCache::new(graphql::DOCUMENT_CACHE_BYTES),
                ports,
                auth,
                config,
                hooks: None,
                posts_in_flight,
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
            posts_in_flight: shared.posts_in_flight.clone(),
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

    /// How this broker verifies tokens.
    pub fn authenticator(&self) -> &Authenticator {
        &self.inner.auth
    }

    /// The tunables this broker runs with.
    pub fn config(&self) -> &BrokerConfig {
        &self.inner.config
    }

    /// The adapters this broker runs on.
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
    /// request carries its token); resolvers check them with [`crate::has_role`].
    pub async fn execute_with_roles(
        &self,
        user: UserId,
        roles: Vec<String>,
        request: async_graphql::Request,
    ) -> async_graphql::Response {
        self.execute(user, request.data(Roles(roles))).await
    }

    pub(crate) async fn execute_prepared(
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
}
