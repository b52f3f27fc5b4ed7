//! Resuming subscriptions (`extensions.resumeFrom`) and where a new subscription starts,
//! over real sockets on both backends (embedded, DynamoDB on moto) and in both delivery
//! modes; the race between a resume and a slow publisher on the broker itself.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use broker::memory::{
    MemoryConnectionStore, MemoryEventLog, MemoryPageMarks, MemoryReplayGate,
    MemorySubscriptionStore, RecordingGateway,
};
use broker::resume::{RESUME_EXPIRED, RESUME_FROM};
use broker::{
    Audience, Broker, BrokerConfig, ConnectionId, DeliveryMode, Event, EventLog, EventRef, Ports,
    ReplayGate, StoreError, Topic, UserId,
};
use broker_tests::aws::{fresh_tables, moto_endpoint};
use broker_tests::local::*;
use local_gateway::aws::AwsBackend;
use local_gateway::{Backend, LocalGateway};
use serde_json::{Value, json};

const PROTOCOLS: [&str; 2] = ["graphql-transport-ws", "graphql-ws"];

async fn embedded(mode: DeliveryMode) -> LocalGateway {
    start(options(mode)).await
}

async fn on_moto(mode: DeliveryMode, poll: Duration) -> LocalGateway {
    let tables = fresh_tables().await;
    let mut options = options(mode);
    options.poll_interval = poll;
    options.backend = Backend::Aws(AwsBackend {
        endpoint: Some(moto_endpoint()),
        tables: tables.names.clone(),
        app_tables: tables.app_tables(),
        fanout_queue_url: None,
        create_tables: false,
    });
    start(options).await
}

fn subscribe_frame(protocol: &str, id: &str, board: &str, resume_from: Option<&str>) -> Value {
    let kind = if protocol == "graphql-ws" {
        "start"
    } else {
        "subscribe"
    };
    let mut payload = json!({"query": CARD_ADDED, "variables": {"b": board}});
    if let Some(cursor) = resume_from {
        payload["extensions"] = json!({ RESUME_FROM: cursor });
    }
    json!({"id": id, "type": kind, "payload": payload})
}

/// The card title and event id of a `next`/`data` message.
fn card(message: &Value) -> (String, String) {
    let kind = message["type"].as_str().unwrap_or_default();
    assert!(kind == "next" || kind == "data", "{message}");
    (
        message["payload"]["data"]["cardAdded"]["title"]
            .as_str()
            .unwrap_or_else(|| panic!("a card in {message}"))
            .to_owned(),
        message["payload"]["extensions"]["eventId"]
            .as_str()
            .unwrap_or_else(|| panic!("an event id in {message}"))
            .to_owned(),
    )
}

/// The next `n` cards a client receives, then nothing more (a ping or query round trip
/// comes back before any further message).
async fn exactly(client: &mut WsClient, n: usize) -> Vec<(String, String)> {
    let mut cards = Vec::new();
    for _ in 0..n {
        cards.push(card(&client.recv().await.expect("a card")));
    }
    client.sync().await;
    cards
}

/// The next `n` cards with ids not in `known`, as a client that drops repeats by event id
/// gets them. A repeat may only be of an event the client has (the replay's overlap).
async fn new_cards(
    client: &mut WsClient,
    known: &mut HashSet<String>,
    n: usize,
) -> Vec<(String, String)> {
    let mut fresh = Vec::new();
    while fresh.len() < n {
        let (title, id) = card(&client.recv().await.expect("a card"));
        if known.insert(id.clone()) {
            fresh.push((title, id));
        } else {
            assert!(title.starts_with("seen"), "{title} came twice");
        }
    }
    fresh
}

/// A subscriber sees three cards, loses its socket, five cards are published, and it
/// subscribes again from the last event id it saw: it gets the five in order, then live
/// cards, each once.
async fn resume_replays_what_was_missed(gateway: &LocalGateway, protocol: &str) {
    let alice = token(gateway, "alice");
    let board = create_board(gateway, &alice, "resumable").await;
    let mut tab = WsClient::ready(gateway, protocol, &alice).await;
    tab.send(subscribe_frame(protocol, "cards", &board, None))
        .await;
    tab.sync().await;
    for n in 1..=3 {
        add_card(gateway, &alice, &board, &format!("seen {n}")).await;
    }
    let seen = exactly(&mut tab, 3).await;
    assert_eq!(
        seen.iter().map(|c| c.0.as_str()).collect::<Vec<_>>(),
        ["seen 1", "seen 2", "seen 3"]
    );
    tab.drop_abruptly().await;

    for n in 1..=5 {
        add_card(gateway, &alice, &board, &format!("missed {n}")).await;
    }
    let mut tab = WsClient::ready(gateway, protocol, &alice).await;
    let last_seen = seen[2].1.clone();
    tab.send(subscribe_frame(protocol, "cards", &board, Some(&last_seen)))
        .await;
    let mut known: HashSet<String> = seen.iter().map(|c| c.1.clone()).collect();
    let mut got = new_cards(&mut tab, &mut known, 5).await;
    // Once the subscribe has been handled (a connection's frames are handled in order) the
    // subscription is stored: this one is live. One published while it is being stored
    // could come twice, with its id.
    tab.sync().await;
    add_card(gateway, &alice, &board, "live").await;
    got.extend(new_cards(&mut tab, &mut known, 1).await);
    tab.sync().await;
    let titles: Vec<&str> = got.iter().map(|c| c.0.as_str()).collect();
    assert_eq!(
        titles,
        [
            "missed 1", "missed 2", "missed 3", "missed 4", "missed 5", "live"
        ]
    );
    assert!(got.iter().all(|c| c.1 > last_seen), "all after the cursor");
}

