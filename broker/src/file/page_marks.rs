//! The fan-out page marks in the database file.

use ::redb::ReadableTable;
use async_trait::async_trait;

use super::store::Commit;
use super::tables::PAGES;
use super::{FileStore, backend};
use crate::domain::{Topic, now_secs};
use crate::ports::{PageMarks, StoreError};

/// Fan-out pages on their way, in the database file ([`FileStore::page_marks`]).
#[derive(Debug)]
pub struct FilePageMarks {
    pub(super) store: FileStore,
}

#[async_trait]
impl PageMarks for FilePageMarks {
    async fn pages_enqueued(
        &self,
        topic: &Topic,
        pages: &[String],
        expires_at: u64,
    ) -> Result<(), StoreError> {
        let (topic, pages) = (topic.clone(), pages.to_vec());
        self.store
            .write(Commit::Durable, move |tx| {
                let mut table = tx.open_table(PAGES).map_err(backend)?;
                let now = now_secs();
                for (page, until) in page_marks(&table, &topic)? {
                    if until <= now {
                        table
                            .remove((topic.as_str(), page.as_str()))
                            .map_err(backend)?;
                    }
                }
                for page in &pages {
                    let key = (topic.as_str(), page.as_str());
                    table.insert(key, expires_at).map_err(backend)?;
                }
                Ok(())
            })
            .await
    }

    async fn page_done(&self, topic: &Topic, page: &str) -> Result<(), StoreError> {
        let (topic, page) = (topic.clone(), page.to_owned());
        self.store
            .write(Commit::Durable, move |tx| {
                let mut table = tx.open_table(PAGES).map_err(backend)?;
                table
                    .remove((topic.as_str(), page.as_str()))
                    .map_err(backend)?;
                Ok(())
            })
            .await
    }

    async fn pages_in_flight(&self, topic: &Topic) -> Result<bool, StoreError> {
        let topic = topic.clone();
        self.store
            .run(move |store| {
                let tx = store.read()?;
                let table = tx.open_table(PAGES).map_err(backend)?;
                let now = now_secs();
                Ok(page_marks(&table, &topic)?
                    .iter()
                    .any(|(_, until)| *until > now))
            })
            .await
    }
}

/// The marks of `topic`'s pages on their way: (page id, until when).
fn page_marks(
    table: &impl ReadableTable<(&'static str, &'static str), u64>,
    topic: &Topic,
) -> Result<Vec<(String, u64)>, StoreError> {
    let mut marks = Vec::new();
    for entry in table.range((topic.as_str(), "")..).map_err(backend)? {
        let (key, until) = entry.map_err(backend)?;
        let (of, page) = key.value();
        if of != topic.as_str() {
            break;
        }
        marks.push((page.to_owned(), until.value()));
    }
    Ok(marks)
}

impl FileStore {
    /// The marks of fan-out pages on their way.
    pub fn page_marks(&self) -> FilePageMarks {
        FilePageMarks {
            store: self.clone(),
        }
    }
}
