//! `broker-publisher-bench`: what the stream publisher costs per delivered message.
//!
//! The publisher's handler (`publisher::stream::handle`) is called in this process on
//! batches of stream records, against the embedded store or the DynamoDB emulator, and posts
//! through the real Management API client to a counting HTTP sink (a child process, so its
//! CPU is not counted). Around each call the process's CPU time is read
//! (`CLOCK_PROCESS_CPUTIME_ID`: user + system of every thread, as `getrusage` reports it).
//! In the same run it measures the floors a delivery cannot go below: a plain pooled HTTP
//! POST to the same sink, and the same POST signed with SigV4.
//!
//! `attacks` prices the hostile documents of the hardening work (fragment bombs, huge
//! documents) with and without the broker's cost limits.

mod attacks;
mod feed;
mod floors;
mod sink;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use aws_lambda_events::dynamodb::{Event as StreamEvent, EventRecord};
use boards::{Board, BoardStore, MemoryBoardStore, build_schema, card_topic};
use broker::aws::{
    ApiGatewayConnectionGateway, DynamoDbConnectionStore, DynamoDbEventLog, DynamoDbPageMarks,
    DynamoDbReplayGate, DynamoDbSubscriptionStore, PostClient, TableNames, event_to_image,
    provision,
};
use broker::memory::{
    MemoryConnectionStore, MemoryEventLog, MemoryPageMarks, MemorySubscriptionStore,
};
use broker::{
    Audience, AuthConfig, Authenticator, Broker, BrokerConfig, Connection, ConnectionId, Event,
    Ports, Protocol, Subscription, SubscriptionKey, UserId,
};
use clap::{Parser, Subcommand, ValueEnum};
use floors::{SignedFloor, floor_gateway, floor_plain, floor_signed, measure, sdk_config};
use futures_util::StreamExt;
use serde_json::json;

#[derive(Parser)]
#[command(about = "CPU per delivery of the stream publisher, beside the cost of a post")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Subscribers of the topic, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "100,1000")]
    subscribers: Vec<usize>,
    /// Events per stream batch.
    #[arg(long, default_value_t = 10)]
    events: usize,
    /// Batches measured per case (after one warm-up batch), each beside a floor run.
    #[arg(long, default_value_t = 9)]
    batches: usize,
    /// Stores to run on, comma-separated: embedded, moto (needs --moto or MOTO_ENDPOINT).
    #[arg(long, value_delimiter = ',', default_value = "embedded,moto")]
    stores: Vec<Store>,
    /// The DynamoDB emulator's endpoint.
    #[arg(long, env = "MOTO_ENDPOINT")]
    moto: Option<String>,
    /// How the publisher posts, comma-separated: signed (a SigV4-signed POST on a pooled
    /// connection, the default on AWS), sdk (the Management API client).
    #[arg(long, value_delimiter = ',', default_value = "signed")]
    post: Vec<Post>,
    /// Which documents the subscribers send, comma-separated: shared (all the same),
    /// distinct (each its own aliases and its own choice and order of fields), own-variables
    /// (distinct, and each declares its own variable name), own-users (as own-variables, each
    /// subscriber its own user and the event for everyone: nothing can be rendered once for
    /// two subscribers), public-users (as own-users, the subscription declared the same for
    /// every viewer), public-half-viewer (as public-users, every other subscriber also
    /// selecting a field that reads the viewer).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "shared,distinct,own-variables,own-users,public-users,public-half-viewer"
    )]
    documents: Vec<Documents>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Post {
    Signed,
    Sdk,
}

