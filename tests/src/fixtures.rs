//! The `events/` sample events (also used with `sam local invoke`; [`testkit::fixtures`]),
//! and a broker on memory adapters with a recording gateway to feed them to.

use std::sync::Arc;

use boards::{Board, BoardStore, MemoryBoardStore, build_schema};
use broker::memory::{
    ChannelFanoutQueue, MemoryConnectionStore, MemoryEventLog, MemoryPageMarks,
    MemorySubscriptionStore, RecordingGateway,
};
use broker::{
    AuthConfig, Authenticator, Broker, BrokerConfig, Ports, ReplayGate, SubscriptionStore,
};
pub use testkit::fixtures::{BOARD, CONNECTION, USER, fixture};

pub struct Harness {
    pub broker: Broker,
    pub gateway: Arc<RecordingGateway>,
    pub events: Arc<MemoryEventLog>,
    pub token: String,
}

/// Memory stores, no fan-out queue, and `gateway` to record what is posted.
pub fn memory_ports(gateway: Arc<RecordingGateway>) -> Ports {
    let subscriptions = MemorySubscriptionStore::default();
    Ports {
        connections: Arc::new(MemoryConnectionStore::default()),
        replay_gate: Arc::new(subscriptions.replay_gate()),
        subscriptions: Arc::new(subscriptions),
        page_marks: Arc::new(MemoryPageMarks::default()),
        quotas: Arc::new(broker::memory::MemoryQuotas::default()),
        events: Arc::new(MemoryEventLog::default()),
        gateway,
        fanout: None,
    }
}

/// The authenticator the fixtures' tokens are signed for.
pub fn fixture_authenticator() -> Authenticator {
    Authenticator::new(AuthConfig {
        secret: "fixture-secret-0123456789-0123456789".into(),
        issuer: None,
        audience: None,
        leeway_secs: broker::auth::DEFAULT_LEEWAY_SECS,
    })
}

/// A broker on memory adapters where `user-a` owns board `b1`.
pub async fn harness() -> Harness {
    let subscriptions = MemorySubscriptionStore::default();
    let replay_gate = Arc::new(subscriptions.replay_gate());
    harness_with(Arc::new(subscriptions), replay_gate).await
}

/// [`harness`] on the subscription store given, and the replay gate of that store.
pub async fn harness_with(
    subscriptions: Arc<dyn SubscriptionStore>,
    replay_gate: Arc<dyn ReplayGate>,
) -> Harness {
    let gateway = Arc::new(RecordingGateway::default());
    let events = Arc::new(MemoryEventLog::default());
    let (queue, _pages) = ChannelFanoutQueue::new();
    let ports = Ports {
        connections: Arc::new(MemoryConnectionStore::default()),
        subscriptions,
        replay_gate,
        page_marks: Arc::new(MemoryPageMarks::default()),
        quotas: Arc::new(broker::memory::MemoryQuotas::default()),
        events: events.clone(),
        gateway: gateway.clone(),
        fanout: Some(Arc::new(queue)),
    };
    let boards = Arc::new(MemoryBoardStore::new(&events.tables()));
    boards
        .create_board(&Board {
            id: BOARD.into(),
            title: "Fixture board".into(),
            owner: USER.into(),
        })
        .await
        .unwrap();
    let auth = fixture_authenticator();
    let token = auth.mint(USER, 600);
    let broker = Broker::new(build_schema(boards), ports, auth, BrokerConfig::default());
    Harness {
        broker,
        gateway,
        events,
        token,
    }
}
