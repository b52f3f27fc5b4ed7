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
mod sink;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use aws_lambda_events::dynamodb::{Event as StreamEvent, EventRecord};
use boards::{Board, BoardStore, MemoryBoardStore, build_schema, card_topic};
use broker::aws::{
    ApiGatewayConnectionGateway, DynamoDbConnectionStore, DynamoDbEventLog,
    DynamoDbSubscriptionStore, TableNames, event_to_image, provision,
};
use broker::memory::{MemoryConnectionStore, MemoryEventLog, MemorySubscriptionStore};
use broker::{
    Audience, AuthConfig, Authenticator, Broker, BrokerConfig, Connection, ConnectionId, Event,
    Ports, Protocol, Subscription, SubscriptionKey, UserId,
};
use clap::{Parser, Subcommand, ValueEnum};
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
    /// Batches measured per case (after one warm-up batch).
    #[arg(long, default_value_t = 5)]
    batches: usize,
    /// Stores to run on, comma-separated: embedded, moto (needs --moto or MOTO_ENDPOINT).
    #[arg(long, value_delimiter = ',', default_value = "embedded,moto")]
    stores: Vec<Store>,
    /// The DynamoDB emulator's endpoint.
    #[arg(long, env = "MOTO_ENDPOINT")]
    moto: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// The counting sink (started by the benchmark itself).
    Sink,
    /// CPU of hostile documents, with and without the cost limits.
    Attacks,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Store {
    Embedded,
    Moto,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Documents {
    Shared,
    Distinct,
}

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
        Some(Command::Attacks) => attacks::run(),
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
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let sink = sink::Sink::spawn()?;
    let mut rows = Vec::new();
    let posts = cli.subscribers.iter().max().copied().unwrap_or(1000) * cli.events;
    rows.push(floor_plain(&sink, posts).await?);
    rows.push(floor_signed(&sink, posts).await?);
    rows.push(floor_sdk(&sink, posts).await?);
    for store in &cli.stores {
        for &n in &cli.subscribers {
            for documents in [Documents::Shared, Documents::Distinct] {
                rows.push(publisher_case(&cli, &sink, *store, n, documents).await?);
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
    let signed = &rows[1];
    println!("\nratios to the signed-POST floor (same run):");
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

/// Concurrency of the floors' post loops: the broker's default `POST_CONCURRENCY`.
fn concurrency() -> usize {
    BrokerConfig::default().post_concurrency
}

async fn floor_plain(sink: &sink::Sink, posts: usize) -> anyhow::Result<Row> {
    let client = reqwest::Client::new();
    let frame = frame_like();
    let post = |i: usize| {
        let request = client
            .post(format!("{}/@connections/floor-{i}", sink.url))
            .body(frame.clone());
        async move { request.send().await.map(|r| r.status().is_success()) }
    };
    // Warm the pool, then measure.
    run_posts(&post, concurrency()).await?;
    let (cpu, wall) = measure(run_posts(&post, posts)).await?;
    Ok(Row {
        label: "floor: pooled HTTP POST".into(),
        cpu_per_message: cpu / posts as u32,
        per_second: posts as f64 / wall.as_secs_f64(),
        store_requests_per_event: None,
    })
}

async fn floor_signed(sink: &sink::Sink, posts: usize) -> anyhow::Result<Row> {
    use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
    let client = reqwest::Client::new();
    let frame = frame_like();
    let identity =
        aws_credential_types::Credentials::new("AKIDBENCH", "secret", None, None, "bench").into();
    let post = |i: usize| {
        let url = format!("{}/@connections/floor-{i}", sink.url);
        let mut request = http::Request::post(&url)
            .header("content-type", "application/json")
            .body(frame.clone())
            .expect("a valid request");
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region("us-east-1")
            .name("execute-api")
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .expect("signing parameters")
            .into();
        let signable = SignableRequest::new(
            "POST",
            &url,
            request
                .headers()
                .iter()
                .map(|(k, v)| (k.as_str(), v.to_str().unwrap_or_default())),
            SignableBody::Bytes(frame.as_bytes()),
        )
        .expect("a signable request");
        let (instructions, _) = sign(signable, &params)
            .expect("signing succeeds")
            .into_parts();
        instructions.apply_to_request_http1x(&mut request);
        let request = reqwest::Request::try_from(request).expect("an http request converts");
        let client = &client;
        async move {
            client
                .execute(request)
                .await
                .map(|r| r.status().is_success())
        }
    };
    run_posts(&post, concurrency()).await?;
    let (cpu, wall) = measure(run_posts(&post, posts)).await?;
    Ok(Row {
        label: "floor: SigV4-signed POST".into(),
        cpu_per_message: cpu / posts as u32,
        per_second: posts as f64 / wall.as_secs_f64(),
        store_requests_per_event: None,
    })
}

/// The Management API client the publisher posts with, alone: what a post costs through
/// the SDK before any rendering or store access.
async fn floor_sdk(sink: &sink::Sink, posts: usize) -> anyhow::Result<Row> {
    use broker::ConnectionGateway as _;
    let sdk = broker::aws::sdk_config(Some(&sink.url)).await;
    let gateway = ApiGatewayConnectionGateway::from_config(&sdk, &sink.url);
    let frame = frame_like();
    let post = |i: usize| {
        let (gateway, frame) = (&gateway, &frame);
        async move {
            let id = ConnectionId::new(format!("floor-{i}"));
            gateway.post(&id, frame).await
        }
    };
    let run = |count: usize| async move {
        let outcomes: Vec<_> = futures_util::stream::iter(0..count)
            .map(post)
            .buffer_unordered(concurrency())
            .collect()
            .await;
        for outcome in outcomes {
            outcome?;
        }
        anyhow::Ok(())
    };
    run(concurrency()).await?;
    let (cpu, wall) = measure(run(posts)).await?;
    Ok(Row {
        label: "Management API client post (aws-sdk-apigatewaymanagement)".into(),
        cpu_per_message: cpu / posts as u32,
        per_second: posts as f64 / wall.as_secs_f64(),
        store_requests_per_event: None,
    })
}

async fn run_posts<F, Fut>(post: &F, posts: usize) -> anyhow::Result<()>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = reqwest::Result<bool>>,
{
    let outcomes: Vec<_> = futures_util::stream::iter(0..posts)
        .map(post)
        .buffer_unordered(concurrency())
        .collect()
        .await;
    for outcome in outcomes {
        anyhow::ensure!(outcome?, "the sink refused a post");
    }
    Ok(())
}

async fn measure<T>(
    work: impl Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<(Duration, Duration)> {
    let (cpu, wall) = (process_cpu(), Instant::now());
    work.await?;
    Ok((process_cpu() - cpu, wall.elapsed()))
}

/// A `next` frame of the size the publisher posts.
fn frame_like() -> String {
    json!({"id": "s", "type": "next", "payload": {"data": {"cardAdded": {"id": "01J0000000000000000000000", "title": "A card"}}, "extensions": {"eventId": "01J0000000000000000000000"}}}).to_string()
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
#[derive(Default)]
struct CountingBoards {
    inner: MemoryBoardStore,
    reads: Arc<RequestCounter>,
}

#[async_trait::async_trait]
impl BoardStore for CountingBoards {
    async fn create_board(&self, board: &Board) -> Result<(), broker::StoreError> {
        self.inner.create_board(board).await
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
) -> anyhow::Result<Row> {
    let sdk = broker::aws::sdk_config(Some(&sink.url)).await;
    let gateway = Arc::new(ApiGatewayConnectionGateway::from_config(&sdk, &sink.url));
    let counter = Arc::new(RequestCounter::default());
    let auth = Authenticator::new(AuthConfig {
        secret: "publisher-bench-secret-0123456789-0123".into(),
        issuer: None,
        audience: None,
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
    let (broker, ports) = match store {
        Store::Embedded => {
            let ports = Ports {
                connections: Arc::new(MemoryConnectionStore::default()),
                subscriptions: Arc::new(MemorySubscriptionStore::default()),
                events: Arc::new(MemoryEventLog::default()),
                gateway,
                fanout: None,
            };
            let boards = CountingBoards {
                reads: counter.clone(),
                ..Default::default()
            };
            boards.create_board(&board).await?;
            let schema = build_schema(Arc::new(boards));
            (Broker::new(schema, ports.clone(), auth, config), ports)
        }
        Store::Moto => {
            let endpoint = cli.moto.as_deref().context("--moto or MOTO_ENDPOINT")?;
            let moto = broker::aws::sdk_config(Some(endpoint)).await;
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
                events: Arc::new(DynamoDbEventLog::new(dynamodb.clone(), &tables.events)),
                gateway,
                fanout: None,
            };
            let boards = boards::dynamodb::DynamoDbBoardStore::new(dynamodb.clone(), &app_table);
            boards.create_board(&board).await?;
            let schema = build_schema(Arc::new(boards));
            (Broker::new(schema, ports.clone(), auth, config), ports)
        }
    };

    // N subscribers of one board, one connection each, stored as `subscribe` stores them.
    let user = UserId::from(USER);
    futures_util::stream::iter(0..n)
        .map(|i| {
            let ports = &ports;
            let user = user.clone();
            async move {
                let id = ConnectionId::new(format!("conn-{i}"));
                let connection = Connection {
                    id: id.clone(),
                    protocol: Protocol::GraphqlTransportWs,
                    principal: Some(user.clone()),
                    initialised: true,
                    connected_at_ms: broker::domain::now_ms(),
                    expires_at: broker::domain::now_secs() + 3600,
                    authorized_until: Some(broker::domain::now_secs() + 3600),
                };
                ports.connections.put(&connection).await?;
                let document = match documents {
                    Documents::Shared => {
                        "subscription OnCard($board: ID!) { cardAdded(boardId: $board) { id title } }"
                            .to_owned()
                    }
                    // Each subscriber's own aliases: no two documents alike.
                    Documents::Distinct => format!(
                        "subscription OnCard($board: ID!) {{ c{i}: cardAdded(boardId: $board) {{ id t{i}: title }} }}"
                    ),
                };
                ports
                    .subscriptions
                    .insert(&Subscription {
                        key: SubscriptionKey {
                            connection_id: id,
                            operation_id: "s".into(),
                        },
                        topic: card_topic(BOARD),
                        protocol: Protocol::GraphqlTransportWs,
                        principal: user,
                        document,
                        operation_name: Some("OnCard".into()),
                        variables: json!({ "board": BOARD }),
                        expires_at: broker::domain::now_secs() + 3600,
                        // Every event of the run comes after the subscription.
                        starts_at_ms: 0,
                    })
                    .await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<Vec<()>>>()?;

    let mut cpu = Duration::ZERO;
    let mut wall = Duration::ZERO;
    let mut requests = 0;
    let mut delivered = 0;
    for batch_index in 0..=cli.batches {
        let events: Vec<Event> = (0..cli.events)
            .map(|k| {
                let card = json!({"id": format!("card-{batch_index}-{k}"), "boardId": BOARD, "title": "A card"});
                Event::new(card_topic(BOARD), card, Audience::User(user.clone()))
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
        }
    }
    let label = format!(
        "{} N={n} {} documents",
        match store {
            Store::Embedded => "embedded",
            Store::Moto => "DynamoDB (moto)",
        },
        match documents {
            Documents::Shared => "shared",
            Documents::Distinct => "distinct",
        }
    );
    eprintln!("{label}: done");
    Ok(Row {
        label,
        cpu_per_message: cpu / delivered.max(1) as u32,
        per_second: delivered as f64 / wall.as_secs_f64(),
        store_requests_per_event: Some(requests as f64 / (cli.batches * cli.events) as f64),
    })
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
