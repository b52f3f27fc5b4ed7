//! Ending subscriptions from the server side: each one ended is removed and its client gets
//! `complete`, in its own subprotocol; nothing else is touched.

mod common;

use broker::{ConnectionId, Protocol, SubscriptionKey, SubscriptionsOf, Topic, UserId};
use common::*;
use serde_json::{Value, json};

fn complete(id: &str) -> Value {
    json!({"type": "complete", "id": id})
}

/// `operation` of connection `connection` (of `user`) on channel `channel`.
async fn subscribed(s: &Setup, connection: &str, user: &str, operation: &str, channel: &str) {
    let mut subscription = tick_subscription(connection, user, json!({"c": channel}));
    subscription.key.operation_id = operation.to_owned();
    subscription.topic = topic(channel);
    s.broker
        .ports()
        .subscriptions
        .insert(&subscription)
        .await
        .unwrap();
}

fn key(connection: &str, operation: &str) -> SubscriptionKey {
    SubscriptionKey {
        connection_id: ConnectionId::new(connection),
        operation_id: operation.to_owned(),
    }
}

async fn keys_of(s: &Setup, connection: &str) -> Vec<String> {
    let mut keys: Vec<String> = s
        .broker
        .ports()
        .subscriptions
        .by_connection(&ConnectionId::new(connection))
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.operation_id)
        .collect();
    keys.sort();
    keys
}

/// Alice on `modern` (graphql-transport-ws) and `legacy` (graphql-ws), Bob on `bobs`.
async fn three_connections(s: &Setup) {
    connected(&s.broker, "modern", "alice", Protocol::GraphqlTransportWs).await;
    connected(&s.broker, "legacy", "alice", Protocol::GraphqlWs).await;
    connected(&s.broker, "bobs", "bob", Protocol::GraphqlTransportWs).await;
}

#[tokio::test]
async fn ending_a_topic_completes_each_of_its_subscriptions() {
    let s = setup(false, 100, 50);
    three_connections(&s).await;
    subscribed(&s, "modern", "alice", "1", "a").await;
    subscribed(&s, "modern", "alice", "2", "b").await;
    subscribed(&s, "legacy", "alice", "x", "a").await;
    subscribed(&s, "bobs", "bob", "1", "a").await;

    let ended = s
        .broker
        .end_subscriptions(SubscriptionsOf::Topic(topic("a")))
        .await
        .unwrap();

    assert_eq!(ended, 3);
    assert_eq!(s.gateway.take(&"modern".into()), vec![complete("1")]);
    assert_eq!(s.gateway.take(&"legacy".into()), vec![complete("x")]);
    assert_eq!(s.gateway.take(&"bobs".into()), vec![complete("1")]);
    assert!(
        s.broker
            .ports()
            .subscriptions
            .by_topic(&topic("a"))
            .await
            .unwrap()
            .is_empty()
    );
    // The other topic's subscription, and every connection, stay.
    assert_eq!(keys_of(&s, "modern").await, vec!["2"]);
    assert!(
        s.broker
            .ports()
            .connections
            .get(&"legacy".into())
            .await
            .unwrap()
            .is_some()
    );
    // An event on the ended topic reaches nobody.
    let report = s.broker.deliver_event(published(&s.broker, 1).await).await;
    assert_eq!(report.unwrap().delivered, 0);
}

#[tokio::test]
async fn ending_a_users_subscriptions_spares_everyone_else() {
    let s = setup(false, 100, 50);
    three_connections(&s).await;
    subscribed(&s, "modern", "alice", "1", "a").await;
    subscribed(&s, "modern", "alice", "2", "b").await;
    subscribed(&s, "legacy", "alice", "x", "a").await;
    subscribed(&s, "bobs", "bob", "1", "a").await;

    let ended = s
        .broker
        .end_subscriptions(SubscriptionsOf::User(UserId::new("alice")))
        .await
        .unwrap();

    assert_eq!(ended, 3);
    let mut modern = s.gateway.take(&"modern".into());
    modern.sort_by_key(|f| f["id"].to_string());
    assert_eq!(modern, vec![complete("1"), complete("2")]);
    assert_eq!(s.gateway.take(&"legacy".into()), vec![complete("x")]);
    assert!(s.gateway.take(&"bobs".into()).is_empty());
    assert!(keys_of(&s, "modern").await.is_empty());
    assert_eq!(keys_of(&s, "bobs").await, vec!["1"]);
}