/// Subscriptions made one after another while events are published and the stream lags:
/// each receives only the cards published after it was stored.
async fn new_subscriptions_start_at_their_own_beginning(gateway: &LocalGateway) {
    let alice = token(gateway, "alice");
    let board = create_board(gateway, &alice, "ordering").await;
    let mut tabs = Vec::new();
    for n in 0..5 {
        add_card(gateway, &alice, &board, &format!("card {n}")).await;
        // Made right after the mutation answered, before the stream has delivered it.
        let mut tab = WsClient::ready(gateway, "graphql-transport-ws", &alice).await;
        tab.send(subscribe_frame(
            "graphql-transport-ws",
            "cards",
            &board,
            None,
        ))
        .await;
        tab.sync().await;
        tabs.push(tab);
    }
    add_card(gateway, &alice, &board, "card 5").await;
    for (k, tab) in tabs.iter_mut().enumerate() {
        let expected: Vec<String> = (k + 1..=5).map(|n| format!("card {n}")).collect();
        let got = exactly(tab, expected.len()).await;
        let titles: Vec<String> = got.into_iter().map(|c| c.0).collect();
        assert_eq!(titles, expected, "subscriber {k}");
    }
}

mod embedded {
    use super::*;

    #[tokio::test]
    async fn stream_mode_resume_replays_what_was_missed() {
        let gateway = embedded(DeliveryMode::Stream).await;
        for protocol in PROTOCOLS {
            resume_replays_what_was_missed(&gateway, protocol).await;
        }
        gateway.shutdown().await;
    }

    #[tokio::test]
    async fn direct_mode_resume_replays_what_was_missed() {
        let gateway = embedded(DeliveryMode::Direct).await;
        for protocol in PROTOCOLS {
            resume_replays_what_was_missed(&gateway, protocol).await;
        }
        gateway.shutdown().await;
    }

    #[tokio::test]
    async fn stream_mode_new_subscriptions_start_at_their_own_beginning() {
        let mut options = options(DeliveryMode::Stream);
        // Lambda's polling delay: the stream delivers after the next subscriber is stored.
        options.poll_interval = Duration::from_millis(250);
        let gateway = start(options).await;
        new_subscriptions_start_at_their_own_beginning(&gateway).await;
        gateway.shutdown().await;
    }

    #[tokio::test]
    async fn direct_mode_new_subscriptions_start_at_their_own_beginning() {
        let gateway = embedded(DeliveryMode::Direct).await;
        new_subscriptions_start_at_their_own_beginning(&gateway).await;
        gateway.shutdown().await;
    }
}

mod dynamodb {
    use super::*;

    #[tokio::test]
    async fn stream_mode_resume_replays_what_was_missed() {
        let gateway = on_moto(DeliveryMode::Stream, Duration::from_millis(50)).await;
        for protocol in PROTOCOLS {
            resume_replays_what_was_missed(&gateway, protocol).await;
        }
        gateway.shutdown().await;
    }

    #[tokio::test]
    async fn direct_mode_resume_replays_what_was_missed() {
        let gateway = on_moto(DeliveryMode::Direct, Duration::from_millis(50)).await;
        for protocol in PROTOCOLS {
            resume_replays_what_was_missed(&gateway, protocol).await;
        }
        gateway.shutdown().await;
    }

    #[tokio::test]
    async fn stream_mode_new_subscriptions_start_at_their_own_beginning() {
        let gateway = on_moto(DeliveryMode::Stream, Duration::from_millis(250)).await;
        new_subscriptions_start_at_their_own_beginning(&gateway).await;
        gateway.shutdown().await;
    }

    #[tokio::test]
    async fn direct_mode_new_subscriptions_start_at_their_own_beginning() {
        let gateway = on_moto(DeliveryMode::Direct, Duration::from_millis(50)).await;
        new_subscriptions_start_at_their_own_beginning(&gateway).await;
        gateway.shutdown().await;
    }
}

