//! The recording gateway: a connection gateway for tests.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use async_trait::async_trait;

use super::lock;
use crate::domain::ConnectionId;
use crate::ports::{ConnectionGateway, GatewayError};
use crate::protocol::CloseCode;

/// A gateway that records what was posted instead of sending it; connections listed with
/// [`RecordingGateway::set_gone`] answer like API Gateway's 410, those listed with
/// [`RecordingGateway::set_failing`] like a gateway that is down.
#[derive(Default)]
pub struct RecordingGateway {
    inner: Mutex<RecordingState>,
}

#[derive(Default)]
struct RecordingState {
    frames: HashMap<ConnectionId, Vec<String>>,
    closed: Vec<(ConnectionId, CloseCode)>,
    gone: HashSet<ConnectionId>,
    failing: HashSet<ConnectionId>,
}

impl std::fmt::Debug for RecordingGateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordingGateway").finish_non_exhaustive()
    }
}

impl RecordingGateway {
    /// Takes the frames posted to `id` so far, parsed as JSON.
    pub fn take(&self, id: &ConnectionId) -> Vec<serde_json::Value> {
        self.take_text(id)
            .iter()
            .map(|f| serde_json::from_str(f).expect("posted frames are JSON"))
            .collect()
    }

    /// Takes the frames posted to `id` so far, as posted.
    pub fn take_text(&self, id: &ConnectionId) -> Vec<String> {
        lock(&self.inner).frames.remove(id).unwrap_or_default()
    }

    /// Every connection closed so far and the code it was closed with, in the order of the
    /// calls.
    pub fn closed(&self) -> Vec<(ConnectionId, CloseCode)> {
        lock(&self.inner).closed.clone()
    }

    /// From now on `id` answers every post and close with [`GatewayError::Gone`], as API
    /// Gateway does once the client has disconnected.
    pub fn set_gone(&self, id: &ConnectionId) {
        lock(&self.inner).gone.insert(id.clone());
    }

    /// From now on posts to `id` fail with [`GatewayError::Backend`], as from a gateway that
    /// is down; a retry fails again.
    pub fn set_failing(&self, id: &ConnectionId) {
        lock(&self.inner).failing.insert(id.clone());
    }
}

#[async_trait]
impl ConnectionGateway for RecordingGateway {
    async fn post(&self, id: &ConnectionId, frame: &str) -> Result<(), GatewayError> {
        let mut state = lock(&self.inner);
        if state.gone.contains(id) {
            return Err(GatewayError::Gone);
        }
        if state.failing.contains(id) {
            return Err(GatewayError::backend("the gateway is down"));
        }
        state
            .frames
            .entry(id.clone())
            .or_default()
            .push(frame.to_owned());
        Ok(())
    }

    async fn close(
        &self,
        id: &ConnectionId,
        code: CloseCode,
        _reason: &str,
    ) -> Result<(), GatewayError> {
        let mut state = lock(&self.inner);
        if state.gone.contains(id) {
            return Err(GatewayError::Gone);
        }
        state.closed.push((id.clone(), code));
        Ok(())
    }
}
