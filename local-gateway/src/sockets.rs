//! The live sockets, by connection id: what the Management API posts to and closes.

use std::collections::HashMap;
use std::sync::Mutex;

use axum::extract::ws::Message;
use broker::ConnectionId;
use tokio::sync::mpsc;

/// A frame (or a close) on its way to one socket's writer task.
pub type Outbox = mpsc::UnboundedSender<Message>;

#[derive(Default)]
pub struct Sockets {
    open: Mutex<HashMap<ConnectionId, Socket>>,
}

#[derive(Clone)]
pub struct Socket {
    pub outbox: Outbox,
    pub connected_at_ms: u64,
    pub last_active_ms: u64,
}

impl Sockets {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ConnectionId, Socket>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn insert(&self, id: ConnectionId, socket: Socket) {
        self.lock().insert(id, socket);
    }

    pub fn remove(&self, id: &ConnectionId) {
        self.lock().remove(id);
    }

    pub fn get(&self, id: &ConnectionId) -> Option<Socket> {
        self.lock().get(id).cloned()
    }

    pub fn touch(&self, id: &ConnectionId) {
        if let Some(socket) = self.lock().get_mut(id) {
            socket.last_active_ms = broker::domain::now_ms();
        }
    }

    /// Queues a message for the socket; `false` when it is gone (API Gateway's 410).
    pub fn send(&self, id: &ConnectionId, message: Message) -> bool {
        self.lock()
            .get(id)
            .is_some_and(|socket| socket.outbox.send(message).is_ok())
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
