//! The replay gate in the database file.

use ::redb::ReadableTable;
use async_trait::async_trait;

use super::store::Commit;
use super::tables::{HELD, SUBSCRIPTIONS};
use super::{FileStore, backend, from_json, to_json};
use crate::domain::{Subscription, now_ms};
use crate::ports::{HandOver, Hold, ReplayGate, StoreError};

/// The replay gate of the database's subscriptions ([`FileStore::replay_gate`]): each check
/// and its change are one write transaction on the subscription's own row and its count.
#[derive(Debug)]
pub struct FileReplayGate {
    pub(super) store: FileStore,
}

#[async_trait]
impl ReplayGate for FileReplayGate {
    async fn hold(&self, subscription: &Subscription) -> Result<Hold, StoreError> {
        let (topic, key) = (subscription.topic.clone(), subscription.key.encode());
        self.store
            .write(Commit::Light, move |tx| {
                let id = (topic.as_str(), key.as_str());
                let stored = tx
                    .open_table(SUBSCRIPTIONS)
                    .map_err(backend)?
                    .get(id)
                    .map_err(backend)?
                    .map(|bytes| from_json::<Subscription>(bytes.value()))
                    .transpose()?;
                let until = stored.map_or(0, |s| s.replaying_until_ms);
                if until == 0 {
                    return Ok(Hold::Live);
                }
                if until <= now_ms() {
                    return Ok(Hold::Abandoned);
                }
                let mut held = tx.open_table(HELD).map_err(backend)?;
                let count = held.get(id).map_err(backend)?.map_or(0, |n| n.value());
                held.insert(id, count + 1).map_err(backend)?;
                Ok(Hold::Held)
            })
            .await
    }

    async fn hand_over(
        &self,
        subscription: &Subscription,
        held: Option<u64>,
    ) -> Result<HandOver, StoreError> {
        let (topic, key) = (subscription.topic.clone(), subscription.key.encode());
        self.store
            .write(Commit::Light, move |tx| {
                let id = (topic.as_str(), key.as_str());
                let mut counts = tx.open_table(HELD).map_err(backend)?;
                let now_held = counts.get(id).map_err(backend)?.map_or(0, |n| n.value());
                if held.is_some_and(|held| held != now_held) {
                    return Ok(HandOver::Held(now_held));
                }
                counts.remove(id).map_err(backend)?;
                let mut subscriptions = tx.open_table(SUBSCRIPTIONS).map_err(backend)?;
                let stored = subscriptions
                    .get(id)
                    .map_err(backend)?
                    .map(|bytes| from_json::<Subscription>(bytes.value()))
                    .transpose()?;
                if let Some(mut stored) = stored {
                    stored.replaying_until_ms = 0;
                    subscriptions
                        .insert(id, to_json(&stored)?.as_slice())
                        .map_err(backend)?;
                }
                Ok(HandOver::Done)
            })
            .await
    }
}

impl FileStore {
    /// The replay gate of this database's subscriptions.
    pub fn replay_gate(&self) -> FileReplayGate {
        FileReplayGate {
            store: self.clone(),
        }
    }
}
