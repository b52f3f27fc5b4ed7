//! [`FanoutQueue`] on SQS: a standard queue, or a FIFO queue (its URL ends in `.fifo`) that
//! keeps each group's pages in order.

use async_trait::async_trait;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use sha2::{Digest, Sha256};

use super::error::AwsCallError;
use super::retry::RetryPolicy;
use crate::ports::{FanoutPage, FanoutQueue, StoreError};

/// SQS takes at most ten messages in one SendMessageBatch.
const BATCH_LIMIT: usize = 10;

/// SQS's limit on a MessageGroupId and a MessageDeduplicationId.
const MAX_ID_CHARS: usize = 128;

/// Sends fan-out pages to an SQS queue, one message per page (its JSON).
///
/// On a FIFO queue each message carries the page's group as its MessageGroupId
/// ([`message_group_id`]), so SQS hands a group's pages to the workers one at a time and in
/// order, and a MessageDeduplicationId derived from the page ([`deduplication_id`]), so a
/// publisher that sends the same pages again (a retried stream record) within SQS's
/// five-minute deduplication window enqueues nothing new.
#[derive(Clone, Debug)]
pub struct SqsFanoutQueue {
    client: Client,
    queue_url: String,
    fifo: bool,
    retry: RetryPolicy,
}

impl SqsFanoutQueue {
    /// A FIFO queue when `queue_url` ends in `.fifo` (SQS requires that suffix of a FIFO
    /// queue's name, and CloudFormation generates it).
    pub fn new(client: Client, queue_url: impl Into<String>) -> Self {
        let queue_url = queue_url.into();
        Self {
            client,
            fifo: queue_url.ends_with(".fifo"),
            queue_url,
            retry: RetryPolicy::default(),
        }
    }

    /// Whether this is a FIFO queue.
    pub fn is_fifo(&self) -> bool {
        self.fifo
    }

    /// How entries SQS failed on its side are retried.
    pub fn with_retry_policy(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The URL of the queue pages are sent to.
    pub fn queue_url(&self) -> &str {
        &self.queue_url
    }

    /// Sends up to ten pages. Entries SQS failed through no fault of the request are sent
    /// again; any other failed entry fails the call, since a page left behind is a set of
    /// subscribers who never get the event.
    ///
    /// On a FIFO queue an entry sent again lands after entries of its group that passed the
    /// first time. That is harmless: one call carries the pages of one event, and two pages
    /// of one event never share a subscription, so no subscriber sees two of its events
    /// swapped; the next event's pages are sent only once this call has returned.
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
                    let entry = SendMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .message_body(body);
                    let entry = if self.fifo {
                        entry
                            .message_group_id(message_group_id(&pages[i]))
                            .message_deduplication_id(deduplication_id(&pages[i]))
                    } else {
                        entry
                    };
                    entry
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

/// The MessageGroupId of a page: its group ([`FanoutPage::ordering_group`]) as it is when
/// SQS accepts it (1 to 128 characters, each an ASCII letter, digit or punctuation mark),
/// else `sha256:` and the hex SHA-256 of the group, which is as stable and as distinct.
pub fn message_group_id(page: &FanoutPage) -> String {
    let group = page.ordering_group();
    let accepted = !group.is_empty()
        && group.len() <= MAX_ID_CHARS
        && group.bytes().all(|b| b.is_ascii_graphic());
    if accepted {
        group.to_owned()
    } else {
        format!("sha256:{}", hex(&Sha256::digest(group.as_bytes())))
    }
}

/// The MessageDeduplicationId of a page: its [`FanoutPage::id`]. SQS drops the same page
/// sent again within its deduplication window.
pub fn deduplication_id(page: &FanoutPage) -> String {
    page.id()
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[async_trait]
impl FanoutQueue for SqsFanoutQueue {
    fn ordered(&self) -> bool {
        self.fifo
    }

    async fn enqueue(&self, pages: &[FanoutPage]) -> Result<(), StoreError> {
        for batch in pages.chunks(BATCH_LIMIT) {
            self.send_batch(batch).await?;
        }
        Ok(())
    }
}
