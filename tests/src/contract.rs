//! The contract of the broker's storage and queue ports, written once and run against every
//! adapter (`tests/contract.rs`: the in-memory ones and the AWS ones on moto), so an
//! in-memory fake cannot drift from the real store it stands in for.
//!
//! Each check takes the adapters under test, fresh and empty, and asserts only what the
//! port's documentation promises.

use std::sync::Arc;

use broker::domain::{CONNECTION_LIFETIME_SECS, now_ms, now_secs};
use broker::{
    AppTable, Audience, Changes, Connection, ConnectionId, ConnectionStore, Event, EventLog,
    EventRef, FanoutPage, FanoutQueue, HandOver, Hold, Inserted, PageMarks, Protocol, Quotas,
    ReplayGate, StoreError, Subscription, SubscriptionKey, SubscriptionStore, Topic, UserId,
};
use serde_json::json;

/// Fresh, empty stores of one backend.
pub struct Stores {
    /// The connection store under test.
    pub connections: Arc<dyn ConnectionStore>,
    /// The subscription store under test.
    pub subscriptions: Arc<dyn SubscriptionStore>,
    /// The replay gate of `subscriptions`.
    pub replay_gate: Arc<dyn ReplayGate>,
    /// The marks of fan-out pages on their way, under test.
    pub page_marks: Arc<dyn PageMarks>,
    /// The counters of the per-user limits.
    pub quotas: Arc<dyn Quotas>,
    /// The event log under test.
    pub events: Arc<dyn EventLog>,
    /// An app table the event log commits changes to ([`EventLog::append_with`]), keyed
    /// by `pk` and `sk` on DynamoDB.
    pub app_table: AppTable,
    /// Reads that table's items back.
    pub app_items: Arc<dyn AppItems>,
}

/// Reads an app table's items, as the app would, to see what a commit stored.
#[async_trait::async_trait]
pub trait AppItems: Send + Sync {
    /// The value under `(partition, sort)`, without its keys.
    async fn get(&self, partition: &str, sort: &str) -> Option<serde_json::Value>;
}

impl std::fmt::Debug for Stores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stores").finish_non_exhaustive()
    }
}

/// A live connection `id` speaking graphql-transport-ws, not initialised yet; with a
/// `principal`, authorized for the next hour.
pub fn connection(id: &str, principal: Option<&str>) -> Connection {
    Connection {
        id: ConnectionId::new(id),
        protocol: Protocol::GraphqlTransportWs,
        principal: principal.map(UserId::new),
        initialised: false,
        connected_at_ms: now_ms(),
        expires_at: now_secs() + CONNECTION_LIFETIME_SECS,
        authorized_until: principal.map(|_| now_secs() + 3600),
    }
}

/// A live graphql-ws subscription of `connection` with operation id `operation` to
/// `topic`, made by alice, with an operation name and nested variables, so a round trip
/// shows every field survives.
pub fn subscription(connection: &str, operation: &str, topic: &str) -> Subscription {
    Subscription {
        key: SubscriptionKey {
            connection_id: ConnectionId::new(connection),
            operation_id: operation.to_owned(),
        },
        topic: Topic::new(topic),
        protocol: Protocol::GraphqlWs,
        principal: UserId::new("alice"),
        document: "subscription($b: ID!) { cardAdded(boardId: $b) { id title } }".to_owned(),
        operation_name: Some("Cards".to_owned()),
        variables: json!({"b": "board-1", "nested": {"list": [1, 2, 3]}}),
        expires_at: now_secs() + CONNECTION_LIFETIME_SECS,
        starts_at_ms: 0,
        replaying_until_ms: 0,
        public: false,
    }
}

fn expired<T>(mut value: T, set: impl FnOnce(&mut T, u64)) -> T {
    set(&mut value, now_secs() - 1);
    value
}

#[expect(
    clippy::needless_pass_by_value,
    reason = "callers build the value in the call"
)]
fn is_conflict<T: std::fmt::Debug>(result: Result<T, StoreError>) -> bool {
    matches!(result, Err(StoreError::Conflict(_)))
}

/// Sorted by key: the ports promise every subscription, in no particular order.
fn sorted(mut subscriptions: Vec<Subscription>) -> Vec<Subscription> {
    subscriptions.sort_by(|a, b| a.key.cmp(&b.key));
    subscriptions
}

fn reference(event: &Event) -> EventRef {
    EventRef {
        topic: event.topic.clone(),
        event_id: event.id.clone(),
    }
}

// --- connections -------------------------------------------------------------------------

/// A connection put is read back as it was, with or without a principal; a missing one
/// reads as `None`; a deleted one is gone from `get` and `by_user`, and deleting it again
/// is no error.
pub async fn connection_put_get_delete_round_trip(stores: Stores) {
    let connections = stores.connections;
    let anonymous = connection("conn-a", None);
    let known = Connection {
        protocol: Protocol::GraphqlWs,
        initialised: true,
        ..connection("conn-b", Some("alice"))
    };
    connections.put(&anonymous).await.unwrap();
    connections.put(&known).await.unwrap();

    assert_eq!(
        connections.get(&anonymous.id).await.unwrap(),
        Some(anonymous.clone())
    );
    assert_eq!(
        connections.get(&known.id).await.unwrap(),
        Some(known.clone())
    );
    assert_eq!(
        connections.get(&ConnectionId::new("nobody")).await.unwrap(),
        None
    );

    connections.delete(&known.id).await.unwrap();
    assert_eq!(connections.get(&known.id).await.unwrap(), None);
    assert_eq!(
        connections.by_user(&UserId::new("alice")).await.unwrap(),
        vec![]
    );
    // Deleting what is not there is no error.
    connections.delete(&known.id).await.unwrap();
}

/// A put under an id already stored replaces the connection whole, and `by_user` follows
/// the new principal.
pub async fn a_second_put_replaces_the_connection(stores: Stores) {
    let connections = stores.connections;
    let first = connection("conn-1", Some("alice"));
    connections.put(&first).await.unwrap();
    let second = Connection {
        protocol: Protocol::GraphqlWs,
        principal: Some(UserId::new("bob")),
        ..first.clone()
    };
    connections.put(&second).await.unwrap();

    assert_eq!(connections.get(&first.id).await.unwrap(), Some(second));
    assert_eq!(
        connections.by_user(&UserId::new("alice")).await.unwrap(),
        vec![]
    );
    assert_eq!(
        connections
            .by_user(&UserId::new("bob"))
            .await
            .unwrap()
            .len(),
        1
    );
}

/// A connection past its `expires_at`, still stored until the TTL removes it, is read by
/// neither `get` nor `by_user`.
pub async fn expired_connections_are_invisible_to_get_and_by_user(stores: Stores) {
    let connections = stores.connections;
    let stale = expired(connection("stale", Some("alice")), |c, t| c.expires_at = t);
    let live = connection("live", Some("alice"));
    connections.put(&stale).await.unwrap();
    connections.put(&live).await.unwrap();

    assert_eq!(connections.get(&stale.id).await.unwrap(), None);
    assert_eq!(
        connections.by_user(&UserId::new("alice")).await.unwrap(),
        vec![live]
    );
}

