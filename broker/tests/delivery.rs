//! Delivery at the broker level, on the in-memory adapters and a schema of its own: when an
//! event is split into fan-out pages, and how subscribers that ask the same thing share one
//! rendering.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;

use broker::{Broker, EventRef, FanoutPage, Protocol, Subscription, SubscriptionKey};
use common::*;
use serde_json::{Value, json};
use tokio::sync::mpsc::UnboundedReceiver;

/// `count` subscribers of channel `a`, on connections `c0`, `c1`, ...
async fn subscribers(broker: &Broker, count: usize) -> Vec<Subscription> {
    let mut all = Vec::new();
    for i in 0..count {
        let s = tick_subscription(&format!("c{i}"), "alice", json!({"c": "a"}));
        broker.ports().subscriptions.insert(&s).await.unwrap();
        all.push(s);
    }
    all
}

fn drain(pages: &mut UnboundedReceiver<FanoutPage>) -> Vec<FanoutPage> {
    std::iter::from_fn(|| pages.try_recv().ok()).collect()
}

#[tokio::test]
async fn above_the_threshold_an_event_is_split_into_pages_of_the_page_size() {
    let mut s = setup(true, 3, 2);
    let subscriptions = subscribers(&s.broker, 7).await;
    let event = published(&s.broker, 1).await;

    let report = s.broker.deliver_event(event.clone()).await.unwrap();

    // One bucket's subscriptions per page, at most two each: as many pages as the buckets'
    // counts in halves, rounded up.
    let mut per_bucket = std::collections::BTreeMap::<usize, usize>::new();
    for subscription in &subscriptions {
        let bucket = broker::fanout::bucket_of(&subscription.key.connection_id, 32);
        *per_bucket.entry(bucket).or_default() += 1;
    }
    let expected_pages: usize = per_bucket.values().map(|n| n.div_ceil(2)).sum();
    assert_eq!(report.pages_enqueued, expected_pages, "{report:?}");
    assert_eq!(report.delivered, 0);
    let pages = drain(&mut s.pages);
    assert_eq!(pages.len(), expected_pages);
    for page in &pages {
        assert!(page.subscription_keys.len() <= 2, "{page:?}");
        for key in page.keys() {
            let bucket = broker::fanout::bucket_of(&key.connection_id, 32);
            assert_eq!(page.group, broker::fanout::group_name(&event.topic, bucket));
        }
    }
    let keys: BTreeSet<SubscriptionKey> = pages.iter().flat_map(FanoutPage::keys).collect();
    let expected: BTreeSet<SubscriptionKey> = subscriptions.iter().map(|s| s.key.clone()).collect();
    assert_eq!(keys, expected);
    for s_ in &subscriptions {
        assert!(s.gateway.take(&s_.key.connection_id).is_empty());
    }
    // Handing the pages to the queue completes the event's part: a retry skips it.
    let reference = EventRef {
        topic: event.topic.clone(),
        event_id: event.id.clone(),
    };
    assert!(
        s.broker
            .ports()
            .events
            .is_delivered(&reference)
            .await
            .unwrap()
    );

    // Each page delivers to its own subscribers, once.
    for page in &pages {
        let report = s.broker.deliver_page(page).await.unwrap();
        assert_eq!(report.delivered, page.subscription_keys.len());
    }
    for subscription in &subscriptions {
        let frames = s.gateway.take(&subscription.key.connection_id);
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0]["payload"]["data"]["ticks"]["n"], 1);
    }
}

#[tokio::test]
async fn at_the_threshold_an_event_is_delivered_inline() {
    let mut s = setup(true, 3, 2);
    let subscriptions = subscribers(&s.broker, 3).await;
    let event = published(&s.broker, 2).await;

    let report = s.broker.deliver_event(event).await.unwrap();

    assert_eq!(report.pages_enqueued, 0);
    assert_eq!(report.delivered, 3);
    assert!(drain(&mut s.pages).is_empty());
    for subscription in &subscriptions {
        assert_eq!(s.gateway.take(&subscription.key.connection_id).len(), 1);
    }
}

#[tokio::test]
async fn without_a_queue_a_large_fan_out_is_delivered_inline() {
    let s = setup(false, 3, 2);
    let subscriptions = subscribers(&s.broker, 7).await;
    let event = published(&s.broker, 3).await;

    let report = s.broker.deliver_event(event).await.unwrap();

    assert_eq!(report.pages_enqueued, 0);
    assert_eq!(report.delivered, 7);
    for subscription in &subscriptions {
        assert_eq!(s.gateway.take(&subscription.key.connection_id).len(), 1);
    }
}

