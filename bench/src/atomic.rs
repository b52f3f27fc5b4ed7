//! `--atomic-write N`: what committing a mutation's write with its event costs, against
//! writing it first and publishing after, on the same broker and store in one run.
//!
//! Each case adds `N` cards to one board of the example app, through the broker's API
//! (no HTTP, no GraphQL parsing: both ways parse alike): *separate* saves the card
//! ([`boards::BoardStore::add_card`]) and then publishes its event ([`broker::Broker::publish`]),
//! two commits; *atomic* commits both at once ([`broker::Broker::publish_with`]). First one
//! mutation at a time (latency), then all `N` at once (throughput under a burst). Stream
//! mode, no subscriber: what is measured is the write path alone.

use std::sync::Arc;
use std::time::Instant;

use boards::{Board, BoardStore, Card, card_topic};
use broker::memory::RecordingGateway;
use broker::{Audience, AuthConfig, Authenticator, Broker, BrokerConfig, Ports, UserId};

use crate::stats::{Latencies, Percentiles};

/// Where a case runs.
#[derive(Clone, Debug)]
pub enum AtomicStore {
    /// A fresh database file.
    File,
    /// Fresh tables on the DynamoDB emulator at this endpoint.
    Moto(String),
}

impl std::fmt::Display for AtomicStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File => f.write_str("file"),
            Self::Moto(_) => f.write_str("moto"),
        }
    }
}

/// One row: a store, a way to write, one at a time and all at once.
#[derive(Clone, Debug)]
pub struct AtomicRow {
    /// The store.
    pub store: String,
    /// `separate` or `atomic`.
    pub how: &'static str,
    /// Mutations per case.
    pub mutations: usize,
    /// Latency of one mutation at a time.
    pub sequential: Percentiles,
    /// Mutations per second, one at a time.
    pub sequential_rate: f64,
    /// Latency within the burst.
    pub burst: Percentiles,
    /// Mutations per second, all at once.
    pub burst_rate: f64,
    /// Mutations that failed (of both phases).
    pub errors: usize,
    /// Of those, the ones whose error says nothing was saved (an atomic commit refused at
    /// its deadline); the others of a timed-out atomic commit were stored after it.
    pub not_saved: usize,
}

impl AtomicRow {
    /// The header of [`AtomicRow::markdown`]'s table.
    pub const HEADER: &str = "| store | write and event | mutations | one at a time: p50 / p99 (ms) | \
        one at a time: mutations/s | all at once: p50 / p99 / max (ms) | all at once: mutations/s | errors | of which nothing saved |\n\
        |---|---|---:|---:|---:|---:|---:|---:|---:|";

    /// The row as a markdown table row.
    pub fn markdown(&self) -> String {
        format!(
            "| {} | {} | {} | {:.1} / {:.1} | {:.0} | {:.1} / {:.1} / {:.1} | {:.0} | {} | {} |",
            self.store,
            self.how,
            self.mutations,
            self.sequential.p50,
            self.sequential.p99,
            self.sequential_rate,
            self.burst.p50,
            self.burst.p99,
            self.burst.max,
            self.burst_rate,
            self.errors,
            self.not_saved,
        )
    }
}

/// The broker, the board store it publishes for, and what keeps the store alive.
struct Rig {
    broker: Broker,
    boards: Arc<dyn BoardStore>,
    _dir: Option<TempDir>,
}

/// A directory removed when dropped.
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The broker's defaults: stream mode. The per-user publish rate is the [`broker::Outbox`]'s,
/// which these calls do not go through.
fn config() -> BrokerConfig {
    BrokerConfig::default()
}

fn authenticator() -> Authenticator {
    Authenticator::new(AuthConfig {
        secret: "atomic-bench-secret-0123456789-0123456789".into(),
        issuer: None,
        audience: None,
        leeway_secs: broker::auth::DEFAULT_LEEWAY_SECS,
    })
}

