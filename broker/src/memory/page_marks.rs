//! The in-memory page marks.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

use super::lock;
use crate::domain::{Topic, now_secs};
use crate::ports::{PageMarks, StoreError};

/// Fan-out pages on their way, in a map by topic: page id → until when it can be in the
/// queue.
#[derive(Default)]
pub struct MemoryPageMarks {
    pages: Mutex<HashMap<Topic, HashMap<String, u64>>>,
}

impl std::fmt::Debug for MemoryPageMarks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryPageMarks").finish_non_exhaustive()
    }
}

#[async_trait]
impl PageMarks for MemoryPageMarks {
    async fn pages_enqueued(
        &self,
        topic: &Topic,
        pages: &[String],
        expires_at: u64,
    ) -> Result<(), StoreError> {
        let mut marks = lock(&self.pages);
        let now = now_secs();
        marks.retain(|_, topic_marks| {
            topic_marks.retain(|_, until| *until > now);
            !topic_marks.is_empty()
        });
        let topic_marks = marks.entry(topic.clone()).or_default();
        topic_marks.extend(pages.iter().map(|page| (page.clone(), expires_at)));
        Ok(())
    }

    async fn page_done(&self, topic: &Topic, page: &str) -> Result<(), StoreError> {
        let mut marks = lock(&self.pages);
        if let Some(topic_marks) = marks.get_mut(topic) {
            topic_marks.remove(page);
            if topic_marks.is_empty() {
                marks.remove(topic);
            }
        }
        Ok(())
    }

    async fn pages_in_flight(&self, topic: &Topic) -> Result<bool, StoreError> {
        let marks = lock(&self.pages);
        let now = now_secs();
        Ok(marks
            .get(topic)
            .is_some_and(|marks| marks.values().any(|until| *until > now)))
    }
}
