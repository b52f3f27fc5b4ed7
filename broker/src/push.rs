//! Pushing to a user rather than to a subscription: a raw frame to every open connection of
//! one user, or closing them all.

use crate::Broker;
use crate::delivery::post::Frame;
use crate::domain::UserId;
use crate::ports::StoreError;
use crate::protocol::CloseCode;

impl Broker {
    /// Posts one raw frame to every open connection of `user` (every frontend they have
    /// open). Returns how many connections received it.
    pub async fn send_to_user(&self, user: &UserId, frame: &str) -> Result<usize, StoreError> {
        let connections = self.ports().connections.by_user(user).await?;
        let frames = connections
            .into_iter()
            .filter(|c| c.initialised)
            .map(|c| Frame::new(c.id, None, frame.to_owned()))
            .collect();
        Ok(self.post_all(frames).await.delivered)
    }

    /// Closes every connection of `user` (sign-out everywhere, a revoked account). Returns
    /// how many were closed.
    pub async fn disconnect_user(
        &self,
        user: &UserId,
        code: CloseCode,
    ) -> Result<usize, StoreError> {
        let connections = self.ports().connections.by_user(user).await?;
        let count = connections.len();
        for connection in connections {
            if let Err(e) = self
                .close(&connection.id, code, "disconnected by the server")
                .await
            {
                tracing::warn!(connection = %connection.id, error = %e, "disconnect failed");
            }
        }
        Ok(count)
    }
}