impl Post {
    fn client(self) -> PostClient {
        match self {
            Self::Signed => PostClient::Signed,
            Self::Sdk => PostClient::Sdk,
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// The counting sink (started by the benchmark itself).
    Sink,
    /// CPU of hostile documents, with and without the cost limits.
    Attacks {
        /// Run each document without limits just before its limited runs, as an earlier
        /// version of this benchmark did (the limited figures then include the allocator's
        /// clean-up after the unlimited run).
        #[arg(long)]
        interleaved: bool,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Store {
    Embedded,
    Moto,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Documents {
    Shared,
    Distinct,
    OwnVariables,
    OwnUsers,
    PublicUsers,
    PublicHalfViewer,
}

impl Documents {
    /// Each subscriber is a user of its own, and the event is for everyone.
    fn own_users(self) -> bool {
        matches!(
            self,
            Self::OwnUsers | Self::PublicUsers | Self::PublicHalfViewer
        )
    }

    /// The subscription is declared the same for every viewer.
    fn public(self) -> bool {
        matches!(self, Self::PublicUsers | Self::PublicHalfViewer)
    }
}

/// mimalloc, the Lambda functions' allocator (the default feature `mimalloc`); built with
/// `--no-default-features`, the system's, to price one against the other.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USER: &str = "bench-user";
const BOARD: &str = "bench-board";

/// CPU time of this whole process so far.
fn process_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Sink) => sink::serve(),
        Some(Command::Attacks { interleaved }) => attacks::run(interleaved),
        None => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(run(cli)),
    }
}

/// One row of the results.
struct Row {
    label: String,
    cpu_per_message: Duration,
    per_second: f64,
    store_requests_per_event: Option<f64>,
    /// Against the signed-POST floor run just before each measured batch, with as many
    /// posts: the CPU and rate ratios of every batch.
    paired: Option<Paired>,
}

/// Ratios of a case to the floor measured beside each of its batches.
#[derive(Default)]
struct Paired {
    cpu: Vec<f64>,
    rate: Vec<f64>,
}

/// The median, minimum and maximum of `values`.
fn spread(values: &[f64]) -> (f64, f64, f64) {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let median = match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    };
    (
        median,
        sorted.first().copied().unwrap_or(f64::NAN),
        sorted.last().copied().unwrap_or(f64::NAN),
    )
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let sink = sink::Sink::spawn()?;
    let mut rows = Vec::new();
    let posts = cli.subscribers.iter().max().copied().unwrap_or(1000) * cli.events;
    rows.push(floor_plain(&sink, posts).await?);
    rows.push(floor_signed(&sink, posts).await?);
    rows.push(floor_gateway(&sink, posts, PostClient::Sdk).await?);
    rows.push(floor_gateway(&sink, posts, PostClient::Signed).await?);
    for store in &cli.stores {
        for &n in &cli.subscribers {
            for &documents in &cli.documents {
                for &post in &cli.post {
                    rows.push(publisher_case(&cli, &sink, *store, n, documents, post).await?);
                }
            }
        }
    }
    println!(
        "\n| case | CPU per message | messages/s | store requests per event |\n|---|---:|---:|---:|"
    );
    for row in &rows {
        println!(
            "| {} | {:.0} µs | {:.0} | {} |",
            row.label,
            row.cpu_per_message.as_secs_f64() * 1e6,
            row.per_second,
            row.store_requests_per_event
                .map_or("-".to_owned(), |r| format!("{r:.1}")),
        );
    }
    println!(
        "\npaired with the signed-POST floor (a floor run of as many posts just before each \
         measured batch; median [min-max] of the batches):"
    );
    for row in &rows {
        if let Some(paired) = &row.paired {
            let (cpu, cpu_min, cpu_max) = spread(&paired.cpu);
            let (rate, rate_min, rate_max) = spread(&paired.rate);
            println!(
                "  {}: CPU {cpu:.2}x [{cpu_min:.2}-{cpu_max:.2}], rate {:.0}% [{:.0}-{:.0}%]",
                row.label,
                100.0 * rate,
                100.0 * rate_min,
                100.0 * rate_max
            );
        }
    }
    let signed = &rows[1];
    println!("\nratios to the signed-POST floor measured once at the start:");
    for row in &rows[2..] {
        println!(
            "  {}: CPU {:.2}x, rate {:.0}%",
            row.label,
            row.cpu_per_message.as_secs_f64() / signed.cpu_per_message.as_secs_f64(),
            100.0 * row.per_second / signed.per_second
        );
    }
    Ok(())
}

/// DynamoDB requests sent by every client built with [`counted`].
#[derive(Debug, Default)]
struct RequestCounter(AtomicU64);

#[derive(Debug)]
struct CountRequests(Arc<RequestCounter>);

impl aws_sdk_dynamodb::config::Intercept for CountRequests {
    fn name(&self) -> &'static str {
        "CountRequests"
    }

