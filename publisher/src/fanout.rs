//! The fan-out worker: delivers pages of a large fan-out, one SQS message each.

use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use broker::{Broker, FanoutPage};
use futures_util::StreamExt;

use crate::DeliveryError;

/// The system attribute SQS gives every message of a FIFO queue: the group it is ordered in.
pub const MESSAGE_GROUP_ID: &str = "MessageGroupId";

/// The system attribute SQS gives every message: how many times it has been handed out.
pub const RECEIVE_COUNT: &str = "ApproximateReceiveCount";

/// Groups of one batch handled at once.
const GROUP_CONCURRENCY: usize = 10;

/// Handles one SQS batch. Messages of a FIFO queue (those with a `MessageGroupId`) are
/// handled one after another within their group, in batch order; once one fails, the later
/// messages of its group in the batch are reported failed without being delivered, as Lambda
/// asks of a FIFO partial batch response, so SQS hands them out again after the failed one.
/// Different groups, and the messages of a standard queue (no group), are independent and
/// delivered concurrently.
pub async fn handle(broker: &Broker, batch: SqsEvent) -> SqsBatchResponse {
    let failures: Vec<BatchItemFailure> = futures_util::stream::iter(in_groups(batch.records))
        .map(|messages| async move {
            let mut failed = Vec::new();
            for message in messages {
                let id = message.message_id.clone().unwrap_or_default();
                let body = message.body.as_deref().unwrap_or_default();
                if !failed.is_empty() {
                    tracing::warn!(message = %id, "held back behind a failed page of its group");
                } else if let Err(reason) = deliver(broker, body).await {
                    tracing::error!(message = %id, %reason, "fan-out page failed");
                } else {
                    continue;
                }
                if is_last_receive(broker, &message)
                    && let Ok(page) = serde_json::from_str::<FanoutPage>(body)
                {
                    broker.page_given_up(&page).await;
                }
                failed.push(id);
            }
            futures_util::stream::iter(failed)
        })
        .buffer_unordered(GROUP_CONCURRENCY)
        .flatten()
        .map(|id| {
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = id;
            failure
        })
        .collect()
        .await;
    let mut response = SqsBatchResponse::default();
    response.batch_item_failures = failures;
    response
}

/// Whether the queue hands `message` out no more after this receive: failed now, its
/// dead-letter queue takes it.
fn is_last_receive(broker: &Broker, message: &SqsMessage) -> bool {
    let received = message
        .attributes
        .get(RECEIVE_COUNT)
        .and_then(|n| n.parse::<u32>().ok());
    matches!(
        (received, broker.config().fanout_max_receives),
        (Some(received), Some(max)) if received >= max
    )
}

/// The batch's messages by group, each group in batch order, groups in order of first
/// appearance; a message without a group is a group of its own.
fn in_groups(records: Vec<SqsMessage>) -> Vec<Vec<SqsMessage>> {
    let mut groups: Vec<Vec<SqsMessage>> = Vec::new();
    let mut index: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for message in records {
        match message.attributes.get(MESSAGE_GROUP_ID) {
            Some(group) => match index.get(group) {
                Some(&at) => groups[at].push(message),
                None => {
                    index.insert(group.clone(), groups.len());
                    groups.push(vec![message]);
                }
            },
            None => groups.push(vec![message]),
        }
    }
    groups
}

async fn deliver(broker: &Broker, body: &str) -> Result<(), DeliveryError> {
    let page: FanoutPage = serde_json::from_str(body).map_err(DeliveryError::MalformedPage)?;
    let report = broker.deliver_page(&page).await?;
    // A page holds only the event's id, whose ULID carries its publication time.
    broker::metrics::record(
        &report,
        broker::metrics::published_at_ms_of_id(&page.event_id),
    );
    tracing::info!(event = %page.event_id, ?report, "fan-out page delivered");
    if report.is_complete() {
        Ok(())
    } else {
        Err(DeliveryError::Incomplete {
            failed: report.failed,
        })
    }
}
