//! The fan-out queue's consumer: the embedded queue's pages batched into SQS events for the
//! fan-out worker handler, several batches at once, as Lambda scales the worker out; a real
//! SQS queue in [`sqs`].

pub mod sqs;

use std::sync::Arc;

use aws_lambda_events::sqs::{SqsEvent, SqsMessage};
use broker::{Broker, FanoutPage};
use tokio::sync::{Semaphore, mpsc};

/// Messages per worker invocation (the template's BatchSize).
const BATCH_SIZE: usize = 10;
/// Worker invocations in flight at once.
const CONCURRENCY: usize = 4;
/// Deliveries of one message before it is dead-lettered (the queue's maxReceiveCount).
const MAX_RECEIVES: u32 = 5;

pub fn message(page: &FanoutPage) -> SqsMessage {
    let mut message = SqsMessage::default();
    message.message_id = Some(ulid::Ulid::new().to_string());
    message.body = Some(serde_json::to_string(page).expect("a page serializes"));
    message.event_source = Some("aws:sqs".to_owned());
    message
}

/// Runs the fan-out worker handler over one batch, as the SQS event source mapping invokes
/// it; returns the ids of the messages it reported failed.
pub async fn run_worker(broker: &Broker, messages: Vec<SqsMessage>) -> Vec<String> {
    let mut event = SqsEvent::default();
    event.records = messages;
    publisher::fanout::handle(broker, event)
        .await
        .batch_item_failures
        .into_iter()
        .map(|f| f.item_identifier)
        .collect()
}

pub async fn work_embedded(broker: Broker, mut queue: mpsc::UnboundedReceiver<FanoutPage>) {
    let slots = Arc::new(Semaphore::new(CONCURRENCY));
    while let Some(first) = queue.recv().await {
        let mut pages = vec![first];
        while pages.len() < BATCH_SIZE {
            match queue.try_recv() {
                Ok(page) => pages.push(page),
                Err(_) => break,
            }
        }
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let broker = broker.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let mut messages: Vec<SqsMessage> = pages.iter().map(message).collect();
            for receive in 1..=MAX_RECEIVES {
                let failed = run_worker(&broker, messages.clone()).await;
                messages.retain(|m| {
                    failed
                        .iter()
                        .any(|id| Some(id.as_str()) == m.message_id.as_deref())
                });
                if messages.is_empty() {
                    return;
                }
                tracing::warn!(failed = messages.len(), receive, "fan-out pages failed");
            }
            tracing::error!(count = messages.len(), "fan-out pages dead-lettered");
        });
    }
}
