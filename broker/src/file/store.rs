//! The database file, and the stores it hands out; its writer, which commits concurrent
//! writes together.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use ::redb::{Database, Durability, ReadableDatabase, ReadableTableMetadata, WriteTransaction};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, oneshot};

use super::backend;
use super::tables::{
    CLOSED, CONNECTIONS, CONNECTIONS_BY_USER, DELIVERED, EVENTS, EXPIRY, HELD, META, PAGES, QUOTAS,
    STREAM, SUBSCRIPTION_TOPICS, SUBSCRIPTIONS, TOMBSTONES,
};
use crate::ports::StoreError;

/// Every this many commits without fsync, one with: redb frees pages of a non-durable
/// commit only after a durable one, so a file seeing only connection churn would grow.
const DURABLE_EVERY: u64 = 256;

/// The most writes one transaction takes. A write waits for the group being committed and
/// its own: a group bounds how long writes that came later wait (and how long after its
/// own work an event's deadline check the commit comes).
pub(super) const MAX_GROUP: usize = 128;

/// The most writes waiting for the writer (or in its current group); more wait for room,
/// in the order they came.
const MAX_QUEUED: usize = 4_096;

/// One database file: the broker's stores and the apps' tables.
#[derive(Clone)]
pub struct FileStore {
    pub(super) inner: Arc<Inner>,
}

impl std::fmt::Debug for FileStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileStore")
            .field("writes", &self.write_stats())
            .finish_non_exhaustive()
    }
}

pub(super) struct Inner {
    db: Database,
    /// Notified on every append to the event log.
    pub(super) appended: Notify,
    light_commits: AtomicU64,
    /// Writes waiting for the writer, and whether a writer is at work.
    queue: Mutex<Queue>,
    /// Room in the queue: one permit a write, held until it is answered.
    room: Arc<Semaphore>,
    transactions: AtomicU64,
    writes: AtomicU64,
    /// Sizes of the tombstone and closed-connection tables above which the next write
    /// removing their expired entries scans them (see `subscriptions::prune_expired`).
    pub(super) prune_at: Arc<[AtomicU64; 2]>,
}

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Box<dyn Job>>,
    writing: bool,
}

/// What the writer committed so far: [`FileStore::write_stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteStats {
    /// Write transactions committed.
    pub transactions: u64,
    /// Writes committed in them: more than `transactions` when concurrent writes were
    /// committed together.
    pub writes: u64,
}

/// How a write transaction is committed.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Commit {
    /// fsync before returning.
    Durable,
    /// Without fsync (see the documentation of [`crate::file`]).
    Light,
}

/// One write waiting for the writer, its type erased.
trait Job: Send {
    fn commit(&self) -> Commit;
    /// Runs the write in `tx`, keeping its value for when the transaction commits.
    fn run(&mut self, tx: &WriteTransaction) -> Result<(), StoreError>;
    /// Answers the caller: the kept value once `committed` is `Ok`, or the error.
    fn finish(self: Box<Self>, committed: Result<(), StoreError>);
}

struct Write<T, F> {
    f: F,
    commit: Commit,
    value: Option<T>,
    reply: oneshot::Sender<Result<T, StoreError>>,
    _room: OwnedSemaphorePermit,
}

impl<T, F> Job for Write<T, F>
where
    T: Send,
    F: Fn(&WriteTransaction) -> Result<T, StoreError> + Send,
{
    fn commit(&self) -> Commit {
        self.commit
    }

    fn run(&mut self, tx: &WriteTransaction) -> Result<(), StoreError> {
        self.value = None;
        let value = std::panic::catch_unwind(AssertUnwindSafe(|| (self.f)(tx)))
            .map_err(|_| StoreError::backend("a write panicked"))??;
        self.value = Some(value);
        Ok(())
    }

    fn finish(mut self: Box<Self>, committed: Result<(), StoreError>) {
        let result = committed.and_then(|()| {
            self.value
                .take()
                .ok_or_else(|| StoreError::backend("a write committed without running"))
        });
        let _ = self.reply.send(result);
    }
}

/// How running a group of writes in one transaction went.
enum Ran {
    /// Committed, or the commit failed: every write was answered.
    Done,
    /// A write failed and the transaction was dropped: `first` to commit on their own (they
    /// succeeded up to there), then `then` (starting with the one that failed, which runs
    /// again first in its transaction: failing there, it is answered with its error).
    Split {
        first: Vec<Box<dyn Job>>,
        then: Vec<Box<dyn Job>>,
    },
}

