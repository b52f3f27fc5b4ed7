//! Lifecycle hooks: called at each step of a connection's life, and able to refuse
//! connecting, initialising and subscribing.

mod common;

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use broker::{
    Broker, CloseCode, ConnectOutcome, Connection, ConnectionId, Ending, Hooks, Refusal,
    Subscription, SubscriptionKey, SubscriptionsOf,
};
use common::*;
use serde_json::{Value, json};

/// Writes down every call; refuses user `banned` at connect, an init whose payload says
/// `deny`, and subscriptions to channel `secret`.
#[derive(Default)]
struct Recorder {
    calls: Mutex<Vec<String>>,
}

impl Recorder {
    fn record(&self, call: String) {
        self.calls.lock().unwrap().push(call);
    }

    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.calls.lock().unwrap())
    }
}

fn user_of(connection: &Connection) -> &str {
    connection.principal.as_ref().map_or("-", |u| u.as_str())
}

#[async_trait]
impl Hooks for Recorder {
    async fn on_connect(&self, connection: &Connection) -> Result<(), Refusal> {
        self.record(format!("connect {} {}", connection.id, user_of(connection)));
        if user_of(connection) == "banned" {
            return Err(Refusal::new("banned"));
        }
        Ok(())
    }

    async fn on_init(
        &self,
        connection: &Connection,
        payload: Option<&Value>,
    ) -> Result<(), Refusal> {
        self.record(format!("init {} {}", connection.id, user_of(connection)));
        if payload.is_some_and(|p| p["deny"] == true) {
            return Err(Refusal::new("not today"));
        }
        Ok(())
    }

    async fn on_subscribe(&self, subscription: &Subscription) -> Result<(), Refusal> {
        self.record(format!(
            "subscribe {} {}",
            subscription.key.encode(),
            subscription.topic
        ));
        if subscription.variables["c"] == "secret" {
            return Err(Refusal::new("channel secret is closed"));
        }
        Ok(())
    }

    async fn on_complete(&self, key: &SubscriptionKey, ending: Ending) {
        self.record(format!("complete {} {ending:?}", key.encode()));
    }

    async fn on_disconnect(&self, id: &ConnectionId, connection: Option<&Connection>) {
        let user = connection.map_or("-", user_of);
        self.record(format!("disconnect {id} {user}"));
    }
}

fn hooked() -> (Setup, Arc<Recorder>) {
    let mut s = setup(false, 100, 50);
    let recorder = Arc::new(Recorder::default());
    s.broker = s.broker.with_hooks(recorder.clone());
    (s, recorder)
}

async fn connect(broker: &Broker, id: &str, user: &str) -> ConnectOutcome {
    let token = broker.authenticator().mint(user, 600);
    broker
        .connect(
            ConnectionId::new(id),
            Some("graphql-transport-ws"),
            Some(&token),
        )
        .await
        .unwrap()
}

async fn send(broker: &Broker, id: &str, frame: Value) {
    broker
        .receive(&ConnectionId::new(id), &frame.to_string())
        .await
        .unwrap();
}

fn subscribe(id: &str, channel: &str) -> Value {
    json!({"type": "subscribe", "id": id, "payload": {"query": TICKS, "variables": {"c": channel}}})
}

#[tokio::test]
async fn hooks_follow_a_connection_through_its_life() {
    let (s, hooks) = hooked();
    assert!(matches!(
        connect(&s.broker, "c1", "alice").await,
        ConnectOutcome::Accepted { .. }
    ));
    send(&s.broker, "c1", json!({"type": "connection_init"})).await;
    send(&s.broker, "c1", subscribe("t", "a")).await;
    send(&s.broker, "c1", json!({"type": "complete", "id": "t"})).await;
    // A second complete of the same id ends nothing, and says nothing.
    send(&s.broker, "c1", json!({"type": "complete", "id": "t"})).await;
    send(&s.broker, "c1", subscribe("u", "a")).await;
    s.broker
        .end_subscriptions(SubscriptionsOf::Topic(topic("a")))
        .await
        .unwrap();
    send(&s.broker, "c1", subscribe("v", "b")).await;
    s.broker.disconnect(&ConnectionId::new("c1")).await.unwrap();
    s.broker.disconnect(&ConnectionId::new("c1")).await.unwrap();

    assert_eq!(
        hooks.take(),
        vec![
            "connect c1 alice",
            "init c1 alice",
            "subscribe c1#t ticks/a",
            "complete c1#t Client",
            "subscribe c1#u ticks/a",
            "complete c1#u Server",
            "subscribe c1#v ticks/b",
            "disconnect c1 alice",
            "disconnect c1 -",
        ]
    );
}

#[tokio::test]
async fn a_refused_connect_is_a_403_and_stores_nothing() {
    let (s, hooks) = hooked();
    let outcome = connect(&s.broker, "c1", "banned").await;
    assert_eq!(
        outcome,
        ConnectOutcome::Rejected {
            status: 403,
            reason: "banned".into()
        }
    );
    let ports = s.broker.ports();
    assert!(ports.connections.get(&"c1".into()).await.unwrap().is_none());
    assert_eq!(hooks.take(), vec!["connect c1 banned"]);
}

#[tokio::test]
async fn a_refused_init_closes_with_4403_and_keeps_nothing() {
    let (s, _hooks) = hooked();
    connect(&s.broker, "c1", "alice").await;
    send(
        &s.broker,
        "c1",
        json!({"type": "connection_init", "payload": {"deny": true}}),
    )
    .await;

    assert_eq!(
        s.gateway.closed(),
        vec![("c1".into(), CloseCode::Forbidden)]
    );
    assert!(s.gateway.take(&"c1".into()).is_empty(), "no ack");
    let ports = s.broker.ports();
    assert!(ports.connections.get(&"c1".into()).await.unwrap().is_none());
}

#[tokio::test]
async fn a_refused_subscription_gets_an_error_and_is_not_stored() {
    let (s, hooks) = hooked();
    connect(&s.broker, "c1", "alice").await;
    send(&s.broker, "c1", json!({"type": "connection_init"})).await;
    s.gateway.take(&"c1".into());
    send(&s.broker, "c1", subscribe("s", "secret")).await;

    assert_eq!(
        s.gateway.take(&"c1".into()),
        vec![
            json!({"type": "error", "id": "s", "payload": [{"message": "channel secret is closed"}]})
        ]
    );
    let ports = s.broker.ports();
    assert!(
        ports
            .subscriptions
            .by_connection(&"c1".into())
            .await
            .unwrap()
            .is_empty()
    );
    // The operation id is still free.
    send(&s.broker, "c1", subscribe("s", "a")).await;
    assert_eq!(
        ports
            .subscriptions
            .by_connection(&"c1".into())
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(hooks.take().last().unwrap(), "subscribe c1#s ticks/a");
}