#[tokio::test]
async fn a_cursor_older_than_the_retention_is_signalled_then_live_events_flow() {
    let gateway = embedded(DeliveryMode::Stream).await;
    let alice = token(&gateway, "alice");
    let board = create_board(&gateway, &alice, "old").await;
    let day_and_more = broker::domain::now_ms() - 25 * 60 * 60 * 1000;
    let ancient = ulid::Ulid::from_parts(day_and_more, 7).to_string();
    for protocol in PROTOCOLS {
        let mut tab = WsClient::ready(&gateway, protocol, &alice).await;
        tab.send(subscribe_frame(protocol, "cards", &board, Some(&ancient)))
            .await;
        let signal = tab.recv().await.unwrap();
        assert_eq!(signal["id"], "cards", "{signal}");
        assert_eq!(
            signal["payload"]["errors"][0]["extensions"]["code"], RESUME_EXPIRED,
            "{signal}"
        );
        tab.sync().await;
        add_card(&gateway, &alice, &board, &format!("after {protocol}")).await;
        let got = exactly(&mut tab, 1).await;
        assert_eq!(got[0].0, format!("after {protocol}"));
        tab.close().await;
    }
    gateway.shutdown().await;
}

#[tokio::test]
async fn a_cursor_in_the_retentions_last_minutes_is_signalled_and_one_before_replays() {
    // The events right after a cursor leave the log with its second: a cursor within the
    // replay's margin (five minutes of a day's retention) of that is out of reach too.
    let gateway = embedded(DeliveryMode::Stream).await;
    let alice = token(&gateway, "alice");
    let board = create_board(&gateway, &alice, "edge").await;
    let day = 24 * 60 * 60 * 1000;
    let now = broker::domain::now_ms();
    let edge = ulid::Ulid::from_parts(now - day + 60_000, 7).to_string();
    let inside = ulid::Ulid::from_parts(now - day + 10 * 60_000, 7).to_string();
    let mut tab = WsClient::ready(&gateway, "graphql-transport-ws", &alice).await;
    tab.send(subscribe_frame(
        "graphql-transport-ws",
        "edge",
        &board,
        Some(&edge),
    ))
    .await;
    let signal = tab.recv().await.unwrap();
    assert_eq!(
        signal["payload"]["errors"][0]["extensions"]["code"], RESUME_EXPIRED,
        "{signal}"
    );
    tab.send(subscribe_frame(
        "graphql-transport-ws",
        "inside",
        &board,
        Some(&inside),
    ))
    .await;
    tab.sync().await;
    add_card(&gateway, &alice, &board, "live").await;
    // No signal for the cursor inside: each subscription gets just the live card.
    let mut got: Vec<_> = Vec::new();
    for _ in 0..2 {
        let message = tab.recv().await.unwrap();
        assert_eq!(message["type"], "next", "{message}");
        assert_eq!(
            message["payload"]["data"]["cardAdded"]["title"], "live",
            "{message}"
        );
        got.push(message["id"].as_str().unwrap().to_owned());
    }
    got.sort();
    assert_eq!(got, ["edge", "inside"]);
    tab.close().await;
    gateway.shutdown().await;
}

#[tokio::test]
async fn a_cursor_that_is_not_an_event_id_or_is_in_the_future_is_a_graphql_error() {
    let gateway = embedded(DeliveryMode::Stream).await;
    let alice = token(&gateway, "alice");
    let board = create_board(&gateway, &alice, "bad cursor").await;
    let in_a_minute = ulid::Ulid::from_parts(broker::domain::now_ms() + 60_000, 0).to_string();
    for (protocol, cursor) in [
        ("graphql-transport-ws", json!("nope")),
        ("graphql-ws", json!(42)),
        // Past the largest ULID: it would decode into another id.
        ("graphql-transport-ws", json!("8ZZZZZZZZZZZZZZZZZZZZZZZZZ")),
        // Later than now: the events published until then would be taken for replayed.
        ("graphql-transport-ws", json!(in_a_minute)),
        ("graphql-ws", json!("7ZZZZZZZZZZZZZZZZZZZZZZZZZ")),
    ] {
        let mut tab = WsClient::ready(&gateway, protocol, &alice).await;
        let mut frame = subscribe_frame(protocol, "cards", &board, None);
        frame["payload"]["extensions"] = json!({ RESUME_FROM: cursor });
        tab.send(frame).await;
        let error = tab.recv().await.unwrap();
        assert_eq!(
            (error["id"].as_str(), error["type"].as_str()),
            (Some("cards"), Some("error")),
            "{error}"
        );
        assert!(error.to_string().contains(RESUME_FROM), "{error}");
        // Nothing was stored: a card now reaches nobody on this socket.
        add_card(&gateway, &alice, &board, "unseen").await;
        tab.sync().await;
        tab.close().await;
    }
    gateway.shutdown().await;
}