/// `mark_initialised` sets the principal and the token's expiry once; a second call, or a
/// call for a connection not stored, is a [`StoreError::Conflict`] and creates nothing.
pub async fn mark_initialised_succeeds_once_then_conflicts(stores: Stores) {
    let connections = stores.connections;
    let anonymous = connection("conn-1", None);
    connections.put(&anonymous).await.unwrap();
    let alice = UserId::new("alice");

    let token_exp = now_secs() + 600;
    connections
        .mark_initialised(&anonymous.id, &alice, token_exp)
        .await
        .unwrap();
    let stored = connections.get(&anonymous.id).await.unwrap().unwrap();
    assert!(stored.initialised);
    assert_eq!(stored.principal, Some(alice.clone()));
    assert_eq!(stored.authorized_until, Some(token_exp));

    assert!(is_conflict(
        connections
            .mark_initialised(&anonymous.id, &alice, token_exp)
            .await
    ));
    let unknown = ConnectionId::new("unknown");
    assert!(is_conflict(
        connections
            .mark_initialised(&unknown, &alice, token_exp)
            .await
    ));
    // The failed update created nothing.
    assert_eq!(connections.get(&unknown).await.unwrap(), None);
}

/// `by_user` lists every connection of one user, including one whose principal was learnt
/// at `connection_init`, and none of another user or of nobody.
pub async fn by_user_finds_every_connection_of_one_user(stores: Stores) {
    let connections = stores.connections;
    let mut alices = Vec::new();
    for i in 0..7 {
        let c = connection(&format!("alice-{i}"), Some("alice"));
        connections.put(&c).await.unwrap();
        alices.push(c);
    }
    connections
        .put(&connection("bob-1", Some("bob")))
        .await
        .unwrap();
    connections
        .put(&connection("anonymous", None))
        .await
        .unwrap();
    // A principal learnt at connection_init counts too.
    let late = ConnectionId::new("late");
    connections.put(&connection("late", None)).await.unwrap();
    connections
        .mark_initialised(&late, &UserId::new("alice"), now_secs() + 600)
        .await
        .unwrap();
    alices.push(connections.get(&late).await.unwrap().unwrap());

    let mut found = connections.by_user(&UserId::new("alice")).await.unwrap();
    found.sort_by(|a, b| a.id.cmp(&b.id));
    alices.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(found, alices);
    assert_eq!(
        connections.by_user(&UserId::new("carol")).await.unwrap(),
        vec![]
    );
}

// --- subscriptions -----------------------------------------------------------------------

/// Inserted subscriptions are read back whole by `by_topic` (a public one too), each under its
/// own topic only.
pub async fn subscriptions_round_trip_through_by_topic(stores: Stores) {
    let subscriptions = stores.subscriptions;
    let first = subscription("c1", "1", "board/b1/cardAdded");
    let second = Subscription {
        operation_name: None,
        variables: json!({}),
        protocol: Protocol::GraphqlTransportWs,
        public: true,
        ..subscription("c2", "1", "board/b1/cardAdded")
    };
    let elsewhere = subscription("c1", "2", "board/b2/cardAdded");
    for s in [&first, &second, &elsewhere] {
        subscriptions.insert(s).await.unwrap();
    }

    let found = subscriptions
        .by_topic(&Topic::new("board/b1/cardAdded"))
        .await
        .unwrap();
    assert_eq!(sorted(found), vec![first, second]);
    assert_eq!(
        subscriptions
            .by_topic(&Topic::new("board/none"))
            .await
            .unwrap(),
        vec![]
    );
}

/// `by_topic` returns every subscription of a topic larger than one page of the backend's
/// reads (DynamoDB's 1 MB per Query).
pub async fn by_topic_returns_every_subscription_of_a_large_topic(stores: Stores) {
    let subscriptions = stores.subscriptions;
    // DynamoDB returns at most 1 MB per Query page: 30 x 50 KB needs two.
    let padding = format!("# {}\n", "x".repeat(50_000));
    let mut stored = Vec::new();
    for i in 0..30 {
        let mut s = subscription(&format!("c{i:02}"), "1", "topic/large");
        s.document = format!("{padding}{}", s.document);
        subscriptions.insert(&s).await.unwrap();
        stored.push(s);
    }
    let found = subscriptions
        .by_topic(&Topic::new("topic/large"))
        .await
        .unwrap();
    assert_eq!(found.len(), 30);
    assert_eq!(sorted(found), stored);
}

/// `contains` is true from the insert until the delete, and for that connection only.
pub async fn contains_tells_whether_an_operation_id_is_taken(stores: Stores) {
    let subscriptions = stores.subscriptions;
    let s = subscription("c1", "op", "topic/a");
    assert!(!subscriptions.contains(&s.key).await.unwrap());
    subscriptions.insert(&s).await.unwrap();
    assert!(subscriptions.contains(&s.key).await.unwrap());
    let other_connection = SubscriptionKey {
        connection_id: ConnectionId::new("c2"),
        ..s.key.clone()
    };
    assert!(!subscriptions.contains(&other_connection).await.unwrap());
    subscriptions.delete(&s.key).await.unwrap();
    assert!(!subscriptions.contains(&s.key).await.unwrap());
}

/// Operation ids are unique per connection across topics: a second insert with one is a
/// [`StoreError::Conflict`] that leaves nothing behind, while another connection may use
/// the same id.
pub async fn a_duplicate_operation_id_conflicts_whatever_the_topic(stores: Stores) {
    let subscriptions = stores.subscriptions;
    subscriptions
        .insert(&subscription("c1", "op", "topic/a"))
        .await
        .unwrap();

    assert!(is_conflict(
        subscriptions
            .insert(&subscription("c1", "op", "topic/a"))
            .await
    ));
    assert!(is_conflict(
        subscriptions
            .insert(&subscription("c1", "op", "topic/b"))
            .await
    ));
    // The refused insert left nothing behind on the other topic.
    assert_eq!(
        subscriptions
            .by_topic(&Topic::new("topic/b"))
            .await
            .unwrap(),
        vec![]
    );
    // Another connection may use the same operation id.
    subscriptions
        .insert(&subscription("c2", "op", "topic/b"))
        .await
        .unwrap();
}

/// `delete` removes one subscription, answers whether it was there, and frees its operation
/// id for any topic.
pub async fn delete_removes_one_subscription_and_frees_its_operation_id(stores: Stores) {
    let subscriptions = stores.subscriptions;
    let kept = subscription("c1", "1", "topic/a");
    let gone = subscription("c1", "2", "topic/a");
    subscriptions.insert(&kept).await.unwrap();
    subscriptions.insert(&gone).await.unwrap();

    assert!(subscriptions.delete(&gone.key).await.unwrap());
    assert!(!subscriptions.delete(&gone.key).await.unwrap());
    assert_eq!(
        subscriptions
            .by_topic(&Topic::new("topic/a"))
            .await
            .unwrap(),
        vec![kept]
    );
    // The id is free again, on any topic.
    subscriptions
        .insert(&subscription("c1", "2", "topic/b"))
        .await
        .unwrap();
}

