//! The broker's tunables ([`BrokerConfig`]) and where a published event goes
//! ([`DeliveryMode`]).

use std::time::Duration;

use crate::cost::CostLimits;
use crate::settings;

pub use crate::domain::DeliveryMode;
pub use crate::settings::ConfigError;

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
    /// Where a published event goes: to the log for the stream publisher, or delivered
    /// inside the publishing call.
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
    /// Posts of deliveries in flight at once in the whole process, across every delivery
    /// running: each post holds one of these slots while it is sent (not while it waits to
    /// be retried). Deliveries running at once each post [`Self::post_concurrency`] at a
    /// time, and without a bound for them together a burst of publishes in one process (the
    /// local mode, a backend) would open a connection per post in flight, thousands at once.
    pub max_posts_in_flight: usize,
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
    /// The defaults declared in [`settings`].
    fn default() -> Self {
        Self {
            delivery_mode: settings::DELIVERY_MODE.default_value(),
            fanout_threshold: settings::FANOUT_THRESHOLD.default_value(),
            fanout_page_size: settings::FANOUT_PAGE_SIZE.default_value(),
            fanout_groups: settings::FANOUT_GROUPS.default_value(),
            post_concurrency: settings::POST_CONCURRENCY.default_value(),
            max_posts_in_flight: settings::MAX_POSTS_IN_FLIGHT.default_value(),
            init_timeout: Duration::from_secs(settings::INIT_TIMEOUT_SECS.default_value()),
            limits: CostLimits::default(),
            max_request_bytes: settings::MAX_REQUEST_BYTES.default_value(),
            max_subscriptions_per_connection: settings::MAX_SUBSCRIPTIONS_PER_CONNECTION
                .default_value(),
            render_timeout: Duration::from_millis(settings::RENDER_TIMEOUT_MS.default_value()),
            render_concurrency: 16,
            merge_renderings: settings::MERGE_RENDERINGS.default_value(),
            fanout_page_lifetime: Duration::from_secs(
                settings::FANOUT_PAGE_LIFETIME_SECS.default_value(),
            ),
            fanout_max_receives: None,
            event_retention: Duration::from_secs(settings::EVENT_RETENTION_SECS.default_value()),
            resume_settle: Duration::from_millis(settings::RESUME_SETTLE_MS.default_value()),
            max_replay_events: settings::MAX_REPLAY_EVENTS.default_value(),
            max_sockets_per_user: settings::MAX_SOCKETS_PER_USER.default_value(),
            max_subscriptions_per_user: settings::MAX_SUBSCRIPTIONS_PER_USER.default_value(),
            publish_rate: RateLimit::new(
                settings::PUBLISH_RATE_MAX.default_value(),
                Duration::from_millis(settings::PUBLISH_RATE_WINDOW_MS.default_value()),
            ),
            replay_rate: RateLimit::new(
                settings::REPLAY_RATE_MAX.default_value(),
                Duration::from_secs(settings::REPLAY_RATE_WINDOW_SECS.default_value()),
            ),
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

    /// The tunables from the environment: every variable of [`settings`] this struct has a
    /// field for (from `DELIVERY_MODE` to `REPLAY_RATE_WINDOW_SECS`, `MAX_DOCUMENT_BYTES`,
    /// `MAX_FIELDS` and `MAX_DEPTH` for [`Self::limits`]), read by the module's one rule:
    /// unset or blank keeps the declared default, a malformed value is an error, clamps are
    /// declared with each variable. `RESUME_SETTLE_MS` is raised to [`MIN_RESUME_SETTLE_MS`]
    /// by `Broker::new`, whatever the configuration.
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            delivery_mode: settings::DELIVERY_MODE.value()?,
            fanout_threshold: settings::FANOUT_THRESHOLD.value()?,
            fanout_page_size: settings::FANOUT_PAGE_SIZE.value()?,
            fanout_groups: settings::FANOUT_GROUPS.value()?,
            post_concurrency: settings::POST_CONCURRENCY.value()?,
            max_posts_in_flight: settings::MAX_POSTS_IN_FLIGHT.value()?,
            max_request_bytes: settings::MAX_REQUEST_BYTES.value()?,
            limits: CostLimits {
                max_document_bytes: settings::MAX_DOCUMENT_BYTES.value()?,
                max_fields: settings::MAX_FIELDS.value()?,
                max_depth: settings::MAX_DEPTH.value()?,
                ..CostLimits::default()
            },
            max_subscriptions_per_connection: settings::MAX_SUBSCRIPTIONS_PER_CONNECTION.value()?,
            init_timeout: Duration::from_secs(settings::INIT_TIMEOUT_SECS.value()?),
            render_timeout: Duration::from_millis(settings::RENDER_TIMEOUT_MS.value()?),
            fanout_page_lifetime: Duration::from_secs(settings::FANOUT_PAGE_LIFETIME_SECS.value()?),
            fanout_max_receives: settings::FANOUT_MAX_RECEIVES.get()?,
            merge_renderings: settings::MERGE_RENDERINGS.value()?,
            event_retention: Duration::from_secs(settings::EVENT_RETENTION_SECS.value()?),
            resume_settle: Duration::from_millis(settings::RESUME_SETTLE_MS.value()?),
            max_replay_events: settings::MAX_REPLAY_EVENTS.value()?,
            max_sockets_per_user: settings::MAX_SOCKETS_PER_USER.value()?,
            max_subscriptions_per_user: settings::MAX_SUBSCRIPTIONS_PER_USER.value()?,
            publish_rate: RateLimit::new(
                settings::PUBLISH_RATE_MAX.value()?,
                Duration::from_millis(settings::PUBLISH_RATE_WINDOW_MS.value()?),
            ),
            replay_rate: RateLimit::new(
                settings::REPLAY_RATE_MAX.value()?,
                Duration::from_secs(settings::REPLAY_RATE_WINDOW_SECS.value()?),
            ),
            ..Self::default()
        })
    }
}
