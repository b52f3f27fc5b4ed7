//! What the database file (`broker::file`) keeps across a reopen and what it drops: the
//! rules the ports' contract does not cover because memory and DynamoDB have no restart.

use std::path::PathBuf;

use broker::file::FileStore;
use broker::{
    Audience, ConnectionStore, Event, EventLog, EventRef, PageMarks, SubscriptionStore, Topic,
};
use broker_tests::contract::{connection, subscription};
use serde_json::json;

fn new_path() -> PathBuf {
    std::env::temp_dir().join(format!("broker-file-{}", ulid::Ulid::new()))
}

#[tokio::test]
async fn a_reopened_file_has_its_events_marks_stream_position_and_app_tables() {
    let dir = new_path();
    let path = dir.join("state.redb");
    let topic = Topic::new("board/b1/cardAdded");
    let events: Vec<Event> = (0..5)
        .map(|n| Event::new(topic.clone(), json!({"n": n}), Audience::Everyone))
        .collect();
    {
        let store = FileStore::open(&path).unwrap();
        let log = store.events();
        for event in &events {
            log.append(event).await.unwrap();
        }
        let first = EventRef {
            topic: topic.clone(),
            event_id: events[0].id.clone(),
        };
        log.mark_delivered(&first).await.unwrap();
        log.save_stream_position(2).await.unwrap();
        store
            .table::<String>("notes")
            .put_new("alice", "1", &"kept".to_owned())
            .await
            .unwrap();
    }

    let store = FileStore::open(&path).unwrap();
    let log = store.events();
    assert_eq!(log.after(&topic, "", 10).await.unwrap(), events);
    let first = EventRef {
        topic: topic.clone(),
        event_id: events[0].id.clone(),
    };
    assert!(log.is_delivered(&first).await.unwrap());
    // The stream goes on where the previous reader stopped, in append order.
    assert_eq!(log.stream_position().await.unwrap(), 2);
    assert_eq!(
        log.read_from(2, 100).await.unwrap(),
        (events[2..].to_vec(), 5)
    );
    // A new append continues the stream after the old ones.
    let later = Event::new(topic.clone(), json!("later"), Audience::Everyone);
    log.append(&later).await.unwrap();
    assert_eq!(log.read_from(5, 100).await.unwrap(), (vec![later], 6));
    let notes = store.table::<String>("notes");
    assert_eq!(
        notes.get("alice", "1").await.unwrap(),
        Some("kept".to_owned())
    );
    drop(store);
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn forget_connections_drops_connections_subscriptions_and_page_marks_and_keeps_the_rest() {
    let dir = new_path();
    let store = FileStore::open(dir.join("state.redb")).unwrap();
    let alice = connection("c1", Some("alice"));
    store.connections().put(&alice).await.unwrap();
    let sub = subscription("c1", "1", "topic/a");
    store.subscriptions().insert(&sub).await.unwrap();
    let event = Event::new(Topic::new("topic/a"), json!(1), Audience::Everyone);
    store.events().append(&event).await.unwrap();
    // A page on its way through the in-memory queue, which does not outlive the process.
    let until = broker::domain::now_secs() + 600;
    let page = vec!["page".to_owned()];
    let page_marks = store.page_marks();
    page_marks
        .pages_enqueued(&sub.topic, &page, until)
        .await
        .unwrap();

    assert_eq!(store.forget_connections().unwrap(), (1, 1));

    assert!(!page_marks.pages_in_flight(&sub.topic).await.unwrap());

    assert_eq!(store.connections().get(&alice.id).await.unwrap(), None);
    assert!(
        store
            .connections()
            .by_user(&"alice".into())
            .await
            .unwrap()
            .is_empty()
    );
    assert!(!store.subscriptions().contains(&sub.key).await.unwrap());
    assert!(
        store
            .subscriptions()
            .by_topic(&sub.topic)
            .await
            .unwrap()
            .is_empty()
    );
    // The operation id is free again, and the events are still there.
    store.subscriptions().insert(&sub).await.unwrap();
    assert_eq!(
        store.events().after(&event.topic, "", 10).await.unwrap(),
        vec![event]
    );
    drop(store);
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn an_append_too_late_leaves_no_trace_in_the_log_or_its_stream() {
    // GIVEN a file with one event in its stream
    let dir = new_path();
    let store = FileStore::open(dir.join("state.redb")).unwrap();
    let log = store.events();
    let topic = Topic::new("t");
    let first = Event::new(topic.clone(), json!("first"), Audience::Everyone);
    log.append(&first).await.unwrap();
    // WHEN an append comes past its deadline
    let late = Event::new(topic.clone(), json!("late"), Audience::Everyone);
    let result = log.append_by(&late, broker::domain::now_ms() - 1).await;
    // THEN it is refused, and neither the log nor the stream has it: the next append takes
    // the stream position it would have had
    assert!(
        matches!(result, Err(broker::StoreError::TooLate)),
        "{result:?}"
    );
    let next = Event::new(topic.clone(), json!("next"), Audience::Everyone);
    log.append(&next).await.unwrap();
    assert_eq!(log.read_from(1, 10).await.unwrap(), (vec![next.clone()], 2));
    assert_eq!(log.after(&topic, "", 10).await.unwrap(), [first, next]);
    drop(store);
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn expired_events_are_purged_from_the_log_and_its_stream() {
    let dir = new_path();
    let store = FileStore::open(dir.join("state.redb")).unwrap();
    let log = store.events();
    let topic = Topic::new("t");
    let mut stale = Event::new(topic.clone(), json!("stale"), Audience::Everyone);
    stale.expires_at = broker::domain::now_secs() - 1;
    let live = Event::new(topic.clone(), json!("live"), Audience::Everyone);
    log.append(&stale).await.unwrap();
    log.append(&live).await.unwrap();

    assert_eq!(log.purge_expired().await.unwrap(), 1);
    assert_eq!(log.purge_expired().await.unwrap(), 0);
    let stale_ref = EventRef {
        topic: topic.clone(),
        event_id: stale.id.clone(),
    };
    assert_eq!(log.get(&stale_ref).await.unwrap(), None);
    assert_eq!(log.read_from(0, 10).await.unwrap(), (vec![live.clone()], 2));
    assert_eq!(log.after(&topic, "", 10).await.unwrap(), vec![live]);
    drop(store);
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn app_tables_keep_partitions_in_sort_order_and_refuse_a_taken_key() {
    let dir = new_path();
    let store = FileStore::open(dir.join("state.redb")).unwrap();
    let cards = store.table::<u32>("cards");
    for (sort, n) in [("b", 2), ("a", 1), ("c", 3)] {
        cards.put_new("board-1", sort, &n).await.unwrap();
    }
    cards.put_new("board-2", "a", &9).await.unwrap();
    assert!(matches!(
        cards.put_new("board-1", "a", &7).await,
        Err(broker::StoreError::Conflict(_))
    ));
    cards.put("board-1", "a", &10).await.unwrap();
    let values: Vec<(String, u32)> = cards.partition("board-1").await.unwrap();
    assert_eq!(
        values,
        [("a", 10), ("b", 2), ("c", 3)].map(|(k, v)| (k.to_owned(), v))
    );
    // Another app table of the same file is another namespace.
    assert_eq!(
        store
            .table::<u32>("boards")
            .get("board-1", "a")
            .await
            .unwrap(),
        None
    );
    assert!(cards.delete("board-1", "b").await.unwrap());
    assert!(!cards.delete("board-1", "b").await.unwrap());
    assert_eq!(cards.delete_partition("board-1").await.unwrap(), 2);
    assert!(cards.partition("board-1").await.unwrap().is_empty());
    assert_eq!(cards.get("board-2", "a").await.unwrap(), Some(9));
    drop(store);
    std::fs::remove_dir_all(dir).unwrap();
}

/// Concurrent writes of every kind share the writer's transactions, and each caller gets
/// its own result: appends refused as duplicates or as too late, and subscriptions over a
/// connection's limit, fail alone, while every other append, connection and subscription
/// is stored once; the event log's stream holds each accepted event exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_each_get_their_own_result_and_nothing_is_lost_or_duplicated() {
    use broker::domain::now_ms;
    use futures_util::future::join_all;

    let dir = new_path();
    let store = FileStore::open(dir.join("state.redb")).unwrap();
    let log = store.events();
    let topic = Topic::new("board/b1/cardAdded");
    let events: Vec<Event> = (0..300)
        .map(|n| Event::new(topic.clone(), json!({"n": n}), Audience::Everyone))
        .collect();
    // One in ten is appended twice (one of the two is refused), one in ten too late.
    let appends = events.iter().enumerate().flat_map(|(n, event)| {
        let twice = if n % 10 == 3 { 2 } else { 1 };
        (0..twice).map(move |_| (n, event))
    });
    let log = &log;
    let appended = join_all(appends.map(|(n, event)| async move {
        let result = if n % 10 == 5 {
            log.append_by(event, now_ms().saturating_sub(1_000)).await
        } else {
            log.append(event).await
        };
        (n, result)
    }));
    let connections = store.connections();
    let subscriptions = store.subscriptions();
    let (connections, subscriptions) = (&connections, &subscriptions);
    let stored = join_all((0..100).map(|n| async move {
        let c = connection(&format!("c{}", n % 50), Some("alice"));
        connections.put(&c).await.unwrap();
        // Two per connection, with a limit of one: one of the two is refused.
        let s = subscription(&format!("c{}", n % 50), &format!("op{n}"), "t/1");
        subscriptions.insert_within(&s, 1).await
    }));
    let (appended, stored) = tokio::join!(appended, stored);

    let (mut accepted, mut duplicates) = (Vec::new(), 0);
    for (n, result) in appended {
        match result {
            Ok(()) if n % 10 != 5 => accepted.push(n),
            Err(broker::StoreError::Conflict(_)) if n % 10 == 3 => duplicates += 1,
            Err(broker::StoreError::TooLate) if n % 10 == 5 => {}
            other => panic!("append {n}: {other:?}"),
        }
    }
    assert_eq!(duplicates, 30);
    accepted.sort_unstable();
    let expected: Vec<usize> = (0..300).filter(|n| n % 10 != 5).collect();
    assert_eq!(accepted, expected);
    // The stream holds every accepted event once, and nothing else.
    let (streamed, next) = log.read_from(0, 1_000).await.unwrap();
    assert_eq!(next, streamed.len() as u64);
    let mut streamed_ids: Vec<String> = streamed.iter().map(|e| e.id.clone()).collect();
    streamed_ids.sort();
    let mut accepted_ids: Vec<String> = expected.iter().map(|&n| events[n].id.clone()).collect();
    accepted_ids.sort();
    assert_eq!(streamed_ids, accepted_ids);

    let (mut inserted, mut refused) = (0, 0);
    for result in stored {
        match result {
            Ok(broker::Inserted::Stored) => inserted += 1,
            Err(broker::StoreError::LimitReached(_)) => refused += 1,
            other => panic!("insert: {other:?}"),
        }
    }
    assert_eq!((inserted, refused), (50, 50));
    assert_eq!(
        subscriptions
            .by_topic(&Topic::new("t/1"))
            .await
            .unwrap()
            .len(),
        50
    );
    for n in 0..50 {
        let id = broker::ConnectionId::new(format!("c{n}"));
        assert!(connections.get(&id).await.unwrap().is_some());
        assert_eq!(subscriptions.count_by_connection(&id).await.unwrap(), 1);
    }
    // Every committed write counted once: 270 appends, 100 puts, 50 subscriptions.
    let stats = store.write_stats();
    assert_eq!(stats.writes, 270 + 100 + 50);
    assert!(stats.transactions <= stats.writes);
    drop(store);
    std::fs::remove_dir_all(dir).unwrap();
}