#[tokio::test]
async fn ending_one_users_subscriptions_to_a_topic_leaves_the_rest() {
    let s = setup(false, 100, 50);
    three_connections(&s).await;
    subscribed(&s, "modern", "alice", "1", "a").await;
    subscribed(&s, "modern", "alice", "2", "b").await;
    subscribed(&s, "bobs", "bob", "1", "a").await;

    let ended = s
        .broker
        .end_subscriptions(SubscriptionsOf::UserOnTopic {
            user: UserId::new("alice"),
            topic: topic("a"),
        })
        .await
        .unwrap();

    assert_eq!(ended, 1);
    assert_eq!(s.gateway.take(&"modern".into()), vec![complete("1")]);
    assert!(s.gateway.take(&"bobs".into()).is_empty());
    assert_eq!(keys_of(&s, "modern").await, vec!["2"]);
    assert_eq!(keys_of(&s, "bobs").await, vec!["1"]);
}

#[tokio::test]
async fn ending_a_connections_subscriptions_keeps_it_open() {
    let s = setup(false, 100, 50);
    three_connections(&s).await;
    subscribed(&s, "legacy", "alice", "x", "a").await;
    subscribed(&s, "legacy", "alice", "y", "b").await;
    subscribed(&s, "modern", "alice", "1", "a").await;

    let ended = s
        .broker
        .end_subscriptions(SubscriptionsOf::Connection("legacy".into()))
        .await
        .unwrap();

    assert_eq!(ended, 2);
    let mut legacy = s.gateway.take(&"legacy".into());
    legacy.sort_by_key(|f| f["id"].to_string());
    assert_eq!(legacy, vec![complete("x"), complete("y")]);
    assert!(s.gateway.closed().is_empty());
    assert!(
        s.broker
            .ports()
            .connections
            .get(&"legacy".into())
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(keys_of(&s, "modern").await, vec!["1"]);
}

#[tokio::test]
async fn a_subscription_is_completed_once_however_often_it_is_ended() {
    let s = setup(false, 100, 50);
    three_connections(&s).await;
    subscribed(&s, "modern", "alice", "1", "a").await;

    let which = SubscriptionsOf::One(key("modern", "1"));
    assert_eq!(s.broker.end_subscriptions(which.clone()).await.unwrap(), 1);
    assert_eq!(s.broker.end_subscriptions(which).await.unwrap(), 0);
    assert_eq!(
        s.broker
            .end_subscriptions(SubscriptionsOf::One(key("modern", "never")))
            .await
            .unwrap(),
        0
    );
    assert_eq!(s.gateway.take(&"modern".into()), vec![complete("1")]);
}

#[tokio::test]
async fn a_gone_connection_is_cleaned_up_instead_of_completed() {
    let s = setup(false, 100, 50);
    three_connections(&s).await;
    subscribed(&s, "modern", "alice", "1", "a").await;
    subscribed(&s, "modern", "alice", "2", "b").await;
    s.gateway.set_gone(&"modern".into());

    let ended = s
        .broker
        .end_subscriptions(SubscriptionsOf::Topic(Topic::new("ticks/a")))
        .await
        .unwrap();

    assert_eq!(ended, 1);
    // The 410 on the `complete` removed the connection and its other subscription too.
    let ports = s.broker.ports();
    assert!(
        ports
            .connections
            .get(&"modern".into())
            .await
            .unwrap()
            .is_none()
    );
    assert!(keys_of(&s, "modern").await.is_empty());
}
