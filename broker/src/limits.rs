//! Limits per user, holding across every process of the broker: the sockets and the
//! subscriptions one user holds at once (*gauges*), and the publishes and the replays one
//! user makes in a window of time (*rates*). Their counters live in the [`Quotas`] port, so
//! they hold across Lambda instances as in one local process.
//!
//! | limit | [`BrokerConfig`] field | default | over it |
//! |---|---|---|---|
//! | sockets per user | [`BrokerConfig::max_sockets_per_user`] | 20 | `$connect` with a token: HTTP 429; `connection_init`: close 4429 |
//! | subscriptions per user | [`BrokerConfig::max_subscriptions_per_user`] | 200 | the subscribe's `error`, `extensions.code` `RATE_LIMITED` |
//! | publishes per user | [`BrokerConfig::publish_rate`] | 40 per 2 s | the mutation's GraphQL error `RATE_LIMITED`; nothing published |
//! | replays per user | [`BrokerConfig::replay_rate`] | 10 per minute | the subscribe's `error`, `extensions.code` `RATE_LIMITED` |
//!
//! Zero (a [`RateLimit`] with `max` 0) disables a limit.
//!
//! **Rates** are fixed windows: one counter per user and window (its key names the window),
//! expiring when the window ends. Across the boundary of two windows a user can make up to
//! twice the limit in one window's time: the burst a fixed window allows.
//!
//! **Gauges** are one counter per user: taken when a slot is taken (a socket gets its user,
//! a subscription is stored), released when it is given back (the connection is closed, the
//! client completes the subscription). A release can be lost (a process dies between the two
//! writes, a connection forgotten by a delivery that found it gone): two things bound the
//! drift. Every take sets the counter to expire a connection's lifetime after it, so a user
//! idle that long starts from zero whatever was lost (every socket it counted has ended by
//! then). And a take that finds the gauge full recounts it from the stores (the user's
//! connections, and their subscriptions) before refusing, at most once a minute per user and
//! gauge, so a user whose releases were lost is not refused for long. A recount can miss a
//! take whose store write is still on its way; that slot is counted again at the next take.

use std::time::Duration;

use crate::Broker;
use crate::config::{BrokerConfig, RateLimit};
use crate::domain::{CONNECTION_LIFETIME_SECS, UserId, now_ms, now_secs};
use crate::ports::{Quotas, StoreError};

/// The `extensions.code` of the GraphQL error for an operation over a per-user limit: a
/// mutation over [`BrokerConfig::publish_rate`], a subscribe over
/// [`BrokerConfig::max_subscriptions_per_user`] or [`BrokerConfig::replay_rate`].
pub const RATE_LIMITED: &str = "RATE_LIMITED";

/// What a gauge counts, one counter per user.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Gauge {
    /// Sockets that have a user (a token at `$connect`, or an accepted `connection_init`).
    Sockets,
    /// Subscriptions stored, across all of the user's connections.
    Subscriptions,
}

impl Gauge {
    fn name(self) -> &'static str {
        match self {
            Self::Sockets => "sockets",
            Self::Subscriptions => "subscriptions",
        }
    }

    fn limit(self, config: &BrokerConfig) -> u64 {
        match self {
            Self::Sockets => config.max_sockets_per_user,
            Self::Subscriptions => config.max_subscriptions_per_user,
        }
    }
}

/// How long after its last take a gauge is forgotten: longer than any connection lives, so
/// every slot it counted has been given back (or lost) by then.
pub const GAUGE_LIFETIME_SECS: u64 = CONNECTION_LIFETIME_SECS + 10 * 60;

/// A full gauge is recounted from the stores at most once per this window, per user.
const RECOUNT_EVERY: RateLimit = RateLimit::new(1, Duration::from_secs(60));

/// The counter of `gauge` for `user`.
pub fn gauge_key(gauge: &str, user: &UserId) -> String {
    format!("{gauge}/{user}")
}

/// The counter of rate `name` for `user` in the window holding `at_ms`, and when it expires
/// (the end of the window, in seconds, rounded up).
pub fn rate_key(name: &str, rate: RateLimit, user: &UserId, at_ms: u64) -> (String, u64) {
    let window = (rate.window.as_millis() as u64).max(1);
    let index = at_ms / window;
    let ends_ms = (index + 1).saturating_mul(window);
    (format!("{name}/{index}/{user}"), ends_ms.div_ceil(1000) + 1)
}

impl Broker {
    fn quotas(&self) -> &dyn Quotas {
        self.ports().quotas.as_ref()
    }

    /// Counts one action of `user` against `rate`: `false` when the window is full (and
    /// nothing was counted).
    pub(crate) async fn take_rate(
        &self,
        name: &str,
        rate: RateLimit,
        user: &UserId,
    ) -> Result<bool, StoreError> {
        if rate.is_unlimited() {
            return Ok(true);
        }
        let (key, expires_at) = rate_key(name, rate, user, now_ms());
        self.quotas().take(&key, rate.max, expires_at).await
    }

    /// Takes one slot of `gauge` for `user`: `false` when the user holds the limit already
    /// (after a recount, when one is due).
    pub(crate) async fn take_slot(&self, gauge: Gauge, user: &UserId) -> Result<bool, StoreError> {
        let limit = gauge.limit(self.config());
        if limit == 0 {
            return Ok(true);
        }
        let key = gauge_key(gauge.name(), user);
        let expires_at = now_secs() + GAUGE_LIFETIME_SECS;
        if self.quotas().take(&key, limit, expires_at).await? {
            return Ok(true);
        }
        let recount = format!("recount-{}", gauge.name());
        if !self.take_rate(&recount, RECOUNT_EVERY, user).await? {
            return Ok(false);
        }
        let held = self.count_held(gauge, user).await?;
        let counted = self.quotas().get(&key).await?;
        if held < counted {
            tracing::info!(%user, gauge = gauge.name(), counted, held, "gauge recounted");
            self.quotas().set(&key, held, expires_at).await?;
            return self.quotas().take(&key, limit, expires_at).await;
        }
        Ok(false)
    }

    /// Gives `n` slots of `gauge` back for `user`. A failure is logged, not returned: the
    /// slot is then held until the gauge is recounted or expires.
    pub(crate) async fn release_slots(&self, gauge: Gauge, user: &UserId, n: u64) {
        if n == 0 || gauge.limit(self.config()) == 0 {
            return;
        }
        let key = gauge_key(gauge.name(), user);
        if let Err(error) = self.quotas().release(&key, n).await {
            tracing::warn!(%user, gauge = gauge.name(), %error, "releasing a slot failed");
        }
    }

    /// What the stores hold of `gauge` for `user`.
    async fn count_held(&self, gauge: Gauge, user: &UserId) -> Result<u64, StoreError> {
        let connections = self.ports().connections.by_user(user).await?;
        match gauge {
            Gauge::Sockets => Ok(connections.len() as u64),
            Gauge::Subscriptions => {
                let mut held = 0;
                for connection in &connections {
                    held += self
                        .ports()
                        .subscriptions
                        .count_by_connection(&connection.id)
                        .await? as u64;
                }
                Ok(held)
            }
        }
    }
}

/// The GraphQL error of an operation over a per-user limit: `message`, with
/// `extensions.code` [`RATE_LIMITED`].
pub fn rate_limited(message: impl Into<String>) -> async_graphql::ServerError {
    let mut error = async_graphql::ServerError::new(message, None);
    let mut extensions = async_graphql::ErrorExtensionValues::default();
    extensions.set("code", RATE_LIMITED);
    error.extensions = Some(extensions);
    error
}