impl FileStore {
    /// Opens the database at `path`, creating it (and its folder) when missing. After a
    /// crash redb checks and repairs the file here.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(StoreError::backend)?;
        }
        let db = Database::create(path).map_err(backend)?;
        let store = Self {
            inner: Arc::new(Inner {
                db,
                appended: Notify::new(),
                light_commits: AtomicU64::new(0),
                queue: Mutex::new(Queue::default()),
                room: Arc::new(Semaphore::new(MAX_QUEUED)),
                transactions: AtomicU64::new(0),
                writes: AtomicU64::new(0),
                prune_at: Arc::new([AtomicU64::new(0), AtomicU64::new(0)]),
            }),
        };
        // Every table exists from the start, so reads never meet a missing one.
        store.write_now(|tx| {
            tx.open_table(CONNECTIONS).map_err(backend)?;
            tx.open_table(CONNECTIONS_BY_USER).map_err(backend)?;
            tx.open_table(SUBSCRIPTIONS).map_err(backend)?;
            tx.open_table(SUBSCRIPTION_TOPICS).map_err(backend)?;
            tx.open_table(TOMBSTONES).map_err(backend)?;
            tx.open_table(CLOSED).map_err(backend)?;
            tx.open_table(HELD).map_err(backend)?;
            tx.open_table(PAGES).map_err(backend)?;
            tx.open_table(EVENTS).map_err(backend)?;
            tx.open_table(DELIVERED).map_err(backend)?;
            tx.open_table(STREAM).map_err(backend)?;
            tx.open_table(EXPIRY).map_err(backend)?;
            tx.open_table(META).map_err(backend)?;
            tx.open_table(QUOTAS).map_err(backend)?;
            Ok(())
        })?;
        Ok(store)
    }

    /// Removes every connection and subscription (and their tombstones, the marks of
    /// fan-out pages on their way, and the per-user quotas): a new process calls it at start, since the sockets they
    /// stood for, and the in-memory queue, died with the process that stored them. Returns how many
    /// connections and subscriptions there were.
    pub fn forget_connections(&self) -> Result<(u64, u64), StoreError> {
        self.write_now(|tx| {
            let connections = tx
                .open_table(CONNECTIONS)
                .map_err(backend)?
                .len()
                .map_err(backend)?;
            let subscriptions = tx
                .open_table(SUBSCRIPTIONS)
                .map_err(backend)?
                .len()
                .map_err(backend)?;
            tx.delete_table(CONNECTIONS).map_err(backend)?;
            tx.delete_table(CONNECTIONS_BY_USER).map_err(backend)?;
            tx.delete_table(SUBSCRIPTIONS).map_err(backend)?;
            tx.delete_table(SUBSCRIPTION_TOPICS).map_err(backend)?;
            tx.delete_table(TOMBSTONES).map_err(backend)?;
            tx.delete_table(CLOSED).map_err(backend)?;
            tx.delete_table(HELD).map_err(backend)?;
            // The queue is in memory: none of its pages outlived the process.
            tx.delete_table(PAGES).map_err(backend)?;
            // The sockets and subscriptions they counted are gone; the rates start afresh.
            tx.delete_table(QUOTAS).map_err(backend)?;
            tx.open_table(CONNECTIONS).map_err(backend)?;
            tx.open_table(CONNECTIONS_BY_USER).map_err(backend)?;
            tx.open_table(SUBSCRIPTIONS).map_err(backend)?;
            tx.open_table(SUBSCRIPTION_TOPICS).map_err(backend)?;
            tx.open_table(TOMBSTONES).map_err(backend)?;
            tx.open_table(CLOSED).map_err(backend)?;
            tx.open_table(HELD).map_err(backend)?;
            tx.open_table(PAGES).map_err(backend)?;
            tx.open_table(QUOTAS).map_err(backend)?;
            Ok((connections, subscriptions))
        })
    }

    /// What the writer committed since the file was opened (writes at start not counted).
    pub fn write_stats(&self) -> WriteStats {
        WriteStats {
            transactions: self.inner.transactions.load(Ordering::Relaxed),
            writes: self.inner.writes.load(Ordering::Relaxed),
        }
    }

    /// Runs `f` in a write transaction of its own and commits it durably, on this thread:
    /// for the writes at start, before any other.
    fn write_now<T>(
        &self,
        f: impl FnOnce(&WriteTransaction) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let tx = self.inner.db.begin_write().map_err(backend)?;
        let value = f(&tx)?;
        tx.commit().map_err(backend)?;
        Ok(value)
    }

    /// Runs `f` in a write transaction and commits it; `f` may run more than once (see below),
    /// and its value is the one of the transaction that committed.
    ///
    /// Group commit: writes that arrive while the writer is busy wait in a queue, and the
    /// writer runs up to [`MAX_GROUP`] of them, in the order they came, in one transaction and
    /// commits them together (durably if any of them asks for it), so concurrent writes share
    /// one commit and one fsync. A write that fails is not committed and does not fail the
    /// others: the transaction is dropped, the writes before it run again and commit in a
    /// transaction of their own, and the failed one runs again first in the next, on the
    /// state they left: failing there, its caller gets its error. Each caller gets its own
    /// result; a failed commit fails the writes it held.
    pub(super) async fn write<T: Send + 'static>(
        &self,
        commit: Commit,
        f: impl Fn(&WriteTransaction) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let room = self
            .inner
            .room
            .clone()
            .acquire_owned()
            .await
            .map_err(StoreError::backend)?;
        let (reply, answer) = oneshot::channel();
        let job = Box::new(Write {
            f,
            commit,
            value: None,
            reply,
            _room: room,
        });
        let start = {
            let mut queue = self.inner.lock_queue();
            queue.jobs.push_back(job);
            !std::mem::replace(&mut queue.writing, true)
        };
        if start {
            let inner = Arc::downgrade(&self.inner);
            tokio::task::spawn_blocking(move || Self::drain(&inner));
        }
        answer
            .await
            .map_err(|_| StoreError::backend("the writer stopped before answering"))?
    }

    /// The writer: runs the queued writes in groups until none is left.
    fn drain(inner: &Weak<Inner>) {
        loop {
            // Held while a group runs, not while its callers are answered: the last caller,
            // once answered, may drop the store and open the file again.
            let Some(inner) = inner.upgrade() else { return };
            let group: Vec<Box<dyn Job>> = {
                let mut queue = inner.lock_queue();
                let n = queue.jobs.len().min(MAX_GROUP);
                queue.jobs.drain(..n).collect()
            };
            let mut answers = Vec::with_capacity(group.len());
            // A panic of redb's (the writes' own are caught) drops the group's writes, whose
            // callers get an error, and leaves the writer at work on the others.
            let _ = std::panic::catch_unwind(AssertUnwindSafe(|| {
                let mut todo = vec![group];
                while let Some(group) = todo.pop() {
                    if let Ran::Split { first, then } = inner.run_group(group, &mut answers) {
                        todo.extend([then, first].into_iter().filter(|g| !g.is_empty()));
                    }
                }
            }));
            let more = {
                let mut queue = inner.lock_queue();
                queue.writing = !queue.jobs.is_empty();
                queue.writing
            };
            drop(inner);
            for (job, result) in answers {
                job.finish(result);
            }
            if !more {
                return;
            }
        }
    }

    /// Runs `f` on tokio's blocking pool with this store.
    pub(super) async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&FileStore) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(StoreError::backend)?
    }

    pub(super) fn read(&self) -> Result<::redb::ReadTransaction, StoreError> {
        self.inner.db.begin_read().map_err(backend)
    }
}