#[tokio::test]
async fn a_replay_is_authorised_like_live_delivery() {
    let gateway = embedded(DeliveryMode::Stream).await;
    let (alice, bob) = (token(&gateway, "alice"), token(&gateway, "bob"));
    let board = create_board(&gateway, &bob, "bob's").await;
    let mut tab = WsClient::ready(&gateway, "graphql-transport-ws", &bob).await;
    tab.send(subscribe_frame(
        "graphql-transport-ws",
        "cards",
        &board,
        None,
    ))
    .await;
    tab.sync().await;
    let first = add_card(&gateway, &bob, &board, "bob's first").await;
    let (_, cursor) = card(&tab.recv().await.unwrap());
    tab.drop_abruptly().await;
    let _ = (first, alice);

    // On bob's topic, one event only alice may see (a publisher's mistake), one for bob.
    let topic = boards::card_topic(&board);
    let log = gateway.broker().ports().events.clone();
    let stray = Event::new(
        topic.clone(),
        json!({"id": "x", "boardId": board, "title": "alice's secret"}),
        Audience::User(UserId::new("alice")),
    );
    log.append(&stray).await.unwrap();
    add_card(&gateway, &bob, &board, "bob's second").await;

    let mut tab = WsClient::ready(&gateway, "graphql-transport-ws", &bob).await;
    tab.send(subscribe_frame(
        "graphql-transport-ws",
        "cards",
        &board,
        Some(&cursor),
    ))
    .await;
    let got = exactly(&mut tab, 1).await;
    assert_eq!(got[0].0, "bob's second");
    gateway.shutdown().await;
}

/// How [`ScriptedLog`] appends.
enum Appends {
    /// Events titled "slow" take this long to store: a publisher that stamped its event
    /// before a subscription was stored and stores it after the resume's first read.
    SlowWhenTitledSlow(Duration),
    /// Each event is stored, then answered as a conflict: what a retry gets from DynamoDB
    /// when the answer to the attempt that stored the event was lost.
    AnswerLost,
    /// Each event is stored, then answered as a failure (a 500 after the write).
    StoredThenFailed,
    /// Nothing is stored: every append fails.
    Failing,
}

/// A memory event log whose appends behave as [`Appends`] says.
struct ScriptedLog {
    inner: MemoryEventLog,
    appends: Appends,
}

impl ScriptedLog {
    fn new(appends: Appends) -> Self {
        Self {
            inner: MemoryEventLog::default(),
            appends,
        }
    }
}

#[async_trait]
impl EventLog for ScriptedLog {
    async fn append(&self, event: &Event) -> Result<(), StoreError> {
        match self.appends {
            Appends::SlowWhenTitledSlow(delay) => {
                if event.payload["title"] == "slow" {
                    tokio::time::sleep(delay).await;
                }
                self.inner.append(event).await
            }
            Appends::AnswerLost => {
                self.inner.append(event).await?;
                Err(StoreError::Conflict(format!("event {} exists", event.id)))
            }
            Appends::StoredThenFailed => {
                self.inner.append(event).await?;
                Err(StoreError::backend("500 after the write"))
            }
            Appends::Failing => Err(StoreError::backend("unavailable")),
        }
    }
    /// As a store that checks the deadline in its commit: a slow commit is refused whole.
    async fn append_with(
        &self,
        changes: &broker::Changes,
        event: &Event,
        deadline_ms: u64,
    ) -> Result<(), StoreError> {
        match self.appends {
            Appends::SlowWhenTitledSlow(delay) => {
                if event.payload["title"] == "slow" {
                    let left = deadline_ms.saturating_sub(broker::domain::now_ms()) + 1;
                    tokio::time::sleep(delay.min(Duration::from_millis(left))).await;
                }
                self.inner.append_with(changes, event, deadline_ms).await
            }
            Appends::AnswerLost => {
                self.inner.append_with(changes, event, deadline_ms).await?;
                Err(StoreError::Conflict(format!("event {} exists", event.id)))
            }
            Appends::StoredThenFailed => {
                self.inner.append_with(changes, event, deadline_ms).await?;
                Err(StoreError::backend("500 after the write"))
            }
            Appends::Failing => Err(StoreError::backend("unavailable")),
        }
    }
    async fn get(&self, event: &EventRef) -> Result<Option<Event>, StoreError> {
        self.inner.get(event).await
    }
    async fn after(
        &self,
        topic: &Topic,
        after: &str,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        self.inner.after(topic, after, limit).await
    }
    async fn is_delivered(&self, event: &EventRef) -> Result<bool, StoreError> {
        self.inner.is_delivered(event).await
    }
    async fn mark_delivered(&self, event: &EventRef) -> Result<(), StoreError> {
        self.inner.mark_delivered(event).await
    }
}

