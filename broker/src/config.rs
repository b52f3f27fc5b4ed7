//! The broker's tunables ([`BrokerConfig`]) and where a published event goes
//! ([`DeliveryMode`]).

use std::str::FromStr;
use std::time::Duration;

use crate::cost::CostLimits;
use crate::domain;

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

/// At most `max` actions per `window` (a per-user rate, [`crate::limits`]); `max` 0 (or a
/// zero window) is no limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// Actions allowed in one window; 0: unlimited.
    pub max: u64,
    /// The window's length (whole milliseconds).
    pub window: Duration,
}

impl RateLimit {
    /// No limit.
    pub const UNLIMITED: Self = Self {
        max: 0,
        window: Duration::ZERO,
    };

    /// At most `max` actions per `window`.
    pub const fn new(max: u64, window: Duration) -> Self {
        Self { max, window }
    }

    /// Whether this allows everything.
    pub fn is_unlimited(&self) -> bool {
        self.max == 0 || self.window.as_millis() == 0
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
    /// Buckets a topic's subscribers are spread over by connection id ([`crate::fanout`]): a fan-out
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
    /// Sockets one user may hold at once, across every process ([`crate::limits`]); 0:
    /// unlimited. Counted when a connection gets its user (a token at `$connect`, else
    /// `connection_init`); over it `$connect` is refused with 429 and `connection_init`
    /// closes the socket with 4429. Default 20: a user's browser tabs and devices, with
    /// room to spare; far below what exhausts a gateway.
    pub max_sockets_per_user: u64,
    /// Subscriptions one user may hold at once across all of their connections
    /// ([`crate::limits`]); 0: unlimited. Over it a subscribe gets an `error` with
    /// `extensions.code` `RATE_LIMITED`. Default 200: twice one connection's limit, so one
    /// event reaches one user at most 200 times.
    pub max_subscriptions_per_user: u64,
    /// Events one user may publish through resolvers ([`crate::Outbox::publish`]): the
    /// caller of the mutation counts, whoever the event is for. Over it the publish fails
    /// with `extensions.code` `RATE_LIMITED` and nothing is published. A backend calling
    /// [`crate::Broker::publish`] itself is not counted. Default 40 per 2 s: 20 a second on
    /// average, with a burst of 40.
    pub publish_rate: RateLimit,
    /// Subscribes with `resumeFrom` one user may make ([`crate::resume`]); over it the
    /// subscribe gets an `error` with `extensions.code` `RATE_LIMITED` and is not stored (the
    /// client re-queries and subscribes without `resumeFrom`). Default 10 a minute: a replay
    /// costs up to [`Self::max_replay_events`] renderings.
    pub replay_rate: RateLimit,
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
            max_sockets_per_user: 20,
            max_subscriptions_per_user: 200,
            publish_rate: RateLimit::new(40, Duration::from_secs(2)),
            replay_rate: RateLimit::new(10, Duration::from_secs(60)),
        }
    }
}

/// The shortest [`BrokerConfig::resume_settle`] a broker takes (a shorter one is raised to
/// it): below it, a store could hardly answer within the publish deadline.
pub const MIN_RESUME_SETTLE_MS: u64 = 100;

impl BrokerConfig {
    /// The same configuration without any per-user limit ([`crate::limits`]): a single-user
    /// benchmark or test, or a deployment that limits users in front of the broker.
    pub fn without_user_limits(self) -> Self {
        Self {
            max_sockets_per_user: 0,
            max_subscriptions_per_user: 0,
            publish_rate: RateLimit::UNLIMITED,
            replay_rate: RateLimit::UNLIMITED,
            ..self
        }
    }

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
    /// `RESUME_SETTLE_MS` (at least [`MIN_RESUME_SETTLE_MS`], see [`crate::Broker::new`]), `MAX_REPLAY_EVENTS`; absent variables keep their defaults,
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

/// Configuration that cannot work: a variable missing or malformed, a storage an app cannot
/// use. Raised at start, before anything is served.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A required environment variable is not set.
    #[error("environment variable {0} is not set")]
    Missing(String),
    /// A setting has a value that cannot be used.
    #[error("{name}={value:?}: {reason}")]
    Invalid {
        /// The environment variable (or setting) read.
        name: String,
        /// The value it had.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The app cannot keep its data in the storage the process chose
    /// ([`crate::Storage::name`]).
    #[error("this app cannot keep its data in {0}")]
    UnsupportedStorage(&'static str),
    /// A table was asked for by a name the app's [`crate::App::tables`] does not list.
    #[error("the app has no table named {0:?}")]
    UnknownTable(String),
    /// The authentication settings cannot work (a missing secret, a bad key-set URL): an
    /// [`crate::auth::AuthError`].
    #[error(transparent)]
    Auth(Box<dyn std::error::Error + Send + Sync>),
}