/// A subscription past its `expires_at` is left out of `by_topic` and `get_many`, yet stays
/// stored until the TTL removes it: its id is still taken and deleting it works.
pub async fn expired_subscriptions_are_filtered_on_every_read(stores: Stores) {
    let subscriptions = stores.subscriptions;
    let live = subscription("c1", "live", "topic/a");
    let stale = expired(subscription("c1", "stale", "topic/a"), |s, t| {
        s.expires_at = t
    });
    subscriptions.insert(&live).await.unwrap();
    subscriptions.insert(&stale).await.unwrap();

    let topic = Topic::new("topic/a");
    assert_eq!(
        subscriptions.by_topic(&topic).await.unwrap(),
        vec![live.clone()]
    );
    assert_eq!(
        subscriptions
            .get_many(&topic, &[stale.key.clone(), live.key.clone()])
            .await
            .unwrap(),
        vec![live]
    );
    // Still stored until expiry removes it: its id stays taken, and deleting it works.
    assert!(is_conflict(subscriptions.insert(&stale).await));
    assert!(subscriptions.delete(&stale.key).await.unwrap());
}

/// `count_by_connection` counts one connection's subscriptions over every topic, and a
/// delete takes one off.
pub async fn count_by_connection_counts_one_connections_subscriptions(stores: Stores) {
    let subscriptions = stores.subscriptions;
    let counted = ConnectionId::new("counted");
    assert_eq!(
        subscriptions.count_by_connection(&counted).await.unwrap(),
        0
    );
    for i in 0..12 {
        let s = subscription("counted", &i.to_string(), &format!("topic/{}", i % 4));
        subscriptions.insert(&s).await.unwrap();
    }
    subscriptions
        .insert(&subscription("other", "0", "topic/0"))
        .await
        .unwrap();
    assert_eq!(
        subscriptions.count_by_connection(&counted).await.unwrap(),
        12
    );
    let key = SubscriptionKey {
        connection_id: counted.clone(),
        operation_id: "3".into(),
    };
    assert!(subscriptions.delete(&key).await.unwrap());
    assert_eq!(
        subscriptions.count_by_connection(&counted).await.unwrap(),
        11
    );
}

/// A topic's fan-out pages on their way are marked one by one, per topic: a page done twice
/// (a redelivery) is done once, a page marked twice (a retried enqueue) is one page, each
/// mark is forgotten once its lifetime is over, and no mark is a subscription to any read.
pub async fn pages_on_their_way_are_marked_per_topic(stores: Stores) {
    let (page_marks, subscriptions) = (stores.page_marks, stores.subscriptions);
    let (busy, other) = (Topic::new("topic/busy"), Topic::new("topic/other"));
    let pages = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
    let on_their_way = |topic: &Topic| {
        let (page_marks, topic) = (page_marks.clone(), topic.clone());
        async move { page_marks.pages_in_flight(&topic).await.unwrap() }
    };
    assert!(!on_their_way(&busy).await);
    let until = now_secs() + 600;
    page_marks
        .pages_enqueued(&busy, &pages(&["a", "b", "c"]), until)
        .await
        .unwrap();
    // The same pages again, as a retried enqueue sends them.
    page_marks
        .pages_enqueued(&busy, &pages(&["b", "c"]), until)
        .await
        .unwrap();
    page_marks
        .pages_enqueued(&other, &pages(&["a"]), until)
        .await
        .unwrap();
    assert!(on_their_way(&busy).await);
    assert!(subscriptions.by_topic(&busy).await.unwrap().is_empty());
    page_marks.page_done(&busy, "a").await.unwrap();
    page_marks.page_done(&busy, "b").await.unwrap();
    // Page "b" delivered again: still "c" to come.
    page_marks.page_done(&busy, "b").await.unwrap();
    page_marks.page_done(&busy, "a").await.unwrap();
    assert!(on_their_way(&busy).await);
    page_marks.page_done(&busy, "c").await.unwrap();
    assert!(!on_their_way(&busy).await);
    // Another topic's page of the same id is its own.
    assert!(on_their_way(&other).await);
    // Done for a topic with none marked: nothing to take.
    page_marks
        .page_done(&Topic::new("topic/none"), "a")
        .await
        .unwrap();
    // A mark past its lifetime is forgotten; a live one beside it still holds.
    page_marks.page_done(&other, "a").await.unwrap();
    page_marks
        .pages_enqueued(&other, &pages(&["old"]), now_secs())
        .await
        .unwrap();
    assert!(!on_their_way(&other).await);
    page_marks
        .pages_enqueued(&other, &pages(&["new"]), until)
        .await
        .unwrap();
    assert!(on_their_way(&other).await);
    page_marks.page_done(&other, "new").await.unwrap();
    assert!(!on_their_way(&other).await);
}

/// A subscription stored replaying holds every live event back, counted, until its replay
/// hands over on the count it last saw; then live events are posted again and every read
/// shows it live. A subscription never replaying, or gone, is live; one whose replay's time
/// is over without a hand-over is abandoned.
pub async fn a_replaying_subscription_holds_events_until_it_hands_over(stores: Stores) {
    let (subscriptions, gate) = (stores.subscriptions, stores.replay_gate);
    let replaying = Subscription {
        replaying_until_ms: now_ms() + 60_000,
        ..subscription("c1", "1", "topic/a")
    };
    subscriptions.insert(&replaying).await.unwrap();
    let stored = &subscriptions.by_topic(&replaying.topic).await.unwrap()[0];
    assert_eq!(stored.replaying_until_ms, replaying.replaying_until_ms);

    assert_eq!(gate.hold(&replaying).await.unwrap(), Hold::Held);
    // Held since the replay's count of none: it reads again.
    let handed = gate.hand_over(&replaying, Some(0)).await.unwrap();
    assert_eq!(handed, HandOver::Held(1));
    assert_eq!(gate.hold(&replaying).await.unwrap(), Hold::Held);
    let handed = gate.hand_over(&replaying, Some(1)).await.unwrap();
    assert_eq!(handed, HandOver::Held(2));
    assert_eq!(
        gate.hand_over(&replaying, Some(2)).await.unwrap(),
        HandOver::Done
    );
    // Live from now on, also for a reader holding the copy it read before.
    assert_eq!(gate.hold(&replaying).await.unwrap(), Hold::Live);
    let stored = &subscriptions.by_topic(&replaying.topic).await.unwrap()[0];
    assert_eq!(stored.replaying_until_ms, 0);
    let keys = [replaying.key.clone()];
    let paged = &subscriptions
        .get_many(&replaying.topic, &keys)
        .await
        .unwrap()[0];
    assert_eq!(paged.replaying_until_ms, 0);

    // Handed over whatever was held.
    let forced = Subscription {
        replaying_until_ms: now_ms() + 60_000,
        ..subscription("c1", "2", "topic/a")
    };
    subscriptions.insert(&forced).await.unwrap();
    assert_eq!(gate.hold(&forced).await.unwrap(), Hold::Held);
    assert_eq!(gate.hand_over(&forced, None).await.unwrap(), HandOver::Done);
    assert_eq!(gate.hold(&forced).await.unwrap(), Hold::Live);

    // Never replaying, gone, or out of time.
    let plain = subscription("c1", "3", "topic/a");
    subscriptions.insert(&plain).await.unwrap();
    assert_eq!(gate.hold(&plain).await.unwrap(), Hold::Live);
    let gone = Subscription {
        replaying_until_ms: now_ms() + 60_000,
        ..subscription("c9", "1", "topic/a")
    };
    assert_eq!(gate.hold(&gone).await.unwrap(), Hold::Live);
    assert_eq!(
        gate.hand_over(&gone, Some(0)).await.unwrap(),
        HandOver::Done
    );
    let lost = Subscription {
        replaying_until_ms: now_ms() - 1,
        ..subscription("c1", "4", "topic/a")
    };
    subscriptions.insert(&lost).await.unwrap();
    assert_eq!(gate.hold(&lost).await.unwrap(), Hold::Abandoned);
}

