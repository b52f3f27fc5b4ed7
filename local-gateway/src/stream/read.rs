//! Reading a local log (the embedded one or the database file) into the [`Scheduler`], in
//! stream order, each topic up to its share of the read-ahead window.
//!
//! The window ([`StreamOptions::read_ahead`](super::StreamOptions::read_ahead)) bounds the
//! records in memory; if one topic could fill it, a flood on that topic would leave another
//! topic's new record unread in the log however fairly the scheduler takes turns. So a topic
//! that holds [`Scheduler::per_topic`] records is *passed over*: the reader notes where it
//! left the topic and reads on, keeping the other topics' records and dropping the topic's.
//! Once the topic is down to half its share, the reader reads it again from that position
//! (its records only, up to where the reader stands), in order, and stops passing it over
//! when it has caught up. A topic's records are thus pushed in log order, exactly once.
//!
//! At most `2 × read_ahead / per_topic` topics are passed over at a time: each holds at least
//! half its share whenever the reader reads on.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use broker::file::FileEventLog;
use broker::memory::MemoryEventLog;
use broker::{Event, StoreError, StreamRead};

use super::{BATCH_SIZE, Scheduler, insert_record};

/// Positions read again at most per read of a passed-over topic, so one read of the store
/// stays short.
const CATCH_UP_SCAN: u64 = 4_096;

/// How often the expired events are removed, as DynamoDB's TTL does.
const PURGE_INTERVAL: Duration = Duration::from_secs(60);

/// A log the local stream reads.
pub trait Log: Send + Sync + 'static {
    /// The events `read` asks for, with their positions, and the position after them.
    fn read(
        &self,
        read: StreamRead,
    ) -> impl Future<Output = Result<(Vec<(u64, Event)>, u64), StoreError>> + Send;

    /// Resolves when an event is appended after the call (or was, since the last wait).
    fn appended(&self) -> impl Future<Output = ()> + Send;

    /// Where a previous process's reader stood: what it had not finished handing over.
    fn saved_position(&self) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Saves where the reader stands: every record before `position` is handled.
    fn save_position(&self, position: u64) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Removes the expired events; returns how many.
    fn purge_expired(&self) -> impl Future<Output = Result<usize, StoreError>> + Send;
}

impl Log for MemoryEventLog {
    async fn read(&self, read: StreamRead) -> Result<(Vec<(u64, Event)>, u64), StoreError> {
        Ok(self.read_stream(&read))
    }

    async fn appended(&self) {
        MemoryEventLog::appended(self).await;
    }

    /// The embedded log lives as long as the process: every reader starts at its start.
    async fn saved_position(&self) -> Result<u64, StoreError> {
        Ok(0)
    }

    async fn save_position(&self, _position: u64) -> Result<(), StoreError> {
        Ok(())
    }

    /// The embedded log removes its expired events as it appends.
    async fn purge_expired(&self) -> Result<usize, StoreError> {
        Ok(0)
    }
}

impl Log for FileEventLog {
    async fn read(&self, read: StreamRead) -> Result<(Vec<(u64, Event)>, u64), StoreError> {
        self.read_stream(read).await
    }

    async fn appended(&self) {
        FileEventLog::appended(self).await;
    }

    async fn saved_position(&self) -> Result<u64, StoreError> {
        self.stream_position().await
    }

    async fn save_position(&self, position: u64) -> Result<(), StoreError> {
        self.save_stream_position(position).await
    }

    async fn purge_expired(&self) -> Result<usize, StoreError> {
        FileEventLog::purge_expired(self).await
    }
}

/// Reads `log` into `scheduler` for good: from the position a previous process saved, each
/// new event as it comes (or every `poll_interval`, when not zero).
pub async fn feed<L: Log>(log: Arc<L>, poll_interval: Duration, scheduler: Scheduler) {
    let head = log.saved_position().await.unwrap_or_else(|error| {
        tracing::error!(%error, "cannot read the saved stream position; reading from the start");
        0
    });
    let mut reader = Reader {
        log,
        scheduler,
        head,
        saved: head,
        passed: HashMap::new(),
        reads: VecDeque::new(),
        last_purge: None,
    };
    loop {
        reader.purge_when_due().await;
        reader.catch_up().await;
        reader.save_position().await;
        if !reader.read_on().await {
            reader.idle(poll_interval).await;
        }
    }
}

struct Reader<L> {
    log: Arc<L>,
    scheduler: Scheduler,
    /// The next position to read.
    head: u64,
    /// The position saved last.
    saved: u64,
    /// The topics passed over, and the position of the first record of each not pushed.
    passed: HashMap<String, u64>,
    /// Pushes with records outstanding, in push order: their indexes and the position
    /// their read started from.
    reads: VecDeque<(Range<u64>, u64)>,
    last_purge: Option<Instant>,
}

