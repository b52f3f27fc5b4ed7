//! The in-memory replay gate.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::lock;
use super::subscriptions::SubscriptionIndex;
use crate::domain::{Subscription, now_ms};
use crate::ports::{HandOver, Hold, ReplayGate, StoreError};

/// The replay gate of a [`super::MemorySubscriptionStore`]
/// ([`super::MemorySubscriptionStore::replay_gate`]): it works on the store's own maps,
/// under the store's lock, so each check and its change are one step.
#[derive(Clone)]
pub struct MemoryReplayGate {
    index: Arc<Mutex<SubscriptionIndex>>,
}

impl std::fmt::Debug for MemoryReplayGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryReplayGate").finish_non_exhaustive()
    }
}

impl MemoryReplayGate {
    pub(super) fn new(index: Arc<Mutex<SubscriptionIndex>>) -> Self {
        Self { index }
    }
}

#[async_trait]
impl ReplayGate for MemoryReplayGate {
    async fn hold(&self, subscription: &Subscription) -> Result<Hold, StoreError> {
        let mut index = lock(&self.index);
        let until = match index.stored_mut(subscription) {
            Some(stored) => stored.replaying_until_ms,
            None => return Ok(Hold::Live),
        };
        Ok(match until {
            0 => Hold::Live,
            until if until > now_ms() => {
                *index.held.entry(subscription.key.clone()).or_default() += 1;
                Hold::Held
            }
            _ => Hold::Abandoned,
        })
    }

    async fn hand_over(
        &self,
        subscription: &Subscription,
        held: Option<u64>,
    ) -> Result<HandOver, StoreError> {
        let mut index = lock(&self.index);
        let now_held = index.held.get(&subscription.key).copied().unwrap_or(0);
        if held.is_some_and(|held| held != now_held) {
            return Ok(HandOver::Held(now_held));
        }
        if let Some(stored) = index.stored_mut(subscription) {
            stored.replaying_until_ms = 0;
        }
        index.held.remove(&subscription.key);
        Ok(HandOver::Done)
    }
}