/// The per-connection limit holds under concurrent inserts on one connection: exactly the
/// limit is stored, every other insert is refused as over the limit, a delete makes room
/// for exactly one more, and other connections are not counted.
pub async fn the_per_connection_limit_holds_under_concurrent_inserts(stores: Stores) {
    const LIMIT: usize = 5;
    const ATTEMPTS: usize = 24;
    let subscriptions = stores.subscriptions;
    let mut inserts = tokio::task::JoinSet::new();
    for i in 0..ATTEMPTS {
        let subscriptions = subscriptions.clone();
        inserts.spawn(async move {
            let s = subscription("limited", &i.to_string(), &format!("topic/{}", i % 3));
            subscriptions.insert_within(&s, LIMIT).await
        });
    }
    let (mut stored, mut refused) = (0, 0);
    while let Some(result) = inserts.join_next().await {
        match result.unwrap() {
            Ok(Inserted::Stored) => stored += 1,
            Err(StoreError::LimitReached(_)) => refused += 1,
            Ok(other) => panic!("an insert stored nothing: {other:?}"),
            Err(e) => panic!("an insert failed otherwise: {e}"),
        }
    }
    assert_eq!((stored, refused), (LIMIT, ATTEMPTS - LIMIT));
    let limited = ConnectionId::new("limited");
    assert_eq!(
        subscriptions.count_by_connection(&limited).await.unwrap(),
        LIMIT
    );
    let mut held = Vec::new();
    for topic in 0..3 {
        for s in subscriptions
            .by_topic(&Topic::new(format!("topic/{topic}")))
            .await
            .unwrap()
        {
            held.push(s.key);
        }
    }
    assert_eq!(held.len(), LIMIT, "{held:?}");

    // At the limit, a duplicate id is still a duplicate.
    let again = Subscription {
        key: held[0].clone(),
        ..subscription("limited", "", "topic/0")
    };
    assert!(is_conflict(
        subscriptions.insert_within(&again, LIMIT).await
    ));
    // Another connection has a limit of its own.
    subscriptions
        .insert_within(&subscription("elsewhere", "0", "topic/0"), LIMIT)
        .await
        .unwrap();
    // A delete makes room for one.
    assert!(subscriptions.delete(&held[0]).await.unwrap());
    subscriptions
        .insert_within(&subscription("limited", "new", "topic/1"), LIMIT)
        .await
        .unwrap();
    assert!(matches!(
        subscriptions
            .insert_within(&subscription("limited", "newer", "topic/1"), LIMIT)
            .await,
        Err(StoreError::LimitReached(_))
    ));
    // Once the connection's subscriptions are all gone (closed, with a mark that has
    // lapsed), it may hold the limit again.
    assert_eq!(
        subscriptions
            .close_connection(&limited, now_secs() - 1)
            .await
            .unwrap(),
        LIMIT
    );
    for i in 0..LIMIT {
        subscriptions
            .insert_within(&subscription("limited", &format!("r{i}"), "topic/2"), LIMIT)
            .await
            .unwrap();
    }
}

/// Closing a connection removes every subscription of it, and no other's; with a closed
/// mark that has lapsed, every operation id is free again at once.
pub async fn close_connection_removes_all_of_one_connection(stores: Stores) {
    let subscriptions = stores.subscriptions;
    // 30 subscriptions over three topics: more than one DynamoDB batch.
    for i in 0..30 {
        let s = subscription("doomed", &i.to_string(), &format!("topic/{}", i % 3));
        subscriptions.insert(&s).await.unwrap();
    }
    let survivor = subscription("other", "0", "topic/0");
    subscriptions.insert(&survivor).await.unwrap();

    let doomed = ConnectionId::new("doomed");
    let lapsed = now_secs() - 1;
    assert_eq!(
        subscriptions
            .close_connection(&doomed, lapsed)
            .await
            .unwrap(),
        30
    );
    assert_eq!(
        subscriptions
            .by_topic(&Topic::new("topic/0"))
            .await
            .unwrap(),
        vec![survivor]
    );
    for topic in ["topic/1", "topic/2"] {
        assert_eq!(
            subscriptions.by_topic(&Topic::new(topic)).await.unwrap(),
            vec![]
        );
    }
    assert_eq!(
        subscriptions
            .close_connection(&doomed, lapsed)
            .await
            .unwrap(),
        0
    );
    // Every operation id is free again.
    assert_eq!(
        subscriptions
            .insert(&subscription("doomed", "0", "topic/9"))
            .await
            .unwrap(),
        Inserted::Stored
    );
}

/// `get_many` answers the keys in the order asked, more than one backend batch of them
/// (DynamoDB's 100 keys per BatchGetItem), a duplicate key twice, and skips keys not stored
/// or stored under another topic; no keys, no subscriptions.
pub async fn get_many_answers_in_the_order_asked(stores: Stores) {
    let subscriptions = stores.subscriptions;
    let topic = "topic/big";
    let mut all = Vec::new();
    // More than one DynamoDB BatchGetItem (100 keys).
    for i in 0..150 {
        let s = subscription(&format!("c{i:03}"), "1", topic);
        subscriptions.insert(&s).await.unwrap();
        all.push(s);
    }
    subscriptions
        .insert(&subscription("c000", "2", "topic/other"))
        .await
        .unwrap();

    // Reversed, with a key that does not exist, one of another topic, and a duplicate.
    let mut keys: Vec<SubscriptionKey> = all.iter().rev().map(|s| s.key.clone()).collect();
    keys.insert(10, SubscriptionKey::decode("missing#1").unwrap());
    keys.insert(20, SubscriptionKey::decode("c000#2").unwrap());
    keys.push(all[0].key.clone());

    let found = subscriptions
        .get_many(&Topic::new(topic), &keys)
        .await
        .unwrap();
    let mut expected: Vec<Subscription> = all.iter().rev().cloned().collect();
    expected.push(all[0].clone());
    assert_eq!(found.len(), 151);
    assert_eq!(found, expected);
    assert_eq!(
        subscriptions
            .get_many(&Topic::new(topic), &[])
            .await
            .unwrap(),
        vec![]
    );
}