impl Inner {
    /// Runs `jobs` in order in one transaction and commits it; the answers go to `answers`.
    fn run_group(&self, mut jobs: Vec<Box<dyn Job>>, answers: &mut Answers) -> Ran {
        let durable = jobs.iter().any(|j| j.commit() == Commit::Durable)
            || self
                .light_commits
                .fetch_add(1, Ordering::Relaxed)
                .is_multiple_of(DURABLE_EVERY);
        let begun = self.db.begin_write().map_err(backend).and_then(|mut tx| {
            if !durable {
                tx.set_durability(Durability::None).map_err(backend)?;
            }
            Ok(tx)
        });
        let tx = match begun {
            Ok(tx) => tx,
            Err(e) => {
                fail_all(jobs, &e, answers);
                return Ran::Done;
            }
        };
        for i in 0..jobs.len() {
            if let Err(e) = jobs[i].run(&tx) {
                // Dropped uncommitted: nothing of this transaction is kept.
                drop(tx);
                if i == 0 {
                    // It failed on the committed state: that is its answer.
                    let then = jobs.split_off(1);
                    answers.push((jobs.pop().expect("one job"), Err(e)));
                    return Ran::Split {
                        first: Vec::new(),
                        then,
                    };
                }
                let then = jobs.split_off(i);
                return Ran::Split { first: jobs, then };
            }
        }
        match tx.commit() {
            Ok(()) => {
                self.transactions.fetch_add(1, Ordering::Relaxed);
                self.writes.fetch_add(jobs.len() as u64, Ordering::Relaxed);
                answers.extend(jobs.into_iter().map(|job| (job, Ok(()))));
            }
            Err(e) => fail_all(jobs, &backend(e), answers),
        }
        Ran::Done
    }