    fn read_before_transmit(
        &self,
        _: &aws_sdk_dynamodb::config::interceptors::BeforeTransmitInterceptorContextRef<'_>,
        _: &aws_sdk_dynamodb::config::RuntimeComponents,
        _: &mut aws_sdk_dynamodb::config::ConfigBag,
    ) -> Result<(), aws_sdk_dynamodb::error::BoxError> {
        self.0.0.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// Store requests of the embedded backend: calls on its ports and the app's store.
struct CountingBoards {
    inner: MemoryBoardStore,
    reads: Arc<RequestCounter>,
}

#[async_trait::async_trait]
impl BoardStore for CountingBoards {
    async fn create_board(&self, board: &Board) -> Result<(), broker::StoreError> {
        self.inner.create_board(board).await
    }
    fn create_board_changes(&self, board: &Board) -> Result<broker::Changes, broker::StoreError> {
        self.inner.create_board_changes(board)
    }
    async fn board(&self, id: &str) -> Result<Option<Board>, broker::StoreError> {
        self.reads.0.fetch_add(1, Ordering::Relaxed);
        self.inner.board(id).await
    }
    async fn boards_of(&self, owner: &UserId) -> Result<Vec<Board>, broker::StoreError> {
        self.reads.0.fetch_add(1, Ordering::Relaxed);
        self.inner.boards_of(owner).await
    }
    async fn add_card(&self, card: &boards::Card) -> Result<(), broker::StoreError> {
        self.inner.add_card(card).await
    }
    fn add_card_changes(&self, card: &boards::Card) -> Result<broker::Changes, broker::StoreError> {
        self.inner.add_card_changes(card)
    }
    async fn cards_of(&self, board_id: &str) -> Result<Vec<boards::Card>, broker::StoreError> {
        self.reads.0.fetch_add(1, Ordering::Relaxed);
        self.inner.cards_of(board_id).await
    }
    async fn delete_board(&self, id: &str) -> Result<bool, broker::StoreError> {
        self.inner.delete_board(id).await
    }
}

async fn publisher_case(
    cli: &Cli,
    sink: &sink::Sink,
    store: Store,
    n: usize,
    documents: Documents,
    post: Post,
) -> anyhow::Result<Row> {
    let sdk = sdk_config(&sink.url).await;
    let gateway = Arc::new(ApiGatewayConnectionGateway::from_config_with(
        &sdk,
        &sink.url,
        post.client(),
    ));
    let counter = Arc::new(RequestCounter::default());
    let auth = Authenticator::new(AuthConfig {
        secret: "publisher-bench-secret-0123456789-0123".into(),
        issuer: None,
        audience: None,
        leeway_secs: broker::auth::DEFAULT_LEEWAY_SECS,
    });
    let board = Board {
        id: BOARD.into(),
        title: "Board".into(),
        owner: USER.into(),
    };
    let config = BrokerConfig {
        // The publisher delivers every event itself here: the case measures its own cost.
        fanout_threshold: usize::MAX,
        ..Default::default()
    };
    // On the emulator: its client and the subscriptions table.
    let (broker, ports, emulator) = match store {
        Store::Embedded => {
            let subscriptions = MemorySubscriptionStore::default();
            let ports = Ports {
                connections: Arc::new(MemoryConnectionStore::default()),
                replay_gate: Arc::new(subscriptions.replay_gate()),
                subscriptions: Arc::new(subscriptions),
                page_marks: Arc::new(MemoryPageMarks::default()),
                quotas: Arc::new(broker::memory::MemoryQuotas::default()),
                events: Arc::new(MemoryEventLog::default()),
                gateway,
                fanout: None,
            };
            let boards = CountingBoards {
                inner: MemoryBoardStore::new(&Default::default()),
                reads: counter.clone(),
            };
            boards.create_board(&board).await?;
            let broker = if documents.public() {
                Broker::new(feed::schema(), ports.clone(), auth, config)
            } else {
                Broker::new(build_schema(Arc::new(boards)), ports.clone(), auth, config)
            };
            (broker, ports, None)
        }
        Store::Moto => {
            let endpoint = cli.moto.as_deref().context("--moto or MOTO_ENDPOINT")?;
            let moto = sdk_config(endpoint).await;
            let dynamodb = aws_sdk_dynamodb::Client::from_conf(
                aws_sdk_dynamodb::config::Builder::from(&moto)
                    .interceptor(CountRequests(counter.clone()))
                    .build(),
            );
            let tag = ulid::Ulid::new().to_string().to_lowercase();
            let tables = TableNames::new(
                format!("pb-{tag}-connections"),
                format!("pb-{tag}-subscriptions"),
                format!("pb-{tag}-events"),
            );
            let app_table = format!("pb-{tag}-app");
            provision::create_tables(&dynamodb, &tables).await?;
            let app_tables = broker::aws::AppTables::new(
                dynamodb.clone(),
                std::collections::HashMap::from([(boards::TABLE.to_owned(), app_table.clone())]),
            );
            provision::create_app_tables(
                &dynamodb,
                &broker::App::tables(&boards::Boards),
                &app_tables,
            )
            .await?;
            let ports = Ports {
                connections: Arc::new(DynamoDbConnectionStore::new(
                    dynamodb.clone(),
                    &tables.connections,
                )),
                subscriptions: Arc::new(DynamoDbSubscriptionStore::new(
                    dynamodb.clone(),
                    &tables.subscriptions,
                )),
                replay_gate: Arc::new(DynamoDbReplayGate::new(
                    dynamodb.clone(),
                    &tables.subscriptions,
                )),
                page_marks: Arc::new(DynamoDbPageMarks::new(
                    dynamodb.clone(),
                    &tables.subscriptions,
                )),
                quotas: Arc::new(broker::aws::DynamoDbQuotas::new(
                    dynamodb.clone(),
                    &tables.subscriptions,
                )),
                events: Arc::new(DynamoDbEventLog::new(dynamodb.clone(), &tables.events)),
                gateway,
                fanout: None,
            };
            let boards = boards::dynamodb::DynamoDbBoardStore::new(dynamodb.clone(), &app_table);
            boards.create_board(&board).await?;
            let broker = if documents.public() {
                Broker::new(feed::schema(), ports.clone(), auth, config)
            } else {
                Broker::new(build_schema(Arc::new(boards)), ports.clone(), auth, config)
            };
            (broker, ports, Some((dynamodb, tables.subscriptions)))
        }
    };

    // N subscribers of one board, one connection each, stored as `subscribe` stores them.
    let variable = |i: usize| match documents {
        Documents::Shared | Documents::Distinct => "board".to_owned(),
        _ => format!("board{i}"),
    };
    // Named after the connection, which the emulator's copies of subscriber 0 rename.
    let user = |i: usize| match documents.own_users() {
        true => UserId::new(format!("user-of-conn-{i}")),
        false => UserId::from(USER),
    };
    let audience = match documents.own_users() {
        true => Audience::Everyone,
        false => Audience::User(user(0)),
    };
    let expires_at = broker::domain::now_secs() + 3600;
    let document = |i: usize| match documents {
        Documents::Shared => {
            "subscription OnCard($board: ID!) { cardAdded(boardId: $board) { id title } }"
                .to_owned()
        }
        // Each subscriber's own aliases, and one of six choices and orders of the card's
        // fields: no two documents alike.
        _ => {
            let viewer = if documents == Documents::PublicHalfViewer && i % 2 == 1 {
                " viewer"
            } else {
                ""
            };
            let fields = [
                "id t{i}: title",
                "t{i}: title",
                "b{i}: boardId id",
                "id",
                "t{i}: title boardId id",
                "i{i}: id t{i}: title",
            ][i % 6]
                .replace("{i}", &i.to_string())
                + viewer;
            let variable = variable(i);
            format!(
                "subscription OnCard(${variable}: ID!) {{ c{i}: cardAdded(boardId: ${variable}) {{ {fields} }} }}"
            )
        }
    };
    let variables = |i: usize| json!({ variable(i): BOARD });
    let subscription = |i: usize| Subscription {
        key: SubscriptionKey {
            connection_id: ConnectionId::new(format!("conn-{i}")),
            operation_id: "s".into(),
        },
        topic: card_topic(BOARD),
        protocol: Protocol::GraphqlTransportWs,
        principal: user(i),
        document: document(i),
        operation_name: Some("OnCard".into()),
        variables: variables(i),
        expires_at,
        // Every event of the run comes after the subscription.
        starts_at_ms: 0,
        replaying_until_ms: 0,
        public: documents.public(),
    };
    let connections = (0..n).map(|i| Connection {
        id: ConnectionId::new(format!("conn-{i}")),
        protocol: Protocol::GraphqlTransportWs,
        principal: Some(user(i)),
        initialised: true,
        connected_at_ms: broker::domain::now_ms(),
        expires_at,
        authorized_until: Some(expires_at),
    });
    try_all(connections.map(|connection| {
        let ports = &ports;
        async move { Ok(ports.connections.put(&connection).await?) }
    }))
    .await?;
    match &emulator {
        None => {
            try_all((0..n).map(|i| {
                let (ports, subscription) = (&ports, subscription(i));
                async move { stored(ports.subscriptions.insert(&subscription).await?) }
            }))
            .await?
        }
        Some((dynamodb, table)) => {
            stored(ports.subscriptions.insert(&subscription(0)).await?)?;
            copy_first_subscriber(dynamodb, table, n, |i| (document(i), variables(i))).await?;
        }
    }

    let floor = SignedFloor::new(sink).await?;
    let mut paired = Paired::default();
    let mut cpu = Duration::ZERO;
    let mut wall = Duration::ZERO;
    let mut requests = 0;
    let mut delivered = 0;
    for batch_index in 0..=cli.batches {
        // The floor beside this batch: the machine's speed at this moment.
        let (floor_cpu, floor_wall) = measure(floor.run(n * cli.events)).await?;
        let events: Vec<Event> = (0..cli.events)
            .map(|k| {
                let card = json!({"id": format!("card-{batch_index}-{k}"), "boardId": BOARD, "title": "A card"});
                Event::new(card_topic(BOARD), card, audience.clone())
            })
            .collect();
        // The log holds what its stream carries (the publisher marks events delivered).
        for event in &events {
            ports.events.append(event).await?;
        }
        let batch = stream_batch(&events)?;
        let posted_before = sink.count().await?;
        let requests_before = counter.0.load(Ordering::Relaxed);
        let (cpu0, wall0) = (process_cpu(), Instant::now());
        let response = publisher::stream::handle(&broker, batch).await;
        let (spent, took) = (process_cpu() - cpu0, wall0.elapsed());
        let used = counter.0.load(Ordering::Relaxed) - requests_before;
        anyhow::ensure!(
            response.batch_item_failures.is_empty(),
            "the publisher reported failures"
        );
        let posted = sink.count().await? - posted_before;
        anyhow::ensure!(
            posted == (n * cli.events) as u64,
            "{posted} posts for {} deliveries",
            n * cli.events
        );
        // The first batch warms the caches and the connection pool.
        if batch_index > 0 {
            cpu += spent;
            wall += took;
            requests += used;
            delivered += posted;
            paired
                .cpu
                .push(spent.as_secs_f64() / floor_cpu.as_secs_f64());
            paired
                .rate
                .push(floor_wall.as_secs_f64() / took.as_secs_f64());
        }
    }
    let label = format!(
        "{} N={n} {} documents{}",
        match store {
            Store::Embedded => "embedded",
            Store::Moto => "DynamoDB (moto)",
        },
        match documents {
            Documents::Shared => "shared",
            Documents::Distinct => "distinct",
            Documents::OwnVariables => "distinct own-variables",
            Documents::OwnUsers => "distinct own-users",
            Documents::PublicUsers => "distinct own-users public",
            Documents::PublicHalfViewer => "distinct own-users public, half per-viewer",
        },
        if cli.post.len() > 1 {
            format!(", {post:?} post").to_lowercase()
        } else {
            String::new()
        }
    );
    eprintln!("{label}: done");
    Ok(Row {
        label,
        cpu_per_message: cpu / delivered.max(1) as u32,
        per_second: delivered as f64 / wall.as_secs_f64(),
        store_requests_per_event: Some(requests as f64 / (cli.batches * cli.events) as f64),
        paired: Some(paired),
    })
}

fn stored(inserted: broker::Inserted) -> anyhow::Result<()> {
    anyhow::ensure!(
        inserted == broker::Inserted::Stored,
        "a subscription was not stored: {inserted:?}"
    );
    Ok(())
}

/// Runs `calls`, 16 at a time; the first error stops it.
async fn try_all(
    calls: impl Iterator<Item = impl Future<Output = anyhow::Result<()>>>,
) -> anyhow::Result<()> {
    futures_util::stream::iter(calls)
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

/// Stores subscribers 1 to `n - 1` on the emulator as copies of subscriber 0's items (the
/// subscription and its claim, as the store wrote them), each with its own connection id
/// `document` and variables, written in batches.
///
/// The store writes each subscription in a `TransactWriteItems`, and moto (5.2) copies the
/// whole table at every transaction to roll it back on failure: storing N subscribers costs
/// O(N²) there, and a copy taken while another request writes to the same table fails with a
/// 500 (`RuntimeError: dictionary changed size during iteration`), which is what stopped
/// the setup at 16 transactions in flight.
async fn copy_first_subscriber(
    dynamodb: &aws_sdk_dynamodb::Client,
    table: &str,
    n: usize,
    document: impl Fn(usize) -> (String, serde_json::Value),
) -> anyhow::Result<()> {
    use aws_sdk_dynamodb::types::{AttributeValue, PutRequest, WriteRequest};
    let first = dynamodb
        .scan()
        .table_name(table)
        .consistent_read(true)
        .send()
        .await?
        .items
        .unwrap_or_default();
    // The subscription, its claim, and its connection's subscription count.
    anyhow::ensure!(
        first.len() == 3,
        "expected a subscription, its claim and its connection's count, found {} items",
        first.len()
    );
    let mut requests = Vec::with_capacity(first.len() * n);
    for i in 1..n {
        let id = format!("conn-{i}");
        let (document, variables) = document(i);
        for template in &first {
            let item = template
                .iter()
                .map(|(name, value)| {
                    let value = match (name.as_str(), value) {
                        ("document", AttributeValue::S(_)) => AttributeValue::S(document.clone()),
                        ("variables", AttributeValue::S(_)) => {
                            AttributeValue::S(variables.to_string())
                        }
                        (_, AttributeValue::S(text)) => {
                            AttributeValue::S(text.replace("conn-0", &id))
                        }
                        (_, value) => value.clone(),
                    };
                    (name.clone(), value)
                })
                .collect();
            let put = PutRequest::builder().set_item(Some(item)).build()?;
            requests.push(WriteRequest::builder().put_request(put).build());
        }
    }
    for chunk in requests.chunks(25) {
        let mut pending = chunk.to_vec();
        while !pending.is_empty() {
            let output = dynamodb
                .batch_write_item()
                .request_items(table, pending)
                .send()
                .await?;
            pending = output
                .unprocessed_items
                .and_then(|mut left| left.remove(table))
                .unwrap_or_default();
        }
    }
    Ok(())
}

/// Stream records (INSERT, NEW_IMAGE) of `events`, as Lambda hands them to the publisher.
fn stream_batch(events: &[Event]) -> anyhow::Result<StreamEvent> {
    let mut batch = StreamEvent::default();
    for (i, event) in events.iter().enumerate() {
        let mut record = EventRecord::default();
        record.event_name = "INSERT".into();
        record.change.new_image = event_to_image(event)?.into();
        record.change.sequence_number = Some(format!("{:021}", i + 1));
        batch.records.push(record);
    }
    Ok(batch)
}