#[tokio::test]
async fn a_publish_whose_write_failed_after_storing_its_event_succeeds() {
    for appends in [Appends::AnswerLost, Appends::StoredThenFailed] {
        // GIVEN a log that stores each event but answers its append as failed
        let broker = broker_on(Arc::new(ScriptedLog::new(appends)), BrokerConfig::default());
        // WHEN an event is published
        let topic = Topic::new("t");
        let published = broker
            .publish(topic.clone(), &json!({"n": 1}), Audience::Everyone)
            .await;
        // THEN the publish succeeds: the log holds that very event
        let event = published.unwrap();
        let logged = broker.ports().events.after(&topic, "", 10).await.unwrap();
        assert_eq!(logged, [event]);
    }
}

#[tokio::test]
async fn a_publish_whose_write_failed_without_storing_is_an_error_not_a_timeout() {
    let broker = broker_on(
        Arc::new(ScriptedLog::new(Appends::Failing)),
        BrokerConfig::default(),
    );
    let result = broker
        .publish(Topic::new("t"), &json!({"n": 1}), Audience::Everyone)
        .await;
    assert!(
        matches!(
            result,
            Err(broker::PublishError::Store(StoreError::Backend { .. }))
        ),
        "{result:?}"
    );
}

/// A broker in direct mode on an event log whose "slow" events take `slow` to store, a board
/// of alice's with two cards published ("seen", the cursor, and "missed"), and a connection
/// of alice's ready to subscribe.
struct Raced {
    broker: Broker,
    gateway: Arc<RecordingGateway>,
    topic: Topic,
    cursor: String,
    connection: ConnectionId,
}

impl Raced {
    async fn new(slow: Duration) -> Self {
        Self::on(slow, |_, subscriptions| {
            Arc::new(subscriptions.replay_gate())
        })
        .await
    }

    /// [`Self::new`] with the replay gate `gate` makes, given the event log and the
    /// subscription store.
    async fn on(
        slow: Duration,
        gate: impl FnOnce(Arc<dyn EventLog>, &MemorySubscriptionStore) -> Arc<dyn ReplayGate>,
    ) -> Self {
        use boards::{Board, BoardStore, MemoryBoardStore, build_schema};
        // Direct mode: live delivery happens in the publishing call, so what live delivery
        // skips (the slow event, stamped before the subscription) can only come from the
        // replay.
        let gateway = Arc::new(RecordingGateway::default());
        let log = ScriptedLog::new(Appends::SlowWhenTitledSlow(slow));
        // The app's tables are the log's: a mutation commits its card with its event there.
        let boards = Arc::new(MemoryBoardStore::new(&log.inner.tables()));
        let events: Arc<dyn EventLog> = Arc::new(log);
        let subscriptions = MemorySubscriptionStore::default();
        let ports = Ports {
            connections: Arc::new(MemoryConnectionStore::default()),
            replay_gate: gate(events.clone(), &subscriptions),
            subscriptions: Arc::new(subscriptions),
            page_marks: Arc::new(MemoryPageMarks::default()),
            quotas: Arc::new(broker::memory::MemoryQuotas::default()),
            events,
            gateway: gateway.clone(),
            fanout: None,
        };
        let board = Board {
            id: "b1".into(),
            title: "raced".into(),
            owner: "alice".into(),
        };
        boards.create_board(&board).await.unwrap();
        let auth = broker::Authenticator::new(broker::AuthConfig {
            secret: SECRET.into(),
            issuer: None,
            audience: None,
            leeway_secs: broker::auth::DEFAULT_LEEWAY_SECS,
        });
        let config = BrokerConfig {
            delivery_mode: DeliveryMode::Direct,
            // A publish gets 1.5 s to store its event: the slow ones below take less.
            resume_settle: Duration::from_millis(2000),
            ..BrokerConfig::default()
        };
        let broker = Broker::new(build_schema(boards), ports, auth, config);
        let topic = boards::card_topic(&board.id);
        let raced = Self {
            broker,
            gateway,
            topic,
            cursor: String::new(),
            connection: ConnectionId::new("resumer"),
        };
        let cursor = raced.publish("seen").await.id;
        raced.publish("missed").await;
        let broker = &raced.broker;
        broker
            .connect(raced.connection.clone(), Some("graphql-transport-ws"), None)
            .await
            .unwrap();
        let token = broker.authenticator().mint("alice", 600);
        let init = json!({"type": "connection_init", "payload": {"token": token}});
        broker
            .receive(&raced.connection, &init.to_string())
            .await
            .unwrap();
        Self { cursor, ..raced }
    }

