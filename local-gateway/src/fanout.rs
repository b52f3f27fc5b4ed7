//! The embedded fan-out queue's consumer: batches pages into SQS events for the fan-out
//! worker handler, several batches at once, as Lambda scales the worker out.

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
                let mut event = SqsEvent::default();
                event.records = messages.clone();
                let response = publisher::fanout::handle(&broker, event).await;
                let failed: Vec<&str> = response
                    .batch_item_failures
                    .iter()
                    .map(|f| f.item_identifier.as_str())
                    .collect();
                messages.retain(|m| failed.contains(&m.message_id.as_deref().unwrap_or_default()));
                if messages.is_empty() {
                    return;
                }
                tracing::warn!(failed = messages.len(), receive, "fan-out pages failed");
            }
            tracing::error!(count = messages.len(), "fan-out pages dead-lettered");
        });
    }
}