// --- the event log -----------------------------------------------------------------------

/// Appended events are read back by `get` as they were, whatever their audience; an append
/// under an id already logged is a [`StoreError::Conflict`] and leaves the first; an id is
/// looked up within its topic only.
pub async fn events_append_once_and_read_back(stores: Stores) {
    let events = stores.events;
    let public = Event::new(
        Topic::new("board/b1/cardAdded"),
        json!({"id": "c1", "title": "Write tests", "tags": ["a", "b"]}),
        Audience::Everyone,
    );
    let private = Event::new(
        Topic::new("user/alice/boardCreated"),
        json!({"id": "b1"}),
        Audience::User(UserId::new("alice")),
    );
    events.append(&public).await.unwrap();
    events.append(&private).await.unwrap();

    // Never overwritten, not even with another payload.
    let rewrite = Event {
        payload: json!("changed"),
        ..public.clone()
    };
    assert!(is_conflict(events.append(&rewrite).await));
    assert_eq!(
        events.get(&reference(&public)).await.unwrap(),
        Some(public.clone())
    );
    assert_eq!(
        events.get(&reference(&private)).await.unwrap(),
        Some(private)
    );
    let missing = EventRef {
        topic: public.topic.clone(),
        event_id: "01NOPE".into(),
    };
    assert_eq!(events.get(&missing).await.unwrap(), None);
    // The same id on another topic is another event.
    let other_topic = EventRef {
        topic: Topic::new("board/b2/cardAdded"),
        event_id: public.id.clone(),
    };
    assert_eq!(events.get(&other_topic).await.unwrap(), None);
}

/// `append_by` with a deadline already past is [`StoreError::TooLate`] and stores nothing;
/// with one ahead it is a plain append.
pub async fn an_append_past_its_deadline_stores_nothing(stores: Stores) {
    let events = stores.events;
    let topic = Topic::new("board/b1/cardAdded");
    let late = Event::new(topic.clone(), json!("late"), Audience::Everyone);
    let past = broker::domain::now_ms() - 1;
    assert!(matches!(
        events.append_by(&late, past).await,
        Err(StoreError::TooLate)
    ));
    assert_eq!(events.get(&reference(&late)).await.unwrap(), None);
    // In time, it is an append like any other.
    let on_time = Event::new(topic.clone(), json!("on time"), Audience::Everyone);
    let soon = broker::domain::now_ms() + 10_000;
    events.append_by(&on_time, soon).await.unwrap();
    assert_eq!(events.after(&topic, "", 10).await.unwrap(), [on_time]);
}

/// An event past its `expires_at`, still stored until the TTL removes it, is not read back.
pub async fn expired_events_are_invisible(stores: Stores) {
    let events = stores.events;
    let stale = expired(
        Event::new(Topic::new("t"), json!(1), Audience::Everyone),
        |e, t| e.expires_at = t,
    );
    events.append(&stale).await.unwrap();
    assert_eq!(events.get(&reference(&stale)).await.unwrap(), None);
}

/// An event addressed to a user named `*` is [`StoreError::Malformed`] and not stored.
pub async fn a_user_called_star_is_refused_as_an_audience(stores: Stores) {
    // `*` is how a stored event says "everyone": a user of that name would read back as
    // everyone, so no log accepts it.
    let events = stores.events;
    let ambiguous = Event::new(
        Topic::new("t"),
        json!({"n": 2}),
        Audience::User(UserId::new("*")),
    );
    assert!(matches!(
        events.append(&ambiguous).await,
        Err(StoreError::Malformed(_))
    ));
    assert_eq!(events.get(&reference(&ambiguous)).await.unwrap(), None);
}

/// `after` pages through one topic's live events in id order, whatever order they were
/// appended in, leaving out expired events and other topics; past the last id, and for a
/// topic with no events, it is empty.
pub async fn events_after_a_cursor_come_in_id_order(stores: Stores) {
    let events = stores.events;
    let topic = Topic::new("board/b1/cardAdded");
    let mut published: Vec<Event> = (0..7)
        .map(|n| Event::new(topic.clone(), json!({"n": n}), Audience::Everyone))
        .collect();
    // Stored out of id order, as racing publishers store them.
    for i in [3, 0, 6, 1, 5, 2, 4] {
        events.append(&published[i]).await.unwrap();
    }
    events
        .append(&Event::new(
            Topic::new("other"),
            json!(0),
            Audience::Everyone,
        ))
        .await
        .unwrap();
    let stale = expired(
        Event::new(topic.clone(), json!("stale"), Audience::Everyone),
        |e, t| e.expires_at = t,
    );
    events.append(&stale).await.unwrap();
    published.sort_by(|a, b| a.id.cmp(&b.id));

    let all = events.after(&topic, "", 100).await.unwrap();
    assert_eq!(all, published, "every live event of the topic, in id order");
    let page = events.after(&topic, &published[1].id, 3).await.unwrap();
    assert_eq!(page, published[2..5].to_vec());
    let rest = events.after(&topic, &page[2].id, 3).await.unwrap();
    assert_eq!(rest, published[5..7].to_vec());
    assert!(
        events
            .after(&topic, &published[6].id, 3)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        events
            .after(&Topic::new("nobody"), "", 3)
            .await
            .unwrap()
            .is_empty()
    );
}

/// `mark_delivered` is read back by `is_delivered`, may be repeated, and leaves the event as
/// it was; marking an event that is not logged creates nothing.
pub async fn delivery_marks_are_read_back(stores: Stores) {
    let events = stores.events;
    let event = Event::new(Topic::new("t"), json!({"n": 1}), Audience::Everyone);
    events.append(&event).await.unwrap();
    let event_ref = reference(&event);

    assert!(!events.is_delivered(&event_ref).await.unwrap());
    events.mark_delivered(&event_ref).await.unwrap();
    assert!(events.is_delivered(&event_ref).await.unwrap());
    events.mark_delivered(&event_ref).await.unwrap();
    // The mark leaves the event as it was.
    assert_eq!(events.get(&event_ref).await.unwrap(), Some(event));

    // Marking an event that is not there creates nothing.
    let missing = EventRef {
        topic: Topic::new("t"),
        event_id: "01MISSING".into(),
    };
    events.mark_delivered(&missing).await.unwrap();
    assert_eq!(events.get(&missing).await.unwrap(), None);
    assert!(!events.is_delivered(&missing).await.unwrap());
}

