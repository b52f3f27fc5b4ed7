//! The in-memory fan-out queue.

use async_trait::async_trait;
use tokio::sync::mpsc;

use crate::ports::{FanoutPage, FanoutQueue, StoreError};

/// A fan-out queue over a tokio channel: the local mode runs the worker on the other end.
#[derive(Debug)]
pub struct ChannelFanoutQueue {
    sender: mpsc::UnboundedSender<FanoutPage>,
    ordered: bool,
}

impl ChannelFanoutQueue {
    /// A queue that promises no order ([`FanoutQueue::ordered`] is false).
    pub fn new() -> (Self, mpsc::UnboundedReceiver<FanoutPage>) {
        let (sender, receiver) = mpsc::unbounded_channel();
        (
            Self {
                sender,
                ordered: false,
            },
            receiver,
        )
    }

    /// A queue whose consumer keeps each group's pages in order and retries a failed page
    /// before the later pages of its group (the local mode's embedded worker does).
    pub fn ordered() -> (Self, mpsc::UnboundedReceiver<FanoutPage>) {
        let (queue, receiver) = Self::new();
        (
            Self {
                ordered: true,
                ..queue
            },
            receiver,
        )
    }
}

#[async_trait]
impl FanoutQueue for ChannelFanoutQueue {
    fn ordered(&self) -> bool {
        self.ordered
    }

    async fn enqueue(&self, pages: &[FanoutPage]) -> Result<(), StoreError> {
        for page in pages {
            self.sender
                .send(page.clone())
                .map_err(|_| StoreError::backend("fan-out worker has stopped"))?;
        }
        Ok(())
    }
}
