//! The SQS fan-out queue, polled as Lambda's SQS event source mapping does.

use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::sqs::SqsMessage;
use aws_sdk_sqs::types::MessageSystemAttributeName;
use broker::Broker;
use tokio::sync::Mutex;

/// One ReceiveMessage at a time among the pollers of one queue. SQS hands each message, and
/// each FIFO group, to one receive only, however many run at once; moto's ReceiveMessage is
/// not atomic (two concurrent calls can both take a message, or both take messages of one
/// group), so the local mode's pollers take turns to receive and handle their batches
/// concurrently.
#[derive(Clone, Default)]
pub(crate) struct Receiving(Arc<Mutex<()>>);

/// The SQS event source mapping: receive pages, run the worker, delete what succeeded.
/// Failed messages reappear after their visibility timeout and reach the dead-letter queue
/// after the queue's maxReceiveCount.
///
/// On a FIFO queue SQS returns a group's messages in order and none of a group while an
/// earlier message of it is in flight (received, neither deleted nor visible again), so
/// several pollers never hold one group at once; each message's `MessageGroupId` is passed
/// on to the worker, which handles a group's messages of the batch one after another.
/// (moto, unlike SQS, can hand out a later message of a group first when several of the
/// group's failed messages become visible again one after another: against moto the order
/// of a group holds as long as its pages do not fail.)
pub(crate) async fn poll(
    broker: Broker,
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
    receiving: Receiving,
) {
    loop {
        let turn = receiving.0.lock().await;
        let received = sqs
            .receive_message()
            .queue_url(&queue_url)
            .max_number_of_messages(10)
            .message_system_attribute_names(MessageSystemAttributeName::MessageGroupId)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .wait_time_seconds(1)
            .send()
            .await;
        drop(turn);
        let messages = match received {
            Ok(output) => output.messages.unwrap_or_default(),
            Err(e) => {
                tracing::warn!(error = %e, "receiving fan-out pages failed");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        if messages.is_empty() {
            continue;
        }
        let batch: Vec<SqsMessage> = messages
            .iter()
            .map(|m| {
                let mut message = SqsMessage::default();
                message.message_id = m.message_id().map(str::to_owned);
                message.receipt_handle = m.receipt_handle().map(str::to_owned);
                message.body = m.body().map(str::to_owned);
                message.event_source = Some("aws:sqs".to_owned());
                if let Some(attributes) = m.attributes() {
                    message.attributes = attributes
                        .iter()
                        .map(|(name, value)| (name.as_str().to_owned(), value.clone()))
                        .collect();
                }
                message
            })
            .collect();
        let failed = super::run_worker(&broker, batch).await;
        for message in &messages {
            if failed
                .iter()
                .any(|id| Some(id.as_str()) == message.message_id())
            {
                continue;
            }
            let Some(handle) = message.receipt_handle() else {
                continue;
            };
            let deleted = sqs
                .delete_message()
                .queue_url(&queue_url)
                .receipt_handle(handle)
                .send()
                .await;
            if let Err(e) = deleted {
                tracing::warn!(error = %e, "deleting a delivered page failed");
            }
        }
    }
}
