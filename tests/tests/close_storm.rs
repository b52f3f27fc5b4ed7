//! Closing many sockets at once never holds back the sockets still open: over real sockets,
//! on the local mode's database file. Closed sockets' `$disconnect`s wait in the gateway's
//! clean-up, a bounded number at work at once, while another user's socket opens, is
//! acknowledged and receives its subscription's events; then the backlog drains, the app's
//! `on_disconnect` hook has run once per socket, and nothing of them is left in the store.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use broker::{
    App, AppSchema, ConfigError, Connection, ConnectionId, DeliveryMode, Hooks, Storage, Topic,
    UserId,
};
use broker_tests::local::{self, CARD_ADDED, WsClient};
use futures_util::StreamExt;
use serde_json::json;
use tokio::sync::watch;

/// Sockets dropped at once.
const CLOSED: usize = 2_000;

/// The boards app, whose `on_disconnect` waits for the test to open its gate.
struct GatedBoards {
    gate: Arc<Gate>,
}

struct Gate {
    open: watch::Receiver<bool>,
    /// `on_disconnect`s begun.
    begun: AtomicUsize,
}

impl App for GatedBoards {
    fn tables(&self) -> Vec<broker::TableSpec> {
        boards::Boards.tables()
    }

    fn schema(&self, storage: &Storage) -> Result<AppSchema, ConfigError> {
        boards::Boards.schema(storage)
    }

    fn hooks(&self) -> Option<Arc<dyn Hooks>> {
        Some(self.gate.clone())
    }
}

#[async_trait]
impl Hooks for Gate {
    async fn on_disconnect(&self, _id: &ConnectionId, _connection: Option<&Connection>) {
        self.begun.fetch_add(1, Ordering::SeqCst);
        let _ = self.open.clone().wait_for(|open| *open).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_many_sockets_never_holds_back_another_users_init_and_subscription() {
    // Both ends of every socket are in this process.
    if let Ok((soft, hard)) = rlimit::getrlimit(rlimit::Resource::NOFILE) {
        let wanted = (4 * CLOSED as u64 + 1_024).min(hard);
        if soft < wanted {
            rlimit::setrlimit(rlimit::Resource::NOFILE, wanted, hard).unwrap();
        }
    }
    let (open_gate, open) = watch::channel(false);
    let gate = Arc::new(Gate {
        open,
        begun: AtomicUsize::new(0),
    });
    let dir = std::env::temp_dir().join(format!("broker-close-storm-{}", ulid::Ulid::new()));
    let options = local_gateway::Options {
        app: Arc::new(GatedBoards { gate: gate.clone() }),
        backend: local_gateway::Backend::File(dir.join("state.redb")),
        ..local::options(DeliveryMode::Stream)
    };
    // One user and one address hold the whole crowd: no per-user or per-address limit
    // applies (tests/tests/user_limits.rs tests them).
    let options = local_gateway::Options {
        broker: options.broker.clone().without_user_limits(),
        limits: local_gateway::server::Limits {
            max_uninitialised_per_address: 0,
            ..options.limits.clone()
        },
        ..options
    };
    let batch = options.limits.cleanup_concurrency;
    assert!(batch < CLOSED);
    let gateway = local::start(options).await;

    // GIVEN 2,000 sockets of one user, each subscribed to the cards of one board.
    let crowd = local::token(&gateway, "crowd");
    let board = local::create_board(&gateway, &crowd, "crowded").await;
    let sockets: Vec<WsClient> = futures_util::stream::iter(0..CLOSED)
        .map(|_| {
            let (gateway, crowd, board) = (&gateway, &crowd, &board);
            async move {
                let mut socket = WsClient::ready(gateway, "graphql-transport-ws", crowd).await;
                socket.subscribe("1", CARD_ADDED, json!({"b": board})).await;
                socket.sync().await;
                socket
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let topic = Topic::new(format!("board/{board}/cardAdded"));
    let subscriptions = &gateway.broker().ports().subscriptions;
    assert_eq!(subscriptions.by_topic(&topic).await.unwrap().len(), CLOSED);

    // WHEN they are all dropped at once, and their clean-up is held in the app's hook.
    for socket in sockets {
        socket.drop_abruptly().await;
    }
    assert!(
        local::eventually(async || gateway.cleanup_backlog() == CLOSED).await,
        "backlog: {}",
        gateway.cleanup_backlog()
    );
    assert!(
        local::eventually(async || gate.begun.load(Ordering::SeqCst) == batch).await,
        "begun: {}",
        gate.begun.load(Ordering::SeqCst)
    );

    // THEN another user's socket is acknowledged, subscribes, and receives its event, all
    // while the whole backlog still waits.
    let probe = local::token(&gateway, "probe");
    let own = local::create_board(&gateway, &probe, "own").await;
    let mut socket = WsClient::ready(&gateway, "graphql-transport-ws", &probe).await;
    assert_eq!(gateway.cleanup_backlog(), CLOSED);
    socket.subscribe("1", CARD_ADDED, json!({"b": own})).await;
    socket.sync().await;
    local::add_card(&gateway, &probe, &own, "while the crowd leaves").await;
    let next = socket.recv().await.unwrap();
    assert_eq!(next["type"], "next", "{next}");
    assert_eq!(
        next["payload"]["data"]["cardAdded"]["title"],
        "while the crowd leaves"
    );
    assert_eq!(gateway.cleanup_backlog(), CLOSED);
    // That many at work, no more.
    assert_eq!(gate.begun.load(Ordering::SeqCst), batch);

    // WHEN the hook lets them go, THEN every `$disconnect` runs once, and nothing of the
    // closed sockets is left: no connection, no subscription.
    open_gate.send(true).unwrap();
    assert!(
        local::eventually(async || gateway.cleanup_backlog() == 0).await,
        "backlog: {}",
        gateway.cleanup_backlog()
    );
    assert_eq!(gate.begun.load(Ordering::SeqCst), CLOSED);
    assert!(subscriptions.by_topic(&topic).await.unwrap().is_empty());
    let connections = &gateway.broker().ports().connections;
    assert!(
        connections
            .by_user(&UserId::new("crowd"))
            .await
            .unwrap()
            .is_empty()
    );
    // The live socket is untouched: it still has its connection and its subscription.
    assert_eq!(
        connections
            .by_user(&UserId::new("probe"))
            .await
            .unwrap()
            .len(),
        1
    );
    local::add_card(&gateway, &probe, &own, "after").await;
    let next = socket.recv().await.unwrap();
    assert_eq!(next["payload"]["data"]["cardAdded"]["title"], "after");
    gateway.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}