impl<L: Log> Reader<L> {
    /// Reads the next events after `head` and pushes those of topics within their share;
    /// false when there was nothing new.
    async fn read_on(&mut self) -> bool {
        let passed: HashSet<String> = self.passed.keys().cloned().collect();
        let read = StreamRead {
            keep: Arc::new(move |topic| !passed.contains(topic)),
            ..StreamRead::all(self.head, BATCH_SIZE)
        };
        let (events, next) = match self.log.read(read).await {
            Ok(read) => read,
            Err(error) => {
                tracing::warn!(%error, "cannot read the event stream");
                tokio::time::sleep(Duration::from_secs(1)).await;
                return true;
            }
        };
        if next == self.head {
            return false;
        }
        let share = self.scheduler.per_topic();
        let mut held: HashMap<&str, usize> = HashMap::new();
        let mut records = Vec::with_capacity(events.len());
        for (position, event) in &events {
            let topic = event.topic.as_str();
            if self.passed.contains_key(topic) {
                continue;
            }
            let count = held
                .entry(topic)
                .or_insert_with(|| self.scheduler.outstanding(topic));
            if *count >= share {
                self.passed.insert(topic.to_owned(), *position);
                continue;
            }
            *count += 1;
            records.push(insert_record(event, *position));
        }
        let from = self.head;
        self.head = next;
        self.push(records, from).await;
        true
    }

    /// Reads again the topics passed over that are down to half their share: their records
    /// from where they were left, up to `head`.
    async fn catch_up(&mut self) {
        let share = self.scheduler.per_topic();
        let due: Vec<(String, u64)> = self
            .passed
            .iter()
            .filter(|(topic, _)| self.scheduler.outstanding(topic) <= share / 2)
            .map(|(topic, from)| (topic.clone(), *from))
            .collect();
        for (topic, from) in due {
            let want = share.saturating_sub(self.scheduler.outstanding(&topic));
            let mut at = from;
            let mut records = Vec::new();
            while at < self.head && records.len() < want {
                let only = topic.clone();
                let read = StreamRead {
                    from: at,
                    until: self.head,
                    scan: CATCH_UP_SCAN,
                    take: want - records.len(),
                    keep: Arc::new(move |t| t == only),
                };
                match self.log.read(read).await {
                    // Nothing left before `head` (what was there has expired).
                    Ok((_, next)) if next == at => at = self.head,
                    Ok((events, next)) => {
                        records.extend(events.iter().map(|(p, e)| insert_record(e, *p)));
                        at = next;
                    }
                    Err(error) => {
                        tracing::warn!(%error, topic, "cannot read the event stream again");
                        break;
                    }
                }
            }
            if at >= self.head {
                self.passed.remove(&topic);
            } else {
                self.passed.insert(topic, at);
            }
            self.push(records, from).await;
        }
    }

    async fn push(&mut self, records: Vec<aws_lambda_events::dynamodb::EventRecord>, from: u64) {
        if !records.is_empty() {
            let pushed = self.scheduler.push(records).await;
            self.reads.push_back((pushed, from));
        }
    }

    /// Saves the oldest position with a record not handled yet: the start of the oldest
    /// read with one outstanding, or of a topic passed over, else `head`.
    async fn save_position(&mut self) {
        let outstanding = self.scheduler.first_outstanding();
        while self
            .reads
            .front()
            .is_some_and(|(range, _)| outstanding.is_none_or(|first| range.end <= first))
        {
            self.reads.pop_front();
        }
        let safe = self
            .reads
            .iter()
            .map(|(_, start)| *start)
            .chain(self.passed.values().copied())
            .fold(self.head, u64::min);
        if safe != self.saved {
            match self.log.save_position(safe).await {
                Ok(()) => self.saved = safe,
                Err(error) => tracing::warn!(%error, "cannot save the stream position"),
            }
        }
    }

    /// Waits for a new event, or for progress while records are out (to save the position
    /// and to read a passed-over topic again).
    async fn idle(&self, poll_interval: Duration) {
        let idle = async {
            if poll_interval.is_zero() {
                let _ = tokio::time::timeout(PURGE_INTERVAL, self.log.appended()).await;
            } else {
                tokio::time::sleep(poll_interval).await;
            }
        };
        let waiting = !self.reads.is_empty() || !self.passed.is_empty();
        tokio::select! {
            () = idle => {}
            () = self.scheduler.progressed(), if waiting => {}
        }
    }

    async fn purge_when_due(&mut self) {
        if self
            .last_purge
            .is_some_and(|at| at.elapsed() < PURGE_INTERVAL)
        {
            return;
        }
        match self.log.purge_expired().await {
            Ok(0) => {}
            Ok(purged) => tracing::info!(purged, "expired events removed"),
            Err(error) => tracing::warn!(%error, "cannot remove expired events"),
        }
        self.last_purge = Some(Instant::now());
    }
}
