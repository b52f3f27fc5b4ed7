//! The live sockets, by connection id: what the Management API posts to and closes.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::ws::Message;
use broker::ConnectionId;
use tokio::sync::{Notify, mpsc};

/// A frame (or a close) on its way to one socket's writer task. Bounded: see
/// [`Sockets::send`].
pub type Outbox = mpsc::Sender<Message>;

/// Every open socket of this gateway, by connection id, and how many were closed for reading
/// too slowly.
#[derive(Debug, Default)]
pub struct Sockets {
    open: Mutex<HashMap<ConnectionId, Socket>>,
    too_slow: AtomicU64,
}

/// One open socket, as the Management API sees it.
#[derive(Clone, Debug)]
pub struct Socket {
    /// Where frames for the socket are queued for its writer task.
    pub outbox: Outbox,
    /// Told when the outbox overflowed: the writer then closes the socket.
    pub overflow: Arc<Notify>,
    /// Milliseconds since the Unix epoch when the socket was upgraded (`connectedAt`).
    pub connected_at_ms: u64,
    /// Milliseconds since the Unix epoch of the last frame the client sent (`lastActiveAt`).
    pub last_active_ms: u64,
}

impl Sockets {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ConnectionId, Socket>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a newly upgraded socket.
    pub fn insert(&self, id: ConnectionId, socket: Socket) {
        self.lock().insert(id, socket);
    }

    /// Forgets a socket once it is closed.
    pub fn remove(&self, id: &ConnectionId) {
        self.lock().remove(id);
    }

    /// The socket with this id, if it is open.
    pub fn get(&self, id: &ConnectionId) -> Option<Socket> {
        self.lock().get(id).cloned()
    }

    /// Records that the client just sent a frame (`lastActiveAt`).
    pub fn touch(&self, id: &ConnectionId) {
        if let Some(socket) = self.lock().get_mut(id) {
            socket.last_active_ms = broker::domain::now_ms();
        }
    }

    /// Queues a message for the socket; `false` when it is gone (API Gateway's 410).
    ///
    /// A socket whose outbox is full reads slower than it is written to: it is closed (1013)
    /// and forgotten here, so the frame is refused as for a gone connection and the broker
    /// drops its subscriptions. Memory per socket stays bounded and one slow client never
    /// holds back another.
    pub fn send(&self, id: &ConnectionId, message: Message) -> bool {
        let mut open = self.lock();
        let Some(socket) = open.get(id) else {
            return false;
        };
        match socket.outbox.try_send(message) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Closed(_)) => false,
            Err(mpsc::error::TrySendError::Full(_)) => {
                socket.overflow.notify_one();
                open.remove(id);
                self.too_slow.fetch_add(1, Ordering::Relaxed);
                tracing::info!(connection = %id, "closing a socket that reads too slowly");
                false
            }
        }
    }

    /// How many sockets were closed because they could not keep up.
    pub fn closed_too_slow(&self) -> u64 {
        self.too_slow.load(Ordering::Relaxed)
    }

    /// How many sockets are open.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no socket is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