// --- the fan-out queue -------------------------------------------------------------------

/// Enqueued pages come back whole, each once. `receive` returns the next pages the
/// queue's consumer gets (possibly none yet); it is called until every page is back.
pub async fn fanout_pages_come_back_whole(
    queue: Arc<dyn FanoutQueue>,
    mut receive: impl AsyncFnMut() -> Vec<FanoutPage>,
) {
    let pages: Vec<FanoutPage> = (0..23)
        .map(|i| FanoutPage {
            topic: Topic::new("board/b1/cardAdded"),
            event_id: format!("event-{i}"),
            group: format!("board/b1/cardAdded#{}", i % 3),
            subscription_keys: vec![format!("conn-{i}#1"), format!("conn-{i}#op#2")],
        })
        .collect();
    queue.enqueue(&pages).await.unwrap();
    queue.enqueue(&[]).await.unwrap();

    let mut received = Vec::new();
    for _ in 0..50 {
        if received.len() >= pages.len() {
            break;
        }
        received.extend(receive().await);
    }
    let index = |p: &FanoutPage| {
        p.event_id
            .trim_start_matches("event-")
            .parse::<u32>()
            .unwrap()
    };
    received.sort_by_key(index);
    assert_eq!(received, pages);
    assert_eq!(received[3].keys()[1].operation_id, "op#2");
}

/// `by_connection` lists the keys of one connection's live subscriptions over every topic,
/// leaving out expired and deleted ones and other connections'.
pub async fn by_connection_lists_the_live_subscriptions_of_one_connection(stores: Stores) {
    let subscriptions = stores.subscriptions;
    let mine: Vec<Subscription> = (0..3)
        .map(|i| subscription("mine", &format!("op-{i}"), &format!("topic/{i}")))
        .collect();
    for s in &mine {
        subscriptions.insert(s).await.unwrap();
    }
    let stale = expired(subscription("mine", "stale", "topic/0"), |s, t| {
        s.expires_at = t
    });
    subscriptions.insert(&stale).await.unwrap();
    subscriptions
        .insert(&subscription("other", "op-0", "topic/0"))
        .await
        .unwrap();
    subscriptions.delete(&mine[2].key).await.unwrap();

    let mut found = subscriptions
        .by_connection(&ConnectionId::new("mine"))
        .await
        .unwrap();
    found.sort();
    assert_eq!(found, vec![mine[0].key.clone(), mine[1].key.clone()]);
    assert_eq!(
        subscriptions
            .by_connection(&ConnectionId::new("nobody"))
            .await
            .unwrap(),
        vec![]
    );
}

// --- the races API Gateway allows --------------------------------------------------------

fn key(connection: &str, operation: &str) -> SubscriptionKey {
    SubscriptionKey {
        connection_id: ConnectionId::new(connection),
        operation_id: operation.to_owned(),
    }
}

/// A `complete` that finds nothing leaves a tombstone of its key, invisible to every read,
/// which makes the next insert of that key store nothing ([`Inserted::Completed`]) and is
/// used up by it; a `complete` that finds its subscription removes it and leaves none; a
/// tombstone is for its own key only.
pub async fn a_complete_before_its_subscribe_leaves_a_tombstone_the_insert_respects(
    stores: Stores,
) {
    let subscriptions = stores.subscriptions;
    let early = subscription("c1", "op", "topic/a");
    let until = now_secs() + 600;

    // Nothing stored yet: a tombstone, which no read counts as a subscription.
    assert!(!subscriptions.complete(&early.key, until).await.unwrap());
    assert!(!subscriptions.contains(&early.key).await.unwrap());
    assert_eq!(
        subscriptions
            .count_by_connection(&early.key.connection_id)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        subscriptions
            .by_connection(&early.key.connection_id)
            .await
            .unwrap(),
        vec![]
    );
    assert!(!subscriptions.delete(&early.key).await.unwrap());

    // The subscribe handled after it stores nothing, and uses the tombstone up.
    assert_eq!(
        subscriptions.insert(&early).await.unwrap(),
        Inserted::Completed
    );
    assert_eq!(
        subscriptions
            .by_topic(&Topic::new("topic/a"))
            .await
            .unwrap(),
        vec![]
    );
    assert!(!subscriptions.contains(&early.key).await.unwrap());
    // So the operation id can be used again.
    assert_eq!(
        subscriptions.insert(&early).await.unwrap(),
        Inserted::Stored
    );
    assert_eq!(
        subscriptions
            .by_topic(&Topic::new("topic/a"))
            .await
            .unwrap(),
        vec![early.clone()]
    );

    // A complete that finds its subscription removes it and leaves no tombstone.
    assert!(subscriptions.complete(&early.key, until).await.unwrap());
    assert!(!subscriptions.contains(&early.key).await.unwrap());
    assert_eq!(
        subscriptions.insert(&early).await.unwrap(),
        Inserted::Stored
    );

    // A tombstone is for its own key only.
    assert!(
        !subscriptions
            .complete(&key("c1", "other"), until)
            .await
            .unwrap()
    );
    let neighbour = subscription("c2", "other", "topic/a");
    assert_eq!(
        subscriptions.insert(&neighbour).await.unwrap(),
        Inserted::Stored
    );
    // And a second complete of the same operation keeps it.
    assert!(
        !subscriptions
            .complete(&key("c1", "other"), until)
            .await
            .unwrap()
    );
    assert_eq!(
        subscriptions
            .insert(&subscription("c1", "other", "topic/b"))
            .await
            .unwrap(),
        Inserted::Completed
    );
}

/// A tombstone past its time stops nothing: the insert of its key is stored.
pub async fn an_expired_tombstone_is_ignored(stores: Stores) {
    let subscriptions = stores.subscriptions;
    let late = subscription("c1", "op", "topic/a");
    assert!(
        !subscriptions
            .complete(&late.key, now_secs() - 1)
            .await
            .unwrap()
    );
    assert_eq!(subscriptions.insert(&late).await.unwrap(), Inserted::Stored);
    assert!(subscriptions.contains(&late.key).await.unwrap());
}

