//! The live sockets, by connection id: what the Management API posts to and closes.

use std::collections::HashMap;
use std::net::IpAddr;
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
    /// Sockets not initialised yet, by client address: at most one entry per open socket
    /// (an address leaves the map when its count drops to zero).
    uninitialised: Mutex<HashMap<IpAddr, usize>>,
}

/// One socket of `address` not initialised yet, counted in [`Sockets`] until it is dropped
/// (the socket was initialised, or it ended).
#[derive(Debug)]
pub struct Uninitialised {
    sockets: Arc<Sockets>,
    address: IpAddr,
}

impl Drop for Uninitialised {
    fn drop(&mut self) {
        let mut counts = self
            .sockets
            .uninitialised
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(count) = counts.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.address);
            }
        }
    }
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

    /// Counts one more socket of `address` not initialised yet, unless `address` has `limit`
    /// of them already (`None`); a `limit` of 0 is no limit. The socket counts until the
    /// returned guard is dropped.
    pub fn hold_uninitialised(
        self: &Arc<Self>,
        address: IpAddr,
        limit: usize,
    ) -> Option<Uninitialised> {
        let mut counts = self.uninitialised.lock().unwrap_or_else(|e| e.into_inner());
        let count = counts.entry(address).or_insert(0);
        if limit > 0 && *count >= limit {
            return None;
        }
        *count += 1;
        Some(Uninitialised {
            sockets: self.clone(),
            address,
        })
    }

    /// How many sockets of `address` are not initialised yet.
    pub fn uninitialised_of(&self, address: IpAddr) -> usize {
        self.uninitialised
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&address)
            .copied()
            .unwrap_or(0)
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