#[tokio::test]
async fn subscribers_asking_the_same_thing_share_one_rendering() {
    let s = setup(false, 100, 50);
    // Four of alice's tabs ask the same thing, over both subprotocols; then one tab of
    // alice whose variables add one the document does not declare (its merged form is the
    // same: the same execution) and one of bob with the same: two renderings.
    let mut same = Vec::new();
    for (i, protocol) in [
        Protocol::GraphqlTransportWs,
        Protocol::GraphqlWs,
        Protocol::GraphqlTransportWs,
        Protocol::GraphqlWs,
    ]
    .into_iter()
    .enumerate()
    {
        same.push(Subscription {
            protocol,
            ..tick_subscription(&format!("alice-{i}"), "alice", json!({"c": "a"}))
        });
    }
    let other_variables = tick_subscription("alice-x", "alice", json!({"c": "a", "x": 1}));
    let other_user = tick_subscription("bob-0", "bob", json!({"c": "a"}));
    for subscription in same.iter().chain([&other_variables, &other_user]) {
        s.broker
            .ports()
            .subscriptions
            .insert(subscription)
            .await
            .unwrap();
    }
    let event = published(&s.broker, 4).await;

    let report = s.broker.deliver_event(event).await.unwrap();

    assert_eq!(report.delivered, 6);
    assert_eq!(s.renders.0.load(Ordering::SeqCst), 2);
    let payloads: Vec<Value> = same
        .iter()
        .map(|sub| {
            let frames = s.gateway.take(&sub.key.connection_id);
            assert_eq!(frames.len(), 1);
            frames[0]["payload"].clone()
        })
        .collect();
    assert!(payloads.iter().all(|p| *p == payloads[0]), "{payloads:?}");
    assert_eq!(
        payloads[0]["data"]["ticks"],
        json!({"n": 4, "rendered": true})
    );
    for sub in [&other_variables, &other_user] {
        assert_eq!(s.gateway.take(&sub.key.connection_id).len(), 1);
    }
}

#[tokio::test]
async fn on_an_ordered_queue_a_partly_failed_page_fails_whole_and_nothing_is_re_enqueued() {
    // GIVEN an ordered queue and a page of three subscribers, one of whose posts fail
    let mut s = setup_ordered(1, 10);
    let subscriptions = subscribers(&s.broker, 3).await;
    let event = published(&s.broker, 5).await;
    s.gateway.set_failing(&subscriptions[1].key.connection_id);
    let page = FanoutPage {
        topic: event.topic.clone(),
        event_id: event.id.clone(),
        group: broker::fanout::group_name(&event.topic, 0),
        subscription_keys: subscriptions.iter().map(|s| s.key.encode()).collect(),
    };

    // WHEN a worker delivers it
    let report = s.broker.deliver_page(&page).await.unwrap();

    // THEN the page is reported failed (to be redelivered in place), nothing goes to the end
    // of its group, and the others were served (a redelivery serves them again)
    assert_eq!((report.delivered, report.failed), (2, 1), "{report:?}");
    assert!(!report.is_complete());
    assert_eq!(report.pages_enqueued, 0);
    assert!(drain(&mut s.pages).is_empty());
    for ok in [&subscriptions[0], &subscriptions[2]] {
        assert_eq!(s.gateway.take(&ok.key.connection_id).len(), 1);
    }
}

#[tokio::test]
async fn on_an_ordered_queue_a_partly_failed_inline_delivery_is_retried_whole() {
    // GIVEN an ordered queue, two subscribers (below the threshold), one failing
    let mut s = setup_ordered(5, 10);
    let subscriptions = subscribers(&s.broker, 2).await;
    let event = published(&s.broker, 6).await;
    s.gateway.set_failing(&subscriptions[0].key.connection_id);

    // WHEN the stream publisher delivers the event
    let report = s.broker.deliver_event(event.clone()).await.unwrap();

    // THEN the event stays undelivered for the stream to retry in place, and no page of the
    // failed subscriber was queued where a later event could overtake it
    assert_eq!((report.delivered, report.failed), (1, 1), "{report:?}");
    assert!(drain(&mut s.pages).is_empty());
    let reference = EventRef {
        topic: event.topic.clone(),
        event_id: event.id.clone(),
    };
    assert!(
        !s.broker
            .ports()
            .events
            .is_delivered(&reference)
            .await
            .unwrap()
    );
}

/// Five subscribers (above a threshold of 3), an event delivered in pages nobody has taken
/// yet, then three unsubscribe: the two left, and the pages.
async fn paged_then_below_the_threshold(s: &mut Setup) -> (Vec<Subscription>, Vec<FanoutPage>) {
    let subscriptions = subscribers(&s.broker, 5).await;
    let first = s
        .broker
        .deliver_event(published(&s.broker, 1).await)
        .await
        .unwrap();
    assert!(first.pages_enqueued > 0, "{first:?}");
    let pages = drain(&mut s.pages);
    for gone in &subscriptions[2..] {
        s.broker
            .ports()
            .subscriptions
            .delete(&gone.key)
            .await
            .unwrap();
    }
    (subscriptions[..2].to_vec(), pages)
}