/// `close_connection` removes the connection's subscriptions (counting only live ones, not
/// tombstones), and until its time every insert for that connection stores nothing
/// ([`Inserted::ConnectionClosed`]); other connections are unaffected, and a closed mark
/// already past its time stops nothing.
pub async fn a_closed_connection_stores_no_subscription(stores: Stores) {
    let subscriptions = stores.subscriptions;
    let until = now_secs() + 600;
    subscriptions
        .insert(&subscription("closing", "1", "topic/a"))
        .await
        .unwrap();
    // A tombstone of the connection goes with it, and is not counted.
    assert!(
        !subscriptions
            .complete(&key("closing", "2"), until)
            .await
            .unwrap()
    );
    assert_eq!(
        subscriptions
            .close_connection(&ConnectionId::new("closing"), until)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        subscriptions
            .by_topic(&Topic::new("topic/a"))
            .await
            .unwrap(),
        vec![]
    );

    // A subscribe handled after the connection closed stores nothing, whatever its id.
    for operation in ["1", "2", "3"] {
        assert_eq!(
            subscriptions
                .insert(&subscription("closing", operation, "topic/a"))
                .await
                .unwrap(),
            Inserted::ConnectionClosed
        );
    }
    assert_eq!(
        subscriptions
            .by_topic(&Topic::new("topic/a"))
            .await
            .unwrap(),
        vec![]
    );
    assert_eq!(
        subscriptions
            .count_by_connection(&ConnectionId::new("closing"))
            .await
            .unwrap(),
        0
    );

    // Other connections are not affected, and the mark expires.
    let other = subscription("other", "1", "topic/a");
    assert_eq!(
        subscriptions.insert(&other).await.unwrap(),
        Inserted::Stored
    );
    assert_eq!(
        subscriptions
            .close_connection(&ConnectionId::new("brief"), now_secs() - 1)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        subscriptions
            .insert(&subscription("brief", "1", "topic/a"))
            .await
            .unwrap(),
        Inserted::Stored
    );
}

/// A `complete` racing its `subscribe`, and a close racing a `subscribe`, many times over:
/// whatever the interleaving, no subscription is left.
pub async fn racing_completes_and_closes_leave_no_subscription(stores: Stores) {
    let subscriptions = stores.subscriptions;
    let until = now_secs() + 600;
    for round in 0..12 {
        let s = subscription(&format!("race-{round}"), "op", "topic/race");
        let (inserted, completed) = tokio::join!(
            subscriptions.insert(&s),
            subscriptions.complete(&s.key, until)
        );
        let (inserted, completed) = (inserted.unwrap(), completed.unwrap());
        // Either order, never a subscription left behind.
        assert!(
            matches!(
                (inserted, completed),
                (Inserted::Stored, true) | (Inserted::Completed, false)
            ),
            "round {round}: {inserted:?}, {completed}"
        );
        assert!(!subscriptions.contains(&s.key).await.unwrap());

        let s = subscription(&format!("closing-{round}"), "op", "topic/race");
        let (inserted, closed) = tokio::join!(
            subscriptions.insert(&s),
            subscriptions.close_connection(&s.key.connection_id, until)
        );
        let (inserted, closed) = (inserted.unwrap(), closed.unwrap());
        assert!(
            matches!(
                (inserted, closed),
                (Inserted::Stored, 1) | (Inserted::ConnectionClosed, 0)
            ),
            "round {round}: {inserted:?}, {closed}"
        );
        assert!(!subscriptions.contains(&s.key).await.unwrap());
    }
    assert_eq!(
        subscriptions
            .by_topic(&Topic::new("topic/race"))
            .await
            .unwrap(),
        vec![]
    );
}

/// A counter's takes stop at the limit; a release frees a slot, and never goes below zero.
pub async fn quota_takes_stop_at_the_limit_and_releases_free_slots(stores: Stores) {
    let quotas = stores.quotas;
    let until = now_secs() + 600;
    for _ in 0..3 {
        assert!(quotas.take("sockets/alice", 3, until).await.unwrap());
    }
    assert!(!quotas.take("sockets/alice", 3, until).await.unwrap());
    assert_eq!(quotas.get("sockets/alice").await.unwrap(), 3);
    // Another key is another counter.
    assert!(quotas.take("sockets/bob", 3, until).await.unwrap());
    assert_eq!(quotas.get("sockets/bob").await.unwrap(), 1);

    quotas.release("sockets/alice", 1).await.unwrap();
    assert_eq!(quotas.get("sockets/alice").await.unwrap(), 2);
    assert!(quotas.take("sockets/alice", 3, until).await.unwrap());
    assert!(!quotas.take("sockets/alice", 3, until).await.unwrap());

    // Released more than it holds: zero, not below.
    quotas.release("sockets/alice", 10).await.unwrap();
    assert_eq!(quotas.get("sockets/alice").await.unwrap(), 0);
    assert!(quotas.take("sockets/alice", 1, until).await.unwrap());
    assert!(!quotas.take("sockets/alice", 1, until).await.unwrap());

    // A limit of zero grants nothing; a release of an unknown counter is no error.
    assert!(!quotas.take("nothing/alice", 0, until).await.unwrap());
    quotas.release("unknown/alice", 1).await.unwrap();
    assert_eq!(quotas.get("unknown/alice").await.unwrap(), 0);
}

/// A counter past its expiry counts as zero: a full window is over once it expires, and
/// the next take starts it afresh with the expiry it gives.
pub async fn an_expired_quota_counts_as_zero(stores: Stores) {
    let quotas = stores.quotas;
    let past = now_secs() - 1;
    let later = now_secs() + 600;
    assert!(quotas.take("replays/1/alice", 2, past).await.unwrap());
    assert_eq!(quotas.get("replays/1/alice").await.unwrap(), 0);
    // Expired: taken again from zero, twice, and then full until `later`.
    assert!(quotas.take("replays/1/alice", 2, later).await.unwrap());
    assert!(quotas.take("replays/1/alice", 2, later).await.unwrap());
    assert!(!quotas.take("replays/1/alice", 2, later).await.unwrap());
    assert_eq!(quotas.get("replays/1/alice").await.unwrap(), 2);
    // A release of an expired counter leaves it as it is.
    quotas.set("gauge/alice", 5, past).await.unwrap();
    quotas.release("gauge/alice", 1).await.unwrap();
    assert_eq!(quotas.get("gauge/alice").await.unwrap(), 0);
    assert!(quotas.take("gauge/alice", 1, later).await.unwrap());
    assert_eq!(quotas.get("gauge/alice").await.unwrap(), 1);
}

/// A recount sets a counter to what the stores hold: takes then go on from there.
pub async fn a_quota_set_replaces_the_count(stores: Stores) {
    let quotas = stores.quotas;
    let until = now_secs() + 600;
    for _ in 0..4 {
        assert!(quotas.take("subscriptions/alice", 4, until).await.unwrap());
    }
    assert!(!quotas.take("subscriptions/alice", 4, until).await.unwrap());
    quotas.set("subscriptions/alice", 1, until).await.unwrap();
    assert_eq!(quotas.get("subscriptions/alice").await.unwrap(), 1);
    for _ in 0..3 {
        assert!(quotas.take("subscriptions/alice", 4, until).await.unwrap());
    }
    assert!(!quotas.take("subscriptions/alice", 4, until).await.unwrap());
}

