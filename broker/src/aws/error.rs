//! One error type for every failed AWS call.

use aws_smithy_types::error::display::DisplayErrorContext;

use crate::ports::BoxError;

/// An AWS call that failed, with the operation's name and the SDK error kept as the source.
///
/// The SDK's own `Display` says little ("service error"); the message here carries the
/// whole chain (error code, message, HTTP status) so a log line is enough to act on.
#[derive(Debug, thiserror::Error)]
#[error("{operation} failed: {details}")]
pub struct AwsCallError {
    operation: &'static str,
    details: String,
    #[source]
    source: Option<BoxError>,
}

impl AwsCallError {
    /// A failed `operation`, keeping the SDK's `error` as the source.
    pub fn new<E>(operation: &'static str, error: E) -> Self
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        Self {
            operation,
            details: DisplayErrorContext(&error).to_string(),
            source: Some(Box::new(error)),
        }
    }

    /// An operation that failed without an SDK error behind it (e.g. a batch entry).
    pub fn message(operation: &'static str, details: impl Into<String>) -> Self {
        Self {
            operation,
            details: details.into(),
            source: None,
        }
    }

    /// The name of the AWS operation that failed, e.g. `PutItem`.
    pub fn operation(&self) -> &'static str {
        self.operation
    }
}
