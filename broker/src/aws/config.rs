//! SDK configuration and table names from the environment.

use std::time::Duration;

use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, ConfigLoader, Region, SdkConfig};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};

use crate::{ConfigError, settings};

/// Longest wait for a TCP and TLS connection to an AWS endpoint.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest wait for one attempt of a call, from sending the request to reading the answer.
pub(super) const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait for a whole call, the SDK's retries included: well inside the 30 s of the
/// publisher and the fan-out worker, so a stuck call fails its record instead of stalling
/// the batch until Lambda kills the function.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(20);

/// A loader with everything the broker's clients share, still open for adjustments (tests
/// swap in static credentials or a faster retry policy before calling `load`).
///
/// - one HTTPS client, rustls on ring: the SDK's default features would bring a second TLS
///   stack and aws-lc, a third more build time and binary size;
/// - the region from `AWS_REGION` / `AWS_DEFAULT_REGION`, else `us-east-1`: with default
///   features off the SDK's region chain has no HTTP client of its own and panics when it
///   falls through to instance metadata;
/// - credentials from the default chain (environment, profile, web identity, container,
///   instance metadata), which on Lambda is the environment;
/// - timeouts (3 s to connect, 5 s per attempt, 20 s per call with its retries): the SDK
///   sets only a connect timeout by default, so one stuck call could hold a whole batch;
/// - every service sent to `endpoint_url` when given (an emulator, the local gateway).
pub fn config_loader(endpoint_url: Option<&str>) -> ConfigLoader {
    let http_client = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let loader = aws_config::defaults(BehaviorVersion::latest())
        .http_client(http_client)
        .region(Region::new(region_from_env()))
        .timeout_config(timeouts());
    match endpoint_url {
        Some(url) => loader.endpoint_url(url),
        None => loader,
    }
}

fn timeouts() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .operation_attempt_timeout(ATTEMPT_TIMEOUT)
        .operation_timeout(OPERATION_TIMEOUT)
        .build()
}

/// The shared SDK configuration: see [`config_loader`].
pub async fn sdk_config(endpoint_url: Option<&str>) -> SdkConfig {
    config_loader(endpoint_url).load().await
}

fn region_from_env() -> String {
    // Names, never malformed.
    let region = |var: &settings::Var<String>| var.get().ok().flatten();
    region(&settings::AWS_REGION)
        .or_else(|| region(&settings::AWS_DEFAULT_REGION))
        .unwrap_or_else(|| settings::AWS_DEFAULT_REGION.default_value())
}

/// The broker's three tables.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableNames {
    /// The connections table (`CONNECTIONS_TABLE`).
    pub connections: String,
    /// The subscriptions table (`SUBSCRIPTIONS_TABLE`), which also holds the resume
    /// hand-over's and the fan-out page marks' items.
    pub subscriptions: String,
    /// The events table (`EVENTS_TABLE`), whose stream drives delivery.
    pub events: String,
}

impl TableNames {
    /// The three names, as given.
    pub fn new(
        connections: impl Into<String>,
        subscriptions: impl Into<String>,
        events: impl Into<String>,
    ) -> Self {
        Self {
            connections: connections.into(),
            subscriptions: subscriptions.into(),
            events: events.into(),
        }
    }

    /// Reads `CONNECTIONS_TABLE`, `SUBSCRIPTIONS_TABLE` and `EVENTS_TABLE`, which must be set.
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            connections: settings::CONNECTIONS_TABLE.value()?,
            subscriptions: settings::SUBSCRIPTIONS_TABLE.value()?,
            events: settings::EVENTS_TABLE.value()?,
        })
    }
}