    async fn publish(&self, title: &str) -> Event {
        let card = json!({"id": title, "boardId": "b1", "title": title});
        let alice = Audience::User(UserId::new("alice"));
        self.broker
            .publish(self.topic.clone(), &card, alice)
            .await
            .unwrap()
    }

    /// Publishes `title` in a task of its own.
    fn publish_soon(&self, title: &'static str) -> tokio::task::JoinHandle<Event> {
        let raced = self.handle();
        tokio::spawn(async move { raced.publish(title).await })
    }

    /// Subscribes with the cursor, in a task of its own (the resume answers once it has
    /// handed over).
    fn resume_soon(&self) -> tokio::task::JoinHandle<()> {
        let raced = self.handle();
        tokio::spawn(async move {
            let subscribe = json!({"id": "cards", "type": "subscribe", "payload": {
                "query": CARD_ADDED, "variables": {"b": "b1"},
                "extensions": { RESUME_FROM: raced.cursor }}});
            raced
                .broker
                .receive(&raced.connection, &subscribe.to_string())
                .await
                .unwrap();
        })
    }

    fn handle(&self) -> Self {
        Self {
            broker: self.broker.clone(),
            gateway: self.gateway.clone(),
            topic: self.topic.clone(),
            cursor: self.cursor.clone(),
            connection: self.connection.clone(),
        }
    }

    /// A subscription of alice's to the board's cards on `connection`, stored as if by a
    /// subscribe, replaying until `replaying_until_ms` (0: live).
    fn subscription(&self, connection: &str, replaying_until_ms: u64) -> broker::Subscription {
        broker::Subscription {
            key: broker::SubscriptionKey {
                connection_id: ConnectionId::new(connection),
                operation_id: "cards".into(),
            },
            topic: self.topic.clone(),
            protocol: broker::Protocol::GraphqlTransportWs,
            principal: UserId::new("alice"),
            document: CARD_ADDED.into(),
            operation_name: None,
            variables: json!({"b": "b1"}),
            expires_at: u64::MAX,
            starts_at_ms: 0,
            replaying_until_ms,
            public: false,
        }
    }