#[tokio::test]
async fn on_an_ordered_queue_an_event_below_the_threshold_waits_behind_the_topics_pages() {
    // GIVEN an ordered queue, a threshold of 3 and five subscribers: an event goes out in
    // pages, which no worker has taken yet
    let mut s = setup_ordered(3, 2);
    // WHEN three unsubscribe and the next event has two subscribers, below the threshold
    let (subscriptions, first_pages) = paged_then_below_the_threshold(&mut s).await;
    let second = s
        .broker
        .deliver_event(published(&s.broker, 2).await)
        .await
        .unwrap();

    // THEN it goes through the queue behind the first event's pages instead of past them,
    // and every subscriber gets both in order
    assert_eq!(second.delivered, 0, "{second:?}");
    assert!(second.pages_enqueued > 0, "{second:?}");
    let second_pages = drain(&mut s.pages);
    for page in first_pages.iter().chain(&second_pages) {
        assert!(s.broker.deliver_page(page).await.unwrap().is_complete());
    }
    let ticks = |s: &Setup, sub: &Subscription| -> Vec<i64> {
        s.gateway
            .take(&sub.key.connection_id)
            .iter()
            .map(|f| f["payload"]["data"]["ticks"]["n"].as_i64().unwrap())
            .collect()
    };
    for sub in &subscriptions {
        assert_eq!(ticks(&s, sub), [1, 2]);
    }

    // AND once its pages are done, the topic's next event goes out inline again
    let third = s
        .broker
        .deliver_event(published(&s.broker, 3).await)
        .await
        .unwrap();
    assert_eq!((third.delivered, third.pages_enqueued), (2, 0), "{third:?}");
    for sub in &subscriptions {
        assert_eq!(ticks(&s, sub), [3]);
    }
}

#[tokio::test]
async fn on_an_unordered_queue_an_event_below_the_threshold_goes_out_inline() {
    // An unordered queue keeps no order to wait for: nothing is counted or read.
    let mut s = setup(true, 3, 2);
    let (subscriptions, _) = paged_then_below_the_threshold(&mut s).await;
    let second = s
        .broker
        .deliver_event(published(&s.broker, 2).await)
        .await
        .unwrap();
    assert_eq!(
        (second.delivered, second.pages_enqueued),
        (2, 0),
        "{second:?}"
    );
    let topic = &subscriptions[0].topic;
    let in_flight = s
        .broker
        .ports()
        .page_marks
        .pages_in_flight(topic)
        .await
        .unwrap();
    assert!(!in_flight);
}

#[tokio::test]
async fn on_an_ordered_queue_a_page_delivered_again_does_not_free_the_topic_before_the_rest() {
    // GIVEN an event paged on an ordered queue, then the topic below the threshold
    let mut s = setup_ordered(3, 2);
    let (subscriptions, first_pages) = paged_then_below_the_threshold(&mut s).await;
    assert!(first_pages.len() > 1, "{first_pages:?}");
    // WHEN its first page is handed out again and again (a worker batch that timed out
    // after delivering it), as many times as there are pages, while the others wait
    for _ in 0..first_pages.len() {
        assert!(
            s.broker
                .deliver_page(&first_pages[0])
                .await
                .unwrap()
                .is_complete()
        );
    }
    // THEN the next event still goes through the queue, behind the pages left
    let second = s
        .broker
        .deliver_event(published(&s.broker, 2).await)
        .await
        .unwrap();
    assert_eq!(second.delivered, 0, "{second:?}");
    assert!(second.pages_enqueued > 0, "{second:?}");
    // AND once every page is done, the next one goes out inline
    for page in first_pages[1..].iter().chain(&drain(&mut s.pages)) {
        assert!(s.broker.deliver_page(page).await.unwrap().is_complete());
    }
    let third = s
        .broker
        .deliver_event(published(&s.broker, 3).await)
        .await
        .unwrap();
    assert_eq!(
        (third.delivered, third.pages_enqueued),
        (subscriptions.len(), 0),
        "{third:?}"
    );
}

#[tokio::test]
async fn on_an_unordered_queue_the_failed_subscribers_go_to_pages_of_their_buckets() {
    let mut s = setup(true, 5, 10);
    let subscriptions = subscribers(&s.broker, 2).await;
    let event = published(&s.broker, 7).await;
    s.gateway.set_failing(&subscriptions[0].key.connection_id);

    let report = s.broker.deliver_event(event.clone()).await.unwrap();

    assert!(report.is_complete(), "{report:?}");
    let pages = drain(&mut s.pages);
    let bucket = broker::fanout::bucket_of(&subscriptions[0].key.connection_id, 32);
    assert_eq!(pages.len(), 1);
    assert_eq!(
        pages[0].group,
        broker::fanout::group_name(&event.topic, bucket)
    );
    assert_eq!(
        pages[0].subscription_keys,
        vec![subscriptions[0].key.encode()]
    );
}
