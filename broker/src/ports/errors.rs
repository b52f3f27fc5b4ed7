//! What a port's call can fail with.

/// Any error, boxed: the source a backend failure keeps.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a store ([`super::ConnectionStore`], [`super::SubscriptionStore`],
/// [`super::ReplayGate`], [`super::PageMarks`], [`super::EventLog`],
/// [`super::FanoutQueue`]) did not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A conditional write found the item already there (or missing, for an update).
    #[error("conflict: {0}")]
    Conflict(String),
    /// A conditional write found a bound already reached (a connection's subscriptions).
    #[error("limit reached: {0}")]
    LimitReached(String),
    /// The item exists but cannot be read back as the domain type.
    #[error("malformed item: {0}")]
    Malformed(String),
    /// The write was not confirmed by its deadline ([`super::EventLog::append_by`]); a
    /// remote store may still make it.
    #[error("not stored by its deadline")]
    TooLate,
    /// The backend itself failed (unreachable, throttled, refused the request).
    #[error("storage backend failed: {source}")]
    Backend {
        /// The backend's own error (an SDK error, a redb error, a stopped channel).
        #[source]
        source: BoxError,
    },
}

impl StoreError {
    /// [`StoreError::Backend`] with `source` as its source.
    pub fn backend(source: impl Into<BoxError>) -> Self {
        Self::Backend {
            source: source.into(),
        }
    }
}

/// Why a [`super::ConnectionGateway`] did not post or close.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The connection no longer exists (API Gateway answers 410 Gone).
    #[error("connection is gone")]
    Gone,
    /// The gateway refused this frame for this connection for good (a permanent client
    /// error such as 403 Forbidden or 413 Payload Too Large); retrying cannot help.
    #[error("gateway rejected the frame: {source}")]
    Rejected {
        /// What the gateway answered, as its client reported it.
        #[source]
        source: BoxError,
    },
    /// The gateway itself failed; a retry may succeed.
    #[error("gateway failed: {source}")]
    Backend {
        /// Why the call failed (throttled, a server error, no answer), as its client
        /// reported it.
        #[source]
        source: BoxError,
    },
}

impl GatewayError {
    /// [`GatewayError::Backend`] with `source` as its source.
    pub fn backend(source: impl Into<BoxError>) -> Self {
        Self::Backend {
            source: source.into(),
        }
    }
}
