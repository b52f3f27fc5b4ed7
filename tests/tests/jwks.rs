//! Tokens of an identity provider (Cognito, Auth0) in the local mode: RS256 tokens verified
//! against a key set served over HTTP, on the socket and over HTTP, through a key rotation;
//! forged tokens and the HS256 development secret are refused.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use broker::DeliveryMode;
use broker::auth::jwks::JwksConfig;
use broker::domain::now_secs;
use broker_tests::local::{self, BOARD_CREATED, WsClient};
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

const KEY_A: &[u8] = include_bytes!("../fixtures/jwks/rsa-a.der");
const KEY_B: &[u8] = include_bytes!("../fixtures/jwks/rsa-b.der");
const ISSUER: &str = "https://id.example/pool";

fn public_jwk(private_der: &[u8], kid: &str) -> Value {
    let key = EncodingKey::from_rsa_der(private_der);
    let mut jwk =
        serde_json::to_value(Jwk::from_encoding_key(&key, Algorithm::RS256).unwrap()).unwrap();
    jwk["kid"] = json!(kid);
    jwk["use"] = json!("sig");
    jwk
}

fn rs256(private_der: &[u8], kid: &str, sub: &str) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.into());
    let claims = json!({ "sub": sub, "exp": now_secs() + 600, "iss": ISSUER });
    jsonwebtoken::encode(&header, &claims, &EncodingKey::from_rsa_der(private_der)).unwrap()
}

/// The provider's key set endpoint; the test swaps the set to rotate keys.
async fn serve_key_set(keys: Arc<Mutex<Value>>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/.well-known/jwks.json",
        listener.local_addr().unwrap()
    );
    let app = Router::new()
        .route(
            "/.well-known/jwks.json",
            get(|State(keys): State<Arc<Mutex<Value>>>| async move {
                axum::Json(keys.lock().unwrap().clone())
            }),
        )
        .with_state(keys);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

async fn status_of(gateway: &local_gateway::LocalGateway, token: &str) -> u16 {
    reqwest::Client::new()
        .post(gateway.graphql_url())
        .bearer_auth(token)
        .json(&json!({"query": "{ boards { id } }"}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn provider_tokens_work_on_every_path_and_forged_ones_on_none() {
    let keys = Arc::new(Mutex::new(json!({ "keys": [public_jwk(KEY_A, "a")] })));
    let url = serve_key_set(keys.clone()).await;
    let mut options = local::options(DeliveryMode::Stream);
    let mut key_set = JwksConfig::new(url);
    key_set.issuer = Some(ISSUER.into());
    key_set.min_refresh_interval = std::time::Duration::ZERO;
    options.key_set = Some(key_set);
    let gateway = local::start(options).await;

    // A provider token opens a socket and subscribes; the same user's mutation over HTTP
    // reaches it.
    let alice = rs256(KEY_A, "a", "alice");
    let mut tab = WsClient::ready(&gateway, "graphql-transport-ws", &alice).await;
    tab.subscribe("1", BOARD_CREATED, json!({})).await;
    tab.sync().await;
    let board = local::create_board(&gateway, &alice, "from the provider").await;
    let next = tab.recv().await.unwrap();
    assert_eq!(
        next["payload"]["data"]["boardCreated"]["id"], board,
        "{next}"
    );

    // Another key under the same kid, and the HS256 development secret, are refused on both
    // paths: configuring a key set turns the shared secret off.
    let forged = rs256(KEY_B, "a", "alice");
    let hs256 = broker::Authenticator::new(broker::AuthConfig {
        secret: local::SECRET.into(),
        issuer: Some(ISSUER.into()),
        audience: None,
        leeway_secs: broker::auth::DEFAULT_LEEWAY_SECS,
    })
    .mint("alice", 600);
    for bad in [&forged, &hs256] {
        assert_eq!(status_of(&gateway, bad).await, 401);
        let mut socket = WsClient::connect(&gateway, Some("graphql-transport-ws"), None)
            .await
            .unwrap();
        socket
            .send(json!({"type": "connection_init", "payload": {"token": bad}}))
            .await;
        assert_eq!(socket.closed().await.unwrap(), 4401);
    }

    // The provider rotates: a token signed by its new key works once the set names it.
    let rotated = rs256(KEY_B, "b", "alice");
    assert_eq!(status_of(&gateway, &rotated).await, 401);
    keys.lock().unwrap()["keys"]
        .as_array_mut()
        .unwrap()
        .push(public_jwk(KEY_B, "b"));
    assert_eq!(status_of(&gateway, &rotated).await, 200);
    WsClient::ready(&gateway, "graphql-ws", &rotated).await;

    gateway.shutdown().await;
}