async fn rig(store: &AtomicStore) -> anyhow::Result<Rig> {
    let gateway = Arc::new(RecordingGateway::default());
    match store {
        AtomicStore::File => {
            let dir = std::env::temp_dir().join(format!("broker-atomic-{}", ulid::Ulid::new()));
            std::fs::create_dir_all(&dir)?;
            let file = broker::file::FileStore::open(dir.join("atomic.redb"))?;
            let ports = Ports {
                connections: Arc::new(file.connections()),
                subscriptions: Arc::new(file.subscriptions()),
                replay_gate: Arc::new(file.replay_gate()),
                page_marks: Arc::new(file.page_marks()),
                quotas: Arc::new(file.quotas()),
                events: Arc::new(file.events()),
                gateway,
                fanout: None,
            };
            let boards: Arc<dyn BoardStore> = Arc::new(boards::file::FileBoardStore::new(&file));
            let broker = Broker::new(
                boards::build_schema(boards.clone()),
                ports,
                authenticator(),
                config(),
            );
            Ok(Rig {
                broker,
                boards,
                _dir: Some(TempDir(dir)),
            })
        }
        AtomicStore::Moto(endpoint) => {
            use broker::aws::{AppTables, TableNames, provision};
            let sdk = broker::aws::config_loader(Some(endpoint))
                .credentials_provider(aws_credential_types::Credentials::new(
                    "AKIDBENCH",
                    "bench-secret",
                    None,
                    None,
                    "bench",
                ))
                .load()
                .await;
            let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);
            let tag = ulid::Ulid::new().to_string().to_lowercase();
            let tables = TableNames::new(
                format!("aw-{tag}-connections"),
                format!("aw-{tag}-subscriptions"),
                format!("aw-{tag}-events"),
            );
            let app_table = format!("aw-{tag}-app");
            provision::create_tables(&dynamodb, &tables).await?;
            let app_tables = AppTables::new(
                dynamodb.clone(),
                [(boards::TABLE.to_owned(), app_table.clone())],
            );
            provision::create_app_tables(
                &dynamodb,
                &broker::App::tables(&boards::Boards),
                &app_tables,
            )
            .await?;
            let ports = broker::aws::ports(&sdk, &tables, gateway, None);
            let boards: Arc<dyn BoardStore> = Arc::new(boards::dynamodb::DynamoDbBoardStore::new(
                dynamodb, &app_table,
            ));
            let broker = Broker::new(
                boards::build_schema(boards.clone()),
                ports,
                authenticator(),
                config(),
            );
            Ok(Rig {
                broker,
                boards,
                _dir: None,
            })
        }
    }
}

/// One mutation: a card on `board`, saved and published `atomic`ally or not.
async fn mutate(rig: &Rig, board: &str, seq: usize, atomic: bool) -> anyhow::Result<()> {
    let card = Card {
        id: async_graphql::ID(ulid::Ulid::new().to_string()),
        board_id: async_graphql::ID(board.to_owned()),
        title: format!("card {seq}"),
    };
    let audience = Audience::User(UserId::new(OWNER));
    if atomic {
        let changes = rig.boards.add_card_changes(&card)?;
        rig.broker
            .publish_with(&changes, card_topic(board), &card, audience)
            .await?;
    } else {
        rig.boards.add_card(&card).await?;
        rig.broker
            .publish(card_topic(board), &card, audience)
            .await?;
    }
    Ok(())
}

const OWNER: &str = "atomic-bench";

/// One row of `store`, written `atomic`ally or not.
async fn case(store: &AtomicStore, mutations: usize, atomic: bool) -> anyhow::Result<AtomicRow> {
    let rig = rig(store).await?;
    let board = Board {
        id: async_graphql::ID(ulid::Ulid::new().to_string()),
        title: "atomic".into(),
        owner: OWNER.into(),
    };
    rig.boards.create_board(&board).await?;
    let (mut errors, mut not_saved) = (0, 0);
    let mut count = |error: &anyhow::Error| {
        errors += 1;
        if error.to_string().contains("nothing was saved") {
            not_saved += 1;
        }
    };
    let mut sequential = Latencies::new();
    let started = Instant::now();
    for seq in 0..mutations {
        let at = Instant::now();
        if let Err(error) = mutate(&rig, &board.id, seq, atomic).await {
            count(&error);
        }
        sequential.record(at.elapsed());
    }
    let sequential_rate = mutations as f64 / started.elapsed().as_secs_f64();
    let started = Instant::now();
    let results = futures_util::future::join_all((0..mutations).map(|seq| {
        let (rig, board) = (&rig, &board.id);
        async move {
            let at = Instant::now();
            let result = mutate(rig, board, mutations + seq, atomic).await;
            (result, at.elapsed())
        }
    }))
    .await;
    let burst_rate = mutations as f64 / started.elapsed().as_secs_f64();
    let mut burst = Latencies::new();
    for (result, took) in results {
        burst.record(took);
        if let Err(error) = result {
            count(&error);
        }
    }
    Ok(AtomicRow {
        store: store.to_string(),
        how: if atomic { "atomic" } else { "separate" },
        mutations,
        sequential: sequential.summary(),
        sequential_rate,
        burst: burst.summary(),
        burst_rate,
        errors,
        not_saved,
    })
}

/// Every row: each store of `stores`, separate then atomic.
pub fn run(stores: &[AtomicStore], mutations: usize) -> anyhow::Result<Vec<AtomicRow>> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut rows = Vec::new();
        for store in stores {
            for atomic in [false, true] {
                rows.push(case(store, mutations, atomic).await?);
            }
        }
        Ok(rows)
    })
}
