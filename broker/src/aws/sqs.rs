//! [`FanoutQueue`] on SQS.

use async_trait::async_trait;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;

use super::error::AwsCallError;
use super::retry::RetryPolicy;
use crate::ports::{FanoutPage, FanoutQueue, StoreError};

/// SQS takes at most ten messages in one SendMessageBatch.
const BATCH_LIMIT: usize = 10;

/// Sends fan-out pages to an SQS queue, one message per page (its JSON).
#[derive(Clone, Debug)]
pub struct SqsFanoutQueue {
    client: Client,
    queue_url: String,
    retry: RetryPolicy,
}

impl SqsFanoutQueue {
    pub fn new(client: Client, queue_url: impl Into<String>) -> Self {
        Self {
            client,
            queue_url: queue_url.into(),
            retry: RetryPolicy::default(),
        }
    }

    /// How entries SQS failed on its side are retried.
    pub fn with_retry_policy(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    pub fn queue_url(&self) -> &str {
        &self.queue_url
    }

    /// Sends up to ten pages. Entries SQS failed through no fault of the request are sent
    /// again; any other failed entry fails the call, since a page left behind is a set of
    /// subscribers who never get the event.
    async fn send_batch(&self, pages: &[FanoutPage]) -> Result<(), StoreError> {
        // Entry ids are positions in `pages`, so a failed entry leads back to its page.
        let mut pending: Vec<usize> = (0..pages.len()).collect();
        let mut attempt = 0;
        loop {
            let entries = pending
                .iter()
                .map(|&i| {
                    let body = serde_json::to_string(&pages[i])
                        .map_err(|e| StoreError::Malformed(e.to_string()))?;
                    SendMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .message_body(body)
                        .build()
                        .map_err(|e| StoreError::backend(AwsCallError::new("SendMessageBatch", e)))
                })
                .collect::<Result<Vec<_>, StoreError>>()?;
            let output = self
                .client
                .send_message_batch()
                .queue_url(&self.queue_url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| StoreError::backend(AwsCallError::new("SendMessageBatch", e)))?;
            let failed = output.failed;
            if failed.is_empty() {
                return Ok(());
            }
            // Only ids this call sent are trusted to index `pages`.
            let again: Vec<usize> = pending
                .iter()
                .copied()
                .filter(|i| failed.iter().any(|entry| entry.id == i.to_string()))
                .collect();
            let retryable = again.len() == failed.len() && failed.iter().all(|e| !e.sender_fault);
            if !retryable || attempt >= self.retry.retries {
                let details = failed
                    .iter()
                    .map(|entry| {
                        format!(
                            "entry {}: {} {}",
                            entry.id,
                            entry.code,
                            entry.message.as_deref().unwrap_or_default()
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("; ");
                return Err(StoreError::backend(AwsCallError::message(
                    "SendMessageBatch",
                    format!(
                        "{} of {} entries failed: {details}",
                        failed.len(),
                        pending.len()
                    ),
                )));
            }
            pending = again;
            self.retry.sleep(attempt).await;
            attempt += 1;
        }
    }
}

#[async_trait]
impl FanoutQueue for SqsFanoutQueue {
    async fn enqueue(&self, pages: &[FanoutPage]) -> Result<(), StoreError> {
        for batch in pages.chunks(BATCH_LIMIT) {
            self.send_batch(batch).await?;
        }
        Ok(())
    }
}
