//! The live sockets, by connection id: what the Management API posts to and closes.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::ws::Message;
use broker::ConnectionId;
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

/// A frame (or a close) on its way to one socket's writer task. Bounded: see
/// [`Sockets::send`].
pub type Outbox = mpsc::Sender<Message>;

/// Every open socket of this gateway, by connection id, and how many were closed for reading
/// too slowly.
#[derive(Debug, Default)]
pub struct Sockets {
    open: Mutex<HashMap<ConnectionId, Socket>>,
    too_slow: AtomicU64,
    /// How long a socket's outbox may stay full before the socket is closed
    /// ([`Sockets::send`]).
    full_timeout: Duration,
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
    /// Since when the outbox has been full with frames waiting for room, if it is.
    pub full_since: Arc<Mutex<Option<Instant>>>,
    /// Milliseconds since the Unix epoch when the socket was upgraded (`connectedAt`).
    pub connected_at_ms: u64,
    /// Milliseconds since the Unix epoch of the last frame the client sent (`lastActiveAt`).
    pub last_active_ms: u64,
}

impl Socket {
    /// A socket whose writer task drains `outbox`, told of an overflow through `overflow`.
    pub fn new(outbox: Outbox, overflow: Arc<Notify>, connected_at_ms: u64) -> Self {
        Self {
            outbox,
            overflow,
            full_since: Arc::default(),
            connected_at_ms,
            last_active_ms: connected_at_ms,
        }
    }

    fn full_since(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.full_since.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Sockets {
    /// No socket yet; a socket's outbox may stay full for `full_timeout` before the socket
    /// is closed ([`Sockets::send`]).
    pub fn new(full_timeout: Duration) -> Self {
        Self {
            full_timeout,
            ..Self::default()
        }
    }

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
    /// The outbox is bounded. When it is full the message waits for room (the post that
    /// brought it waits with it), so a client that reads is never closed for being behind a
    /// burst: its writer drains the outbox as fast as the client takes frames, and the
    /// waiting posts follow. A socket whose outbox stays full for the full timeout reads
    /// slower than it is written to: it is closed (1013) and forgotten here, every message
    /// still waiting for it is refused as for a gone connection, and the broker drops its
    /// subscriptions. The time counts from when the outbox filled up, not from each
    /// message's arrival, and it ends only once a message finds room with none waiting
    /// before it: a client reading slower than its frames arrive keeps the outbox full and is
    /// closed, however many frames it takes meanwhile. So memory per socket stays bounded,
    /// and a client that does not keep up holds back the posts to it (and the deliveries
    /// they belong to) for at most the full timeout, once.
    pub async fn send(&self, id: &ConnectionId, message: Message) -> bool {
        let Some(socket) = self.get(id) else {
            return false;
        };
        let message = match socket.outbox.try_send(message) {
            Ok(()) => {
                // Room with nobody waiting before it: the client has caught up.
                *socket.full_since() = None;
                return true;
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return false,
            Err(mpsc::error::TrySendError::Full(message)) => message,
        };
        let deadline = *socket.full_since().get_or_insert_with(Instant::now) + self.full_timeout;
        match tokio::time::timeout_at(deadline, socket.outbox.send(message)).await {
            Ok(sent) => sent.is_ok(),
            Err(_) => {
                self.close_too_slow(id, &socket);
                false
            }
        }
    }

    /// Closes (1013) and forgets a socket whose outbox stayed full, once.
    fn close_too_slow(&self, id: &ConnectionId, socket: &Socket) {
        let mut open = self.lock();
        // Only this very socket, and only once (other messages waiting time out too).
        if !open
            .get(id)
            .is_some_and(|s| Arc::ptr_eq(&s.overflow, &socket.overflow))
        {
            return;
        }
        open.remove(id);
        drop(open);
        socket.overflow.notify_one();
        self.too_slow.fetch_add(1, Ordering::Relaxed);
        tracing::info!(connection = %id, "closing a socket that reads too slowly");
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
