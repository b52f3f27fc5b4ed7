//! The connection gateway port.

use async_trait::async_trait;

use super::GatewayError;
use crate::domain::ConnectionId;
use crate::protocol::CloseCode;

/// Posts frames to connections: the API Gateway Management API, or the local gateway.
#[async_trait]
pub trait ConnectionGateway: Send + Sync {
    /// Posts one frame; [`GatewayError::Gone`] when the connection no longer exists.
    async fn post(&self, id: &ConnectionId, frame: &str) -> Result<(), GatewayError>;
    /// Closes a connection. API Gateway cannot send a close code; the local gateway does.
    async fn close(
        &self,
        id: &ConnectionId,
        code: CloseCode,
        reason: &str,
    ) -> Result<(), GatewayError>;
}
