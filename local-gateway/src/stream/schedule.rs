//! Which stream records the publisher handles next: fairly between topics, in order within
//! each, and without one failing record holding up the others.
//!
//! Records read from the log wait in one queue per topic (the events table's partition
//! key). Up to [`StreamOptions::concurrency`] topics are handled at once, each a batch of
//! its own oldest records; the topics waiting for a turn take it round-robin, so a topic
//! with a long backlog gets one batch per round like any other, and an event of a quiet
//! topic waits for at most one round, not for the backlog of the whole log.
//!
//! A record that fails is retried after a growing delay, its topic's later records held
//! back behind it (the README's per-topic order), while the other topics go on. After
//! [`StreamOptions::max_retries`] retries it is given up: logged with its ids and kept, the
//! last few, in [`GivenUp`], as Lambda's `BisectBatchOnFunctionError` narrows a failing
//! batch down to its record and `MaximumRetryAttempts` sends that to the on-failure
//! destination. The topic then goes on with its next record.
//!
//! At most [`StreamOptions::read_ahead`] records are queued or being handled: the reader
//! waits for room beyond that. Of those, one topic holds at most [`StreamOptions::per_topic`]:
//! the reader passes over a topic at its share and reads its records again once it has
//! drained (see [`super::read`]), so one topic's backlog never fills the window the others'
//! records come in by.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::ops::Range;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use aws_lambda_events::dynamodb::{Event as StreamEvent, EventRecord};
use aws_lambda_events::streams::DynamoDbEventResponse;
use broker::Broker;
use futures_util::future::BoxFuture;
use serde_dynamo::AttributeValue;
use tokio::sync::{Notify, Semaphore, mpsc};
use tokio::task::{JoinHandle, JoinSet};

use super::BATCH_SIZE;

/// The function that handles one batch of stream records, as Lambda invokes the stream
/// publisher: [`publisher::stream::handle`] unless [`StreamOptions::handler`] says otherwise.
pub type Handler =
    Arc<dyn Fn(Broker, StreamEvent) -> BoxFuture<'static, DynamoDbEventResponse> + Send + Sync>;

/// How the local stream hands records to the publisher.
#[derive(Clone)]
pub struct StreamOptions {
    /// Topics handled at once, at most. Default 16.
    pub concurrency: usize,
    /// Records read from the log and neither handled nor given up yet, at most: reading
    /// waits beyond. Default 10 000 (at least [`BATCH_SIZE`]).
    pub read_ahead: usize,
    /// Of [`Self::read_ahead`], the records of one topic at most: the reader passes over the
    /// records of a topic that holds this many, and comes back for them once it holds half.
    /// Default 1 000 (at least [`BATCH_SIZE`]).
    pub per_topic: usize,
    /// Retries of a failing record before it is given up. Default 5, the template's
    /// `MaximumRetryAttempts`.
    pub max_retries: u32,
    /// The wait before a failing record's first retry, doubled on each retry up to 32
    /// times it. Default 100 ms.
    pub retry_delay: Duration,
    /// Given-up records kept for [`GivenUp::records`], the newest. Default 100.
    pub given_up_kept: usize,
    /// What handles a batch: the stream publisher when `None` (the default). Tests set
    /// one that fails chosen records.
    pub handler: Option<Handler>,
}

impl Default for StreamOptions {
    fn default() -> Self {
        Self {
            concurrency: 16,
            read_ahead: 10_000,
            per_topic: 1_000,
            max_retries: 5,
            retry_delay: Duration::from_millis(100),
            given_up_kept: 100,
            handler: None,
        }
    }
}

impl std::fmt::Debug for StreamOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamOptions")
            .field("concurrency", &self.concurrency)
            .field("read_ahead", &self.read_ahead)
            .field("per_topic", &self.per_topic)
            .field("max_retries", &self.max_retries)
            .field("retry_delay", &self.retry_delay)
            .field("given_up_kept", &self.given_up_kept)
            .field("handler", &self.handler.as_ref().map(|_| "custom"))
            .finish()
    }
}