    fn lock_queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The writes of a group, with what each caller is to be told.
type Answers = Vec<(Box<dyn Job>, Result<(), StoreError>)>;

/// Fails every write of a group whose transaction could not begin or commit.
fn fail_all(jobs: Vec<Box<dyn Job>>, error: &StoreError, answers: &mut Answers) {
    let message = error.to_string();
    answers.extend(
        jobs.into_iter()
            .map(|job| (job, Err(StoreError::backend(message.clone())))),
    );
}

#[cfg(test)]
mod tests {
    use std::sync::Condvar;
    use std::sync::atomic::AtomicBool;

    use ::redb::{ReadableTable, TableDefinition};

    use super::*;

    const NUMBERS: TableDefinition<u64, u64> = TableDefinition::new("test/numbers");

    fn open() -> FileStore {
        let dir = std::env::temp_dir().join(format!("broker-writer-{}", ulid::Ulid::new()));
        FileStore::open(dir.join("state.redb")).unwrap()
    }

    fn queued(store: &FileStore) -> usize {
        store.inner.lock_queue().jobs.len()
    }

    async fn until(mut condition: impl FnMut() -> bool) {
        while !condition() {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    }

    /// Writes 0..50 arrive while the writer is busy with another: they run in one group, in
    /// the order they came. 7, 27 and 47 write and then fail: their callers get their
    /// errors, nothing they wrote is kept, and every other write is committed once, with
    /// its own value, in as few transactions as the failures allow.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writes_commit_together_and_one_failing_fails_no_other() {
        let store = open();
        let before = store.write_stats();
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let entered = Arc::new(AtomicBool::new(false));
        let busy = {
            let (store, gate, entered) = (store.clone(), gate.clone(), entered.clone());
            tokio::spawn(async move {
                store
                    .write(Commit::Light, move |tx| {
                        entered.store(true, Ordering::SeqCst);
                        let (open, opened) = &*gate;
                        let mut open = open.lock().unwrap();
                        while !*open {
                            open = opened.wait(open).unwrap();
                        }
                        tx.open_table(NUMBERS)
                            .map_err(backend)?
                            .insert(1_000, 1_000)
                            .map_err(backend)?;
                        Ok(1_000)
                    })
                    .await
            })
        };
        until(|| entered.load(Ordering::SeqCst)).await;

        let mut writes = Vec::new();
        for n in 0..50u64 {
            let store2 = store.clone();
            writes.push(tokio::spawn(async move {
                store2
                    .write(Commit::Light, move |tx| {
                        tx.open_table(NUMBERS)
                            .map_err(backend)?
                            .insert(n, n * 10)
                            .map_err(backend)?;
                        if n % 20 == 7 {
                            return Err(StoreError::Conflict(format!("{n} refused")));
                        }
                        Ok(n * 10)
                    })
                    .await
            }));
            until(|| queued(&store) == n as usize + 1).await;
        }
        {
            let (open, opened) = &*gate;
            *open.lock().unwrap() = true;
            opened.notify_all();
        }

        assert_eq!(busy.await.unwrap().unwrap(), 1_000);
        for (n, write) in (0..50u64).zip(writes) {
            match write.await.unwrap() {
                Err(StoreError::Conflict(message)) if n % 20 == 7 => {
                    assert_eq!(message, format!("{n} refused"));
                }
                Ok(value) if n % 20 != 7 => assert_eq!(value, n * 10),
                other => panic!("write {n}: {other:?}"),
            }
        }
        let tx = store.read().unwrap();
        let table = tx.open_table(NUMBERS).unwrap();
        let stored: Vec<(u64, u64)> = table
            .iter()
            .unwrap()
            .map(|e| e.map(|(k, v)| (k.value(), v.value())).unwrap())
            .collect();
        let expected: Vec<(u64, u64)> = (0..50u64)
            .filter(|n| n % 20 != 7)
            .map(|n| (n, n * 10))
            .chain([(1_000, 1_000)])
            .collect();
        assert_eq!(stored, expected);
        let after = store.write_stats();
        // The busy write alone; then 0..=6, 8..=26, 28..=46 and 48..=49, each committed once
        // its successors' failure was known.
        assert_eq!(after.writes - before.writes, 48);
        assert_eq!(after.transactions - before.transactions, 5);
    }

    /// A write that panics fails alone, with an error; the writer goes on with the next.
    #[tokio::test]
    async fn a_panicking_write_fails_alone() {
        let store = open();
        let panicked = store
            .write(Commit::Light, |_| -> Result<(), StoreError> {
                panic!("a bug in a write")
            })
            .await;
        assert!(
            matches!(panicked, Err(StoreError::Backend { .. })),
            "{panicked:?}"
        );
        let value = store
            .write(Commit::Durable, |tx| {
                tx.open_table(NUMBERS)
                    .map_err(backend)?
                    .insert(1, 2)
                    .map_err(backend)?;
                Ok(3)
            })
            .await
            .unwrap();
        assert_eq!(value, 3);
    }
}
