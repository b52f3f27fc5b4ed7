//! The fan-out page marks on the subscriptions table.

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;

use super::records::pages_partition;
use super::subscriptions::item_key;
use super::{backend, batch_put, number, string};
use crate::aws::retry::RetryPolicy;
use crate::domain::{Topic, now_secs};
use crate::ports::{PageMarks, StoreError};

/// [`PageMarks`] on the subscriptions table: one item per page in the topic's own partition
/// `#pages/{topic}`, expiring (`ttl`) when the page cannot be in the queue any more.
#[derive(Clone, Debug)]
pub struct DynamoDbPageMarks {
    client: Client,
    table: String,
    retry: RetryPolicy,
}

impl DynamoDbPageMarks {
    /// The marks kept in `table` (the subscriptions table).
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
            retry: RetryPolicy::default(),
        }
    }

    /// How unprocessed batch entries are retried.
    pub fn with_retry_policy(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }
}

#[async_trait]
impl PageMarks for DynamoDbPageMarks {
    async fn pages_enqueued(
        &self,
        topic: &Topic,
        pages: &[String],
        expires_at: u64,
    ) -> Result<(), StoreError> {
        let partition = pages_partition(topic);
        let until = number(i64::try_from(expires_at).unwrap_or(i64::MAX));
        let items = pages
            .iter()
            .map(|page| {
                let mut item = item_key(&partition, page);
                item.insert("ttl".to_owned(), until.clone());
                item
            })
            .collect();
        batch_put(&self.client, &self.table, items, self.retry).await
    }

    async fn page_done(&self, topic: &Topic, page: &str) -> Result<(), StoreError> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(item_key(&pages_partition(topic), page)))
            .send()
            .await
            .map_err(backend("DeleteItem"))?;
        Ok(())
    }

    async fn pages_in_flight(&self, topic: &Topic) -> Result<bool, StoreError> {
        // DynamoDB removes expired items only eventually: the filter skips them. The first
        // page of results that holds one live mark answers.
        let mut marks = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("#topic = :pages")
            .filter_expression("#ttl > :now")
            .expression_attribute_names("#topic", "topic")
            .expression_attribute_names("#ttl", "ttl")
            .expression_attribute_values(":pages", string(pages_partition(topic)))
            .expression_attribute_values(":now", number(now_secs() as i64))
            .projection_expression("#topic")
            .consistent_read(true)
            .into_paginator()
            .send();
        while let Some(page) = marks.next().await {
            if page.map_err(backend("Query"))?.count > 0 {
                return Ok(true);
            }
        }
        Ok(false)
    }
}