/// Fifty concurrent takes of a counter with limit ten: exactly ten are granted, and the
/// counter says ten; ten concurrent releases then free all ten slots.
pub async fn concurrent_quota_takes_grant_exactly_the_limit(stores: Stores) {
    const LIMIT: u64 = 10;
    const ATTEMPTS: usize = 50;
    let quotas = stores.quotas;
    let until = now_secs() + 600;
    let mut takes = tokio::task::JoinSet::new();
    for _ in 0..ATTEMPTS {
        let quotas = quotas.clone();
        takes.spawn(async move { quotas.take("sockets/carol", LIMIT, until).await });
    }
    let mut granted = 0;
    while let Some(result) = takes.join_next().await {
        if result.unwrap().unwrap() {
            granted += 1;
        }
    }
    assert_eq!(granted, LIMIT);
    assert_eq!(quotas.get("sockets/carol").await.unwrap(), LIMIT);

    let mut releases = tokio::task::JoinSet::new();
    for _ in 0..LIMIT {
        let quotas = quotas.clone();
        releases.spawn(async move { quotas.release("sockets/carol", 1).await });
    }
    while let Some(result) = releases.join_next().await {
        result.unwrap().unwrap();
    }
    assert_eq!(quotas.get("sockets/carol").await.unwrap(), 0);
}

/// An event on the topic every commit check publishes on.
fn commit_event(payload: serde_json::Value) -> Event {
    Event::new(
        Topic::new("board/b1/cardAdded"),
        payload,
        Audience::Everyone,
    )
}

/// A deadline well ahead.
fn soon() -> u64 {
    now_ms() + 10_000
}

/// The events of the commit checks' topic, by payload.
async fn committed(events: &dyn EventLog) -> Vec<serde_json::Value> {
    let topic = Topic::new("board/b1/cardAdded");
    let logged = events.after(&topic, "", 100).await.unwrap();
    logged.into_iter().map(|e| e.payload).collect()
}

/// A commit stores its changes (puts, updates, deletes) and its event together.
pub async fn a_commit_stores_the_changes_and_the_event_together(stores: Stores) {
    let (events, table, items) = (stores.events, stores.app_table, stores.app_items);
    let first = Changes::new()
        .put_new(&table, "p", "a", &json!({"n": 1}))
        .unwrap()
        .put(&table, "p", "b", &json!({"n": 2}))
        .unwrap();
    events
        .append_with(&first, &commit_event(json!(1)), soon())
        .await
        .unwrap();
    assert_eq!(items.get("p", "a").await, Some(json!({"n": 1})));
    assert_eq!(items.get("p", "b").await, Some(json!({"n": 2})));
    let second = Changes::new()
        .update(&table, "p", "a", &json!({"n": 3}))
        .unwrap()
        .delete_existing(&table, "p", "b")
        .require_absent(&table, "p", "c");
    events
        .append_with(&second, &commit_event(json!(2)), soon())
        .await
        .unwrap();
    assert_eq!(items.get("p", "a").await, Some(json!({"n": 3})));
    assert_eq!(items.get("p", "b").await, None);
    assert_eq!(committed(events.as_ref()).await, [json!(1), json!(2)]);
}

/// A commit one of whose changes fails its condition stores nothing: no change, no event.
pub async fn a_commit_whose_change_fails_stores_no_event(stores: Stores) {
    let (events, table, items) = (stores.events, stores.app_table, stores.app_items);
    let seed = Changes::new()
        .put(&table, "p", "taken", &json!({"n": 1}))
        .unwrap();
    events
        .append_with(&seed, &commit_event(json!("seed")), soon())
        .await
        .unwrap();
    let failing = [
        // a put where the key is taken
        Changes::new()
            .put(&table, "p", "other", &json!({"n": 2}))
            .unwrap()
            .put_new(&table, "p", "taken", &json!({"n": 2}))
            .unwrap(),
        // an update, a delete and a check where nothing is
        Changes::new()
            .put(&table, "p", "other", &json!({"n": 2}))
            .unwrap()
            .update(&table, "p", "missing", &json!({"n": 2}))
            .unwrap(),
        Changes::new()
            .put(&table, "p", "other", &json!({"n": 2}))
            .unwrap()
            .delete_existing(&table, "p", "missing"),
        Changes::new()
            .delete(&table, "p", "taken")
            .require(&table, "p", "missing"),
    ];
    for (i, changes) in failing.iter().enumerate() {
        let event = commit_event(json!(i));
        let result = events.append_with(changes, &event, soon()).await;
        assert!(
            matches!(result, Err(StoreError::Conflict(_))),
            "{i}: {result:?}"
        );
        assert_eq!(events.get(&event.reference()).await.unwrap(), None, "{i}");
    }
    assert_eq!(items.get("p", "other").await, None);
    assert_eq!(items.get("p", "taken").await, Some(json!({"n": 1})));
    assert_eq!(committed(events.as_ref()).await, [json!("seed")]);
}

/// A commit whose event cannot be stored (past its deadline, or its id taken) stores none
/// of its changes.
pub async fn a_commit_whose_event_fails_stores_no_change(stores: Stores) {
    let (events, table, items) = (stores.events, stores.app_table, stores.app_items);
    let changes = Changes::new()
        .put(&table, "p", "late", &json!({"n": 1}))
        .unwrap();
    let late = commit_event(json!("late"));
    let past = now_ms() - 1;
    let result = events.append_with(&changes, &late, past).await;
    assert!(matches!(result, Err(StoreError::TooLate)), "{result:?}");
    assert_eq!(items.get("p", "late").await, None);
    assert_eq!(events.get(&late.reference()).await.unwrap(), None);

    let taken = commit_event(json!("taken"));
    events.append(&taken).await.unwrap();
    let changes = Changes::new()
        .put(&table, "p", "duplicate", &json!({"n": 1}))
        .unwrap();
    let result = events.append_with(&changes, &taken, soon()).await;
    assert!(matches!(result, Err(StoreError::Conflict(_))), "{result:?}");
    assert_eq!(items.get("p", "duplicate").await, None);
    assert_eq!(committed(events.as_ref()).await, [json!("taken")]);
}

/// A commit sent again (its first answer lost) is not made twice: what was written since
/// stays, and its event is stored once.
pub async fn a_retried_commit_is_not_applied_twice(stores: Stores) {
    let (events, table, items) = (stores.events, stores.app_table, stores.app_items);
    let first = Changes::new()
        .put(&table, "p", "x", &json!({"n": 1}))
        .unwrap();
    let event = commit_event(json!("first"));
    events.append_with(&first, &event, soon()).await.unwrap();
    let later = Changes::new()
        .put(&table, "p", "x", &json!({"n": 2}))
        .unwrap();
    events
        .append_with(&later, &commit_event(json!("later")), soon())
        .await
        .unwrap();
    // The same commit again: refused as done (its event is there), or answered as the
    // first was; either way not made again.
    let again = events.append_with(&first, &event, soon()).await;
    assert!(
        matches!(again, Ok(()) | Err(StoreError::Conflict(_))),
        "{again:?}"
    );
    assert_eq!(items.get("p", "x").await, Some(json!({"n": 2})));
    assert_eq!(
        committed(events.as_ref()).await,
        [json!("first"), json!("later")]
    );
}