/// A record given up after failing every retry.
#[derive(Debug, Clone)]
pub struct GivenUpRecord {
    /// The topic (partition key) it was published on.
    pub topic: String,
    /// The stream record as it was handed to the publisher (its `eventID`, sequence
    /// number and image), to look at or hand over again.
    pub record: EventRecord,
    /// Times it was handed to the publisher.
    pub attempts: u32,
}

/// The records the local stream gave up, the newest [`StreamOptions::given_up_kept`] of
/// them, and how many it gave up in all: the local stand-in for the on-failure destination.
#[derive(Debug, Clone, Default)]
pub struct GivenUp(Arc<Mutex<GivenUpState>>);

#[derive(Debug, Default)]
struct GivenUpState {
    kept: VecDeque<GivenUpRecord>,
    total: u64,
}

impl GivenUp {
    /// The records given up that are kept, oldest first.
    pub fn records(&self) -> Vec<GivenUpRecord> {
        self.lock().kept.iter().cloned().collect()
    }

    /// How many records were given up since the start, including those no longer kept.
    pub fn total(&self) -> u64 {
        self.lock().total
    }

    fn push(&self, record: GivenUpRecord, keep: usize) {
        let mut state = self.lock();
        state.total += 1;
        if keep == 0 {
            return;
        }
        while state.kept.len() >= keep {
            state.kept.pop_front();
        }
        state.kept.push_back(record);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, GivenUpState> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The local stream's scheduler: [`Scheduler::push`] hands it records in log order; a task
/// of its own hands them to the publisher. Dropping it stops that task.
#[derive(Debug)]
pub struct Scheduler {
    input: mpsc::UnboundedSender<Vec<(u64, EventRecord)>>,
    room: Arc<Semaphore>,
    room_size: usize,
    per_topic: usize,
    progress: Arc<Progress>,
    given_up: GivenUp,
    next_index: std::sync::atomic::AtomicU64,
    task: JoinHandle<()>,
}

/// The records pushed and not finished yet: by push index, and how many of each topic.
#[derive(Debug, Default)]
struct Progress {
    outstanding: Mutex<Outstanding>,
    finished: Notify,
}

#[derive(Debug, Default)]
struct Outstanding {
    indexes: BTreeSet<u64>,
    by_topic: HashMap<String, usize>,
}

impl Progress {
    fn lock(&self) -> std::sync::MutexGuard<'_, Outstanding> {
        self.outstanding
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Scheduler {
    /// Starts handing records to `broker`'s stream publisher (or `options.handler`).
    pub fn start(broker: Broker, options: StreamOptions) -> Self {
        let room_size = options.read_ahead.max(BATCH_SIZE);
        let per_topic = options.per_topic.clamp(BATCH_SIZE, room_size);
        let room = Arc::new(Semaphore::new(room_size));
        let progress = Arc::new(Progress::default());
        let given_up = GivenUp::default();
        // Unbounded as a channel, bounded by `room`: `push` takes a permit per record before
        // sending, and a record gives its permit back only once handled or given up, so at
        // most `room_size` records are ever in the channel and the topics' queues together.
        // The records come from the log, never from a client's socket.
        let (input, receiver) = mpsc::unbounded_channel();
        let run = Run {
            broker,
            handler: options.handler.clone().unwrap_or_else(|| {
                Arc::new(|broker: Broker, batch: StreamEvent| {
                    Box::pin(async move { publisher::stream::handle(&broker, batch).await })
                })
            }),
            options,
            room: room.clone(),
            progress: progress.clone(),
            given_up: given_up.clone(),
            topics: HashMap::new(),
            ready: VecDeque::new(),
            tasks: JoinSet::new(),
            running: 0,
        };
        Self {
            input,
            room,
            room_size,
            per_topic,
            progress,
            given_up,
            next_index: Default::default(),
            task: tokio::spawn(run.run(receiver)),
        }
    }

    /// Queues `records` (in log order), once there is room for them; returns the indexes
    /// they were given, consecutive from the previous push's.
    pub async fn push(&self, records: Vec<EventRecord>) -> Range<u64> {
        let count = records.len().min(self.room_size);
        let mut records = records;
        let rest = records.split_off(count);
        if let Ok(permits) = self.room.acquire_many(count as u32).await {
            permits.forget();
        }
        let first = self
            .next_index
            .fetch_add(count as u64, std::sync::atomic::Ordering::Relaxed);
        let indexed: Vec<(u64, EventRecord)> = (first..).zip(records).collect();
        {
            let mut outstanding = self.progress.lock();
            outstanding.indexes.extend(first..first + count as u64);
            for (_, record) in &indexed {
                *outstanding.by_topic.entry(topic_of(record)).or_default() += 1;
            }
        }
        if self.input.send(indexed).is_err() {
            tracing::error!("the stream scheduler stopped; records not handed over");
        }
        let mut range = first..first + count as u64;
        if !rest.is_empty() {
            range.end = Box::pin(self.push(rest)).await.end;
        }
        range
    }

    /// The index of the oldest record pushed and not yet handled nor given up.
    pub fn first_outstanding(&self) -> Option<u64> {
        self.progress.lock().indexes.first().copied()
    }

    /// Records of `topic` pushed and not yet handled nor given up.
    pub fn outstanding(&self, topic: &str) -> usize {
        self.progress
            .lock()
            .by_topic
            .get(topic)
            .copied()
            .unwrap_or(0)
    }

    /// The records of one topic the reader should have pushed and not finished, at most
    /// ([`StreamOptions::per_topic`]).
    pub fn per_topic(&self) -> usize {
        self.per_topic
    }

    /// Resolves once a record has been finished (handled or given up) since the last call.
    pub async fn progressed(&self) {
        self.progress.finished.notified().await;
    }

    /// The records given up so far.
    pub fn given_up(&self) -> &GivenUp {
        &self.given_up
    }
}

/// The scheduler's own task.
struct Run {
    broker: Broker,
    handler: Handler,
    options: StreamOptions,
    room: Arc<Semaphore>,
    progress: Arc<Progress>,
    given_up: GivenUp,
    /// Every topic with records queued: either in `ready` (once) or busy.
    topics: HashMap<String, TopicQueue>,
    /// Topics waiting for a turn, round-robin.
    ready: VecDeque<String>,
    tasks: JoinSet<(String, Step)>,
    /// Batches being handled (not counting topics waiting to retry).
    running: usize,
}

#[derive(Debug, Default)]
struct TopicQueue {
    records: VecDeque<(u64, EventRecord)>,
    /// Failed attempts of the first record so far.
    failures: u32,
}

#[derive(Debug, Clone, Copy)]
enum Step {
    /// A batch was handled: the first record that failed, if one did.
    Handled { len: usize, failed: Option<usize> },
    /// A topic's wait before a retry is over.
    Woken,
}

impl Run {
    async fn run(mut self, mut input: mpsc::UnboundedReceiver<Vec<(u64, EventRecord)>>) {
        let concurrency = self.options.concurrency.max(1);
        let mut open = true;
        loop {
            while self.running < concurrency
                && let Some(topic) = self.ready.pop_front()
            {
                self.start_batch(topic);
            }
            tokio::select! {
                records = input.recv(), if open => match records {
                    Some(records) => self.enqueue(records),
                    None => open = false,
                },
                Some(joined) = self.tasks.join_next() => match joined {
                    Ok((topic, step)) => self.finish(topic, step),
                    Err(error) => tracing::error!(%error, "a stream batch task ended"),
                },
                else => break,
            }
        }
    }

    fn enqueue(&mut self, records: Vec<(u64, EventRecord)>) {
        for (index, record) in records {
            let topic = topic_of(&record);
            let queue = self.topics.entry(topic.clone()).or_insert_with(|| {
                self.ready.push_back(topic);
                TopicQueue::default()
            });
            queue.records.push_back((index, record));
        }
    }

    fn start_batch(&mut self, topic: String) {
        let Some(queue) = self.topics.get(&topic) else {
            return;
        };
        let batch: Vec<EventRecord> = queue
            .records
            .iter()
            .take(BATCH_SIZE)
            .map(|(_, r)| r.clone())
            .collect();
        let len = batch.len();
        let sequences: Vec<Option<String>> = batch
            .iter()
            .map(|r| r.change.sequence_number.clone())
            .collect();
        let mut event = StreamEvent::default();
        event.records = batch;
        let handling = (self.handler)(self.broker.clone(), event);
        self.running += 1;
        self.tasks.spawn(async move {
            // A handler that panics fails its batch, as an invocation that crashed.
            let failed = match tokio::spawn(handling).await {
                Ok(response) => first_failed(&response, &sequences),
                Err(error) => {
                    tracing::error!(%topic, %error, "the stream publisher panicked");
                    Some(0)
                }
            };
            (topic, Step::Handled { len, failed })
        });
    }

    fn finish(&mut self, topic: String, step: Step) {
        let (len, failed) = match step {
            Step::Woken => {
                self.ready.push_back(topic);
                return;
            }
            Step::Handled { len, failed } => (len, failed),
        };
        self.running -= 1;
        let Some(queue) = self.topics.get_mut(&topic) else {
            return;
        };
        let handled = failed.unwrap_or(len).min(queue.records.len());
        let mut done: Vec<u64> = queue.records.drain(..handled).map(|(i, _)| i).collect();
        let mut retry_after = None;
        let mut given_up = None;
        if failed.is_none() {
            queue.failures = 0;
        } else {
            queue.failures += 1;
            if queue.failures > self.options.max_retries {
                let attempts = queue.failures;
                queue.failures = 0;
                given_up = queue.records.pop_front().map(|r| (r, attempts));
            } else {
                let doublings = (queue.failures - 1).min(5);
                retry_after = Some(self.options.retry_delay.saturating_mul(1 << doublings));
            }
        }
        let empty = queue.records.is_empty();
        if let Some(((index, record), attempts)) = given_up {
            self.give_up(&topic, record, attempts);
            done.push(index);
        }
        self.done(&topic, &done);
        if let Some(delay) = retry_after {
            // The topic waits without taking a turn; the others go on meanwhile.
            self.tasks.spawn(async move {
                tokio::time::sleep(delay).await;
                (topic, Step::Woken)
            });
        } else if empty {
            self.topics.remove(&topic);
        } else {
            self.ready.push_back(topic);
        }
    }

    fn give_up(&self, topic: &str, record: EventRecord, attempts: u32) {
        tracing::error!(
            topic,
            record = %record.event_id,
            event = event_id_of(&record).unwrap_or_default(),
            sequence = record.change.sequence_number.as_deref().unwrap_or_default(),
            attempts,
            "stream record failed every retry; given up, the next records of its topic go on"
        );
        self.given_up.push(
            GivenUpRecord {
                topic: topic.to_owned(),
                record,
                attempts,
            },
            self.options.given_up_kept,
        );
    }

    fn done(&self, topic: &str, indexes: &[u64]) {
        if indexes.is_empty() {
            return;
        }
        {
            let mut outstanding = self.progress.lock();
            for index in indexes {
                outstanding.indexes.remove(index);
            }
            if let Some(count) = outstanding.by_topic.get_mut(topic) {
                *count = count.saturating_sub(indexes.len());
                if *count == 0 {
                    outstanding.by_topic.remove(topic);
                }
            }
        }
        self.room.add_permits(indexes.len());
        self.progress.finished.notify_one();
    }
}

/// The position in `sequences` of the first record `response` reports failed. A failure
/// naming no record of the batch fails it all, as Lambda reads it.
fn first_failed(response: &DynamoDbEventResponse, sequences: &[Option<String>]) -> Option<usize> {
    if response.batch_item_failures.is_empty() {
        return None;
    }
    response
        .batch_item_failures
        .iter()
        .map(|f| {
            f.item_identifier
                .as_deref()
                .and_then(|id| sequences.iter().position(|s| s.as_deref() == Some(id)))
                .unwrap_or(0)
        })
        .min()
}

fn string_key<'a>(record: &'a EventRecord, name: &str) -> Option<&'a str> {
    match record.change.keys.get(name)? {
        AttributeValue::S(value) => Some(value),
        _ => None,
    }
}

/// The record's topic, its partition key; records without one share the empty topic.
fn topic_of(record: &EventRecord) -> String {
    string_key(record, "topic").unwrap_or_default().to_owned()
}

fn event_id_of(record: &EventRecord) -> Option<&str> {
    string_key(record, "eventId")
}
