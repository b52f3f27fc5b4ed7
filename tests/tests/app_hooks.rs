//! An app's own lifecycle hooks ([`broker::App::hooks`]) run in the local mode, over real
//! sockets, without any wiring of the app's own: the process that runs the app installs them.

use std::sync::Arc;

use async_trait::async_trait;
use broker::{App, AppSchema, ConfigError, Connection, DeliveryMode, Hooks, Refusal, Storage};
use broker_tests::local::{self, WsClient};
use serde_json::{Value, json};

/// The boards app, with one rule of its own: the user `mallory` may not open a session.
struct GuardedBoards;

impl App for GuardedBoards {
    fn tables(&self) -> Vec<broker::TableSpec> {
        boards::Boards.tables()
    }

    fn schema(&self, storage: &Storage) -> Result<AppSchema, ConfigError> {
        boards::Boards.schema(storage)
    }

    fn hooks(&self) -> Option<Arc<dyn Hooks>> {
        Some(Arc::new(NoMallory))
    }
}

struct NoMallory;

#[async_trait]
impl Hooks for NoMallory {
    async fn on_init(
        &self,
        connection: &Connection,
        _payload: Option<&Value>,
    ) -> Result<(), Refusal> {
        match &connection.principal {
            Some(user) if user.as_str() == "mallory" => Err(Refusal::new("not you")),
            _ => Ok(()),
        }
    }
}

#[tokio::test]
async fn the_apps_own_hooks_run_in_the_local_mode() {
    let gateway = local::start(local_gateway::Options {
        app: Arc::new(GuardedBoards),
        ..local::options(DeliveryMode::Stream)
    })
    .await;

    // GIVEN mallory's valid token, WHEN she initialises, THEN the app's hook refuses: 4403.
    let mallory = local::token(&gateway, "mallory");
    let mut refused = WsClient::connect(&gateway, Some("graphql-transport-ws"), None)
        .await
        .expect("upgrade accepted");
    refused
        .send(json!({"type": "connection_init", "payload": {"token": mallory}}))
        .await;
    assert_eq!(refused.closed().await.expect("closed"), 4403);

    // Anyone else is acknowledged as before.
    let alice = local::token(&gateway, "alice");
    WsClient::ready(&gateway, "graphql-transport-ws", &alice).await;
}

#[tokio::test]
async fn an_app_without_hooks_is_unchanged() {
    assert!(boards::Boards.hooks().is_none());
    let gateway = local::start(local::options(DeliveryMode::Stream)).await;
    let mallory = local::token(&gateway, "mallory");
    WsClient::ready(&gateway, "graphql-transport-ws", &mallory).await;
}
