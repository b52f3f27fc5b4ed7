//! `$disconnect`, off the sockets' path: a closed socket hands its connection to a bounded
//! queue, and one worker runs the queued `$disconnect`s, a bounded number at once.
//!
//! Closing many sockets at once (a client fleet dropped, a network blip) turns into as many
//! `$disconnect`s, each removing a connection and its subscriptions from the store. Run by
//! every closing socket at once, they would fill the store's write queue and the blocking
//! pool ahead of the `$connect`, `connection_init` and subscribes of the sockets still open.
//! Here at most [`crate::server::Limits::cleanup_concurrency`] `$disconnect`s are at work at
//! once, the next starting as soon as one ends: a store that commits concurrent writes
//! together (the database file's writer does) forgets them a group at a time, and a live
//! socket's write waits behind at most that many, however long the backlog.
//!
//! What `$disconnect` means does not change: the app's `on_disconnect` hook runs, and the
//! connection and its subscriptions are forgotten. Until then a closed connection is still
//! stored, but its socket is gone: a delivery to it finds no socket (API Gateway's 410) and
//! forgets it, as on AWS when a delivery races a `$disconnect`. A process killed with a
//! backlog leaves those connections in the database file, which removes every connection at
//! the next start.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use aws_lambda_events::query_map::QueryMap;
use axum::http::HeaderMap;
use broker::{Broker, ConnectionId};
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::events;

/// The `$disconnect`s waiting to run, and how many there are.
#[derive(Clone, Debug)]
pub struct Cleanup {
    queue: mpsc::Sender<Closed>,
    backlog: Arc<AtomicUsize>,
}

/// A socket that closed.
#[derive(Debug)]
struct Closed {
    id: ConnectionId,
    connected_at_ms: u64,
}

impl Cleanup {
    /// The queue (`capacity` closed sockets; a socket closing while it is full waits for
    /// room) and its worker, which runs up to `concurrency` `$disconnect`s at once.
    pub fn start(broker: Broker, concurrency: usize, capacity: usize) -> (Self, JoinHandle<()>) {
        let (queue, closed) = mpsc::channel(capacity.max(1));
        let backlog = Arc::new(AtomicUsize::new(0));
        let worker = tokio::spawn(work(broker, closed, concurrency.max(1), backlog.clone()));
        (Self { queue, backlog }, worker)
    }

    /// Queues the `$disconnect` of a socket that closed.
    pub async fn disconnected(&self, id: ConnectionId, connected_at_ms: u64) {
        self.backlog.fetch_add(1, Ordering::Relaxed);
        let closed = Closed {
            id,
            connected_at_ms,
        };
        if let Err(mpsc::error::SendError(closed)) = self.queue.send(closed).await {
            // The gateway is shutting down: the next start forgets every connection.
            self.backlog.fetch_sub(1, Ordering::Relaxed);
            tracing::debug!(connection = %closed.id, "$disconnect dropped at shutdown");
        }
    }

    /// Closed sockets whose `$disconnect` has not finished yet.
    pub fn backlog(&self) -> usize {
        self.backlog.load(Ordering::Relaxed)
    }
}

async fn work(
    broker: Broker,
    queue: mpsc::Receiver<Closed>,
    concurrency: usize,
    backlog: Arc<AtomicUsize>,
) {
    let closed = futures_util::stream::unfold(queue, |mut queue| async move {
        queue.recv().await.map(|closed| (closed, queue))
    });
    closed
        .for_each_concurrent(concurrency, |closed| {
            let (broker, backlog) = (&broker, &backlog);
            async move {
                disconnect(broker, closed).await;
                backlog.fetch_sub(1, Ordering::Relaxed);
            }
        })
        .await;
}

/// The `$disconnect` event, to the same handler as on Lambda.
async fn disconnect(broker: &Broker, closed: Closed) {
    let event = events::websocket(
        "$disconnect",
        &closed.id,
        closed.connected_at_ms,
        HeaderMap::new(),
        QueryMap::default(),
        None,
    );
    if let Err(e) = graphql_api::websocket::handle(broker, event).await {
        tracing::error!(connection = %closed.id, error = %e, "$disconnect failed");
    }
}
