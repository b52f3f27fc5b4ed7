//! The fan-out queue's consumer: the embedded queue's pages batched into SQS events for the
//! fan-out worker handler, several batches at once, as Lambda scales the worker out; a real
//! SQS queue in [`sqs`].
//!
//! The embedded queue keeps each group's pages in order as an SQS FIFO queue does: a page
//! goes to one of [`CONCURRENCY`] lanes by a stable hash of its group, and a lane hands its
//! pages to the worker one batch at a time, in the order they were enqueued, retrying the
//! messages the worker reported failed before it takes any later page. One group's pages
//! are never handled concurrently or out of order; groups of different lanes are handled
//! concurrently (groups sharing a lane wait for each other, which a FIFO queue would not
//! make them do; the order is the same).

pub mod sqs;

use aws_lambda_events::sqs::{SqsEvent, SqsMessage};
use broker::{Broker, FanoutPage};
use tokio::sync::mpsc;

/// Messages per worker invocation (the template's BatchSize).
const BATCH_SIZE: usize = 10;
/// Worker invocations in flight at once.
pub const CONCURRENCY: usize = 4;
/// Deliveries of one message before it is dead-lettered (the queue's maxReceiveCount).
const MAX_RECEIVES: u32 = 5;
/// Pages waiting in one lane. A full lane holds the dispatch back (pages wait in the
/// embedded queue, in order) instead of growing. A client that stops reading does not fill
/// it: its frames wait in its socket's outbox, which closes it once it stays full.
const LANE_PAGES: usize = 256;

/// The message SQS would hand the worker for `page` on a FIFO queue: its JSON, with the
/// page's group as its `MessageGroupId` attribute.
pub fn message(page: &FanoutPage) -> SqsMessage {
    let mut message = SqsMessage::default();
    message.message_id = Some(ulid::Ulid::new().to_string());
    message.body = Some(serde_json::to_string(page).expect("a page serializes"));
    message.event_source = Some("aws:sqs".to_owned());
    message.attributes.insert(
        publisher::fanout::MESSAGE_GROUP_ID.to_owned(),
        page.ordering_group().to_owned(),
    );
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

/// The lane of a group among `lanes`: the same for every page of the group.
pub fn lane_of(group: &str, lanes: usize) -> usize {
    (broker::fanout::fnv1a64(group.as_bytes()) % lanes.max(1) as u64) as usize
}

/// Consumes the embedded queue until it closes (or this future is dropped, which stops
/// every lane with it).
pub async fn work_embedded(broker: Broker, mut queue: mpsc::UnboundedReceiver<FanoutPage>) {
    let (senders, receivers): (Vec<_>, Vec<_>) =
        (0..CONCURRENCY).map(|_| mpsc::channel(LANE_PAGES)).unzip();
    let dispatch = async move {
        while let Some(page) = queue.recv().await {
            let lane = lane_of(page.ordering_group(), senders.len());
            if senders[lane].send(page).await.is_err() {
                return;
            }
        }
    };
    let lanes = futures_util::future::join_all(
        receivers
            .into_iter()
            .map(|receiver| work_lane(broker.clone(), receiver)),
    );
    tokio::join!(dispatch, lanes);
}

/// One lane: a batch at a time, its failed messages retried (in their order) before the
/// next batch.
async fn work_lane(broker: Broker, mut lane: mpsc::Receiver<FanoutPage>) {
    while let Some(first) = lane.recv().await {
        let mut pages = vec![first];
        while pages.len() < BATCH_SIZE {
            match lane.try_recv() {
                Ok(page) => pages.push(page),
                Err(_) => break,
            }
        }
        let mut messages: Vec<SqsMessage> = pages.iter().map(message).collect();
        for receive in 1..=MAX_RECEIVES {
            let failed = run_worker(&broker, messages.clone()).await;
            messages.retain(|m| {
                failed
                    .iter()
                    .any(|id| Some(id.as_str()) == m.message_id.as_deref())
            });
            if messages.is_empty() {
                break;
            }
            tracing::warn!(failed = messages.len(), receive, "fan-out pages failed");
        }
        if !messages.is_empty() {
            tracing::error!(count = messages.len(), "fan-out pages dead-lettered");
        }
        // Given up on: they hold their topics' later events back no longer.
        for message in &messages {
            let page = message
                .body
                .as_deref()
                .map(serde_json::from_str::<FanoutPage>);
            if let Some(Ok(page)) = page {
                broker.page_given_up(&page).await;
            }
        }
    }
}