    /// The titles the resumer received, in order.
    fn titles(&self) -> Vec<String> {
        self.gateway
            .take(&self.connection)
            .iter()
            .filter(|m| m["type"] == "next")
            .map(|m| {
                m["payload"]["data"]["cardAdded"]["title"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    }
}

#[tokio::test]
async fn no_event_is_skipped_when_a_slow_publisher_races_a_resume() {
    let raced = Raced::new(Duration::from_millis(300)).await;
    // Stamped now, stored 300 ms later: after the resume below has read the log once.
    let slow = raced.publish_soon("slow");
    tokio::time::sleep(Duration::from_millis(20)).await;
    raced.resume_soon().await.unwrap();
    slow.await.unwrap();
    raced.publish("live").await;
    assert_eq!(raced.titles(), ["missed", "slow", "live"]);
}

#[tokio::test]
async fn a_live_event_waits_for_the_replay_of_an_earlier_slow_one() {
    // GIVEN a publisher that stamped "slow" before the resuming subscription was stored
    // and stores it 600 ms later, well after the replay's reads right after the store
    let raced = Raced::new(Duration::from_millis(600)).await;
    let slow = raced.publish_soon("slow");
    tokio::time::sleep(Duration::from_millis(20)).await;
    let resume = raced.resume_soon();
    // WHEN another publisher's "live" is published and posted while the replay waits for
    // slow stores to settle (the subscription is stored by now)
    tokio::time::sleep(Duration::from_millis(200)).await;
    raced.publish("live").await;
    slow.await.unwrap();
    resume.await.unwrap();
    raced.publish("after").await;
    // THEN "live" is held back and sent by the replay, after "slow", and live delivery
    // posts again once the replay has handed over: each once, in order
    assert_eq!(raced.titles(), ["missed", "slow", "live", "after"]);
}

#[tokio::test]
async fn a_publish_not_stored_within_its_deadline_fails_and_reaches_no_one() {
    // GIVEN a resumed subscriber, and a publisher whose store takes longer than the
    // publish deadline (three quarters of the 2 s settle time)
    let raced = Raced::new(Duration::from_secs(30)).await;
    raced.resume_soon().await.unwrap();
    assert_eq!(raced.titles(), ["missed"]);
    // WHEN it publishes
    let card = json!({"id": "slow", "boardId": "b1", "title": "slow"});
    let alice = Audience::User(UserId::new("alice"));
    let publish = raced.broker.publish(raced.topic.clone(), &card, alice);
    let (result, metrics) = broker::metrics::collect(publish).await;
    assert_eq!(metrics.publish_timeouts, 1);
    // THEN the publish fails with a timeout the client is told it may retry, the event is
    // neither delivered nor in the log (a resume could not be sure to find it), and later
    // publishes go on
    let Err(error) = result else {
        panic!("a publish past its deadline succeeded")
    };
    assert!(matches!(error, broker::PublishError::TimedOut(d) if d == Duration::from_millis(1500)));
    let graphql = broker::publish_error(error);
    let code = graphql
        .extensions
        .as_ref()
        .and_then(|e| e.get("code"))
        .cloned();
    assert_eq!(code, Some(async_graphql::Value::from("PUBLISH_TIMEOUT")));
    // and a client's mutation that commits its card with its event gets that error,
    // saying nothing was saved
    let add_card =
        async_graphql::Request::new(r#"mutation { addCard(boardId: "b1", title: "slow") { id } }"#);
    let response = raced.broker.execute(UserId::new("alice"), add_card).await;
    let response = serde_json::to_value(&response).unwrap();
    assert_eq!(
        response["errors"][0]["extensions"]["code"], "PUBLISH_TIMEOUT",
        "{response}"
    );
    let message = response["errors"][0]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(message.contains("nothing was saved"), "{response}");
    // (and indeed nothing was: a re-query finds no card)
    let cards = async_graphql::Request::new(r#"{ cards(boardId: "b1") { title } }"#);
    let cards = raced.broker.execute(UserId::new("alice"), cards).await;
    let cards = serde_json::to_value(&cards).unwrap();
    assert_eq!(cards["data"]["cards"], json!([]), "{cards}");
    raced.publish("live").await;
    assert_eq!(raced.titles(), ["live"]);
    let logged = raced
        .broker
        .ports()
        .events
        .after(&raced.topic, "", 10)
        .await
        .unwrap();
    let titles: Vec<_> = logged.iter().map(|e| e.payload["title"].clone()).collect();
    assert_eq!(titles, ["seen", "missed", "live"]);
}

/// A broker of the boards app on memory stores and the event log `events`.
fn broker_on(events: Arc<dyn EventLog>, config: BrokerConfig) -> Broker {
    let subscriptions = MemorySubscriptionStore::default();
    let ports = Ports {
        connections: Arc::new(MemoryConnectionStore::default()),
        replay_gate: Arc::new(subscriptions.replay_gate()),
        subscriptions: Arc::new(subscriptions),
        page_marks: Arc::new(MemoryPageMarks::default()),
        quotas: Arc::new(broker::memory::MemoryQuotas::default()),
        events,
        gateway: Arc::new(RecordingGateway::default()),
        fanout: None,
    };
    let auth = broker::Authenticator::new(broker::AuthConfig {
        secret: SECRET.into(),
        issuer: None,
        audience: None,
        leeway_secs: broker::auth::DEFAULT_LEEWAY_SECS,
    });
    let schema = boards::build_schema(Arc::new(boards::MemoryBoardStore::new(&Default::default())));
    Broker::new(schema, ports, auth, config)
}

#[tokio::test]
async fn a_settle_time_below_the_minimum_is_raised_so_publishes_can_succeed() {
    let config = BrokerConfig {
        resume_settle: Duration::ZERO,
        ..BrokerConfig::default()
    };
    let broker = broker_on(Arc::new(MemoryEventLog::default()), config);
    let minimum = Duration::from_millis(broker::MIN_RESUME_SETTLE_MS);
    assert_eq!(broker.config().resume_settle, minimum);
    assert_eq!(broker.config().publish_deadline(), minimum * 3 / 4);
    broker
        .publish(Topic::new("t"), &json!(1), Audience::Everyone)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_replay_that_never_handed_over_closes_its_connection_for_a_new_resume() {
    // GIVEN a subscription stored replaying, whose replay's time ran out without a
    // hand-over (its process ended)
    let raced = Raced::new(Duration::ZERO).await;
    let lost = raced.subscription("resumer", broker::domain::now_ms() - 1);
    let subscriptions = raced.broker.ports().subscriptions.clone();
    subscriptions.insert(&lost).await.unwrap();
    // WHEN an event is published
    raced.publish("live").await;
    // THEN nothing is posted as if nothing were missing: the connection is closed, so its
    // client resumes again, and the subscription is gone
    assert!(raced.titles().is_empty());
    let closed = raced.gateway.closed();
    assert_eq!(
        closed,
        [(raced.connection.clone(), broker::CloseCode::InternalError)]
    );
    assert!(
        subscriptions
            .by_topic(&raced.topic)
            .await
            .unwrap()
            .is_empty()
    );
}

/// What [`HandOverProbe`] does to a replay.
#[derive(Clone, Copy, PartialEq)]
enum Probe {
    /// Events keep being held back faster than the replay reads: every conditional
    /// hand-over finds one more, and one more event is held the moment it hands over
    /// regardless.
    BusyTopic,
    /// The store fails every hand-over.
    FailingHandOver,
    /// The store fails every hold.
    FailingHold,
}

/// A replay gate that does what its [`Probe`] says to replays.
struct HandOverProbe {
    inner: MemoryReplayGate,
    events: Arc<dyn EventLog>,
    probe: Probe,
    held: std::sync::atomic::AtomicU64,
}

impl HandOverProbe {
    fn new(events: Arc<dyn EventLog>, inner: MemoryReplayGate, probe: Probe) -> Self {
        Self {
            inner,
            events,
            probe,
            held: Default::default(),
        }
    }
}

#[async_trait]
impl ReplayGate for HandOverProbe {
    async fn hand_over(
        &self,
        s: &broker::Subscription,
        held: Option<u64>,
    ) -> Result<broker::HandOver, StoreError> {
        use std::sync::atomic::Ordering::Relaxed;
        if self.probe == Probe::FailingHandOver {
            return Err(StoreError::backend("the store is down"));
        }
        if held.is_some() {
            return Ok(broker::HandOver::Held(self.held.fetch_add(1, Relaxed) + 1));
        }
        // Held back in the instant before this hand-over: stored, never posted live.
        let card = json!({"id": "last instant", "boardId": "b1", "title": "last instant"});
        let event = Event::new(s.topic.clone(), card, Audience::User(UserId::new("alice")));
        self.events.append(&event).await?;
        self.inner.hand_over(s, None).await
    }
    async fn hold(&self, s: &broker::Subscription) -> Result<broker::Hold, StoreError> {
        if self.probe == Probe::FailingHold {
            return Err(StoreError::backend("the store is down"));
        }
        self.inner.hold(s).await
    }
}

#[tokio::test]
async fn a_replay_that_cannot_hand_over_on_its_count_still_sends_what_was_held() {
    // GIVEN a topic on which every conditional hand-over finds one more event held back
    let raced = Raced::on(Duration::ZERO, |events, subscriptions| {
        Arc::new(HandOverProbe::new(
            events,
            subscriptions.replay_gate(),
            Probe::BusyTopic,
        ))
    })
    .await;
    // WHEN a subscriber resumes: its replay reads again and again, then hands over as it
    // is, and an event is held back in that instant
    raced.resume_soon().await.unwrap();
    raced.publish("after").await;
    // THEN the replay reads once more after the hand-over, and sends that event too
    assert_eq!(raced.titles(), ["missed", "last instant", "after"]);
}

#[tokio::test]
async fn a_replay_whose_hand_over_fails_closes_the_connection_for_a_new_resume() {
    let raced = Raced::on(Duration::ZERO, |events, subscriptions| {
        Arc::new(HandOverProbe::new(
            events,
            subscriptions.replay_gate(),
            Probe::FailingHandOver,
        ))
    })
    .await;
    raced.resume_soon().await.unwrap();
    // The replay sent what it read, then could not go on: the client is told to resume
    // again (1011) rather than left with events held back for nobody.
    assert_eq!(raced.titles(), ["missed"]);
    let closed = raced.gateway.closed();
    assert_eq!(
        closed,
        [(raced.connection.clone(), broker::CloseCode::InternalError)]
    );
}

#[tokio::test]
async fn an_event_that_cannot_be_held_back_closes_the_resumer_and_reaches_the_others() {
    // GIVEN a subscription still replaying beside a live one, on a store failing holds
    let raced = Raced::on(Duration::ZERO, |events, subscriptions| {
        Arc::new(HandOverProbe::new(
            events,
            subscriptions.replay_gate(),
            Probe::FailingHold,
        ))
    })
    .await;
    let subscriptions = raced.broker.ports().subscriptions.clone();
    let replaying = raced.subscription("resumer", broker::domain::now_ms() + 60_000);
    subscriptions.insert(&replaying).await.unwrap();
    subscriptions
        .insert(&raced.subscription("other", 0))
        .await
        .unwrap();
    // WHEN the stream publisher delivers an event
    let event = Event::new(
        raced.topic.clone(),
        json!({"id": "live", "boardId": "b1", "title": "live"}),
        Audience::User(UserId::new("alice")),
    );
    raced.broker.ports().events.append(&event).await.unwrap();
    let report = raced.broker.deliver_event(event).await.unwrap();
    // THEN the event is complete, not failed and retried for everyone: the other
    // subscriber has it, and the resumer's connection is closed so that it resumes again
    assert!(report.is_complete(), "{report:?}");
    assert_eq!(report.delivered, 1, "{report:?}");
    assert_eq!(raced.gateway.take(&ConnectionId::new("other")).len(), 1);
    assert_eq!(
        raced.gateway.closed(),
        [(raced.connection.clone(), broker::CloseCode::InternalError)]
    );
}
