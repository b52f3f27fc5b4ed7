use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use jsonwebtoken::{EncodingKey, Header};
use serde_json::json;

use super::*;
use crate::domain::now_secs;
use crate::settings::parse_algorithms;

const KEY_A: &[u8] = include_bytes!("../../../../tests/fixtures/jwks/rsa-a.der");
const KEY_B: &[u8] = include_bytes!("../../../../tests/fixtures/jwks/rsa-b.der");

/// A source serving whatever set the test put there, counting fetches.
#[derive(Clone, Default)]
struct Published {
    body: Arc<std::sync::Mutex<Vec<u8>>>,
    fetches: Arc<AtomicUsize>,
}

impl Published {
    #[expect(
        clippy::needless_pass_by_value,
        reason = "callers build the value in the call"
    )]
    fn set(&self, keys: Value) {
        *self.body.lock().unwrap() = serde_json::to_vec(&keys).unwrap();
    }
    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl KeySetSource for Published {
    async fn fetch(&self) -> Result<Vec<u8>, String> {
        self.fetches.fetch_add(1, Ordering::SeqCst);
        Ok(self.body.lock().unwrap().clone())
    }
}

fn jwk(pem: &[u8], kid: &str) -> Value {
    let key = EncodingKey::from_rsa_der(pem);
    let mut jwk =
        serde_json::to_value(Jwk::from_encoding_key(&key, Algorithm::RS256).unwrap()).unwrap();
    jwk["kid"] = json!(kid);
    jwk["use"] = json!("sig");
    jwk
}

#[expect(
    clippy::needless_pass_by_value,
    reason = "callers build the value in the call"
)]
fn sign(pem: &[u8], kid: Option<&str>, claims: Value) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = kid.map(Into::into);
    jsonwebtoken::encode(&header, &claims, &EncodingKey::from_rsa_der(pem)).unwrap()
}

fn claims(sub: &str) -> Value {
    json!({ "sub": sub, "exp": now_secs() + 60, "iss": "https://issuer.example" })
}

fn verifier(published: &Published) -> JwksVerifier {
    let mut config = JwksConfig::new("https://issuer.example/jwks.json");
    config.issuer = Some("https://issuer.example".into());
    config.min_refresh_interval = Duration::from_secs(3600);
    JwksVerifier::new(config, published.clone())
}

#[tokio::test]
async fn a_token_signed_by_a_published_key_verifies_to_its_subject() {
    let published = Published::default();
    published.set(json!({ "keys": [jwk(KEY_A, "a")] }));
    let verifier = verifier(&published);
    let identity = verifier
        .verify(&sign(KEY_A, Some("a"), claims("alice")))
        .await
        .unwrap();
    assert_eq!(identity.user.as_str(), "alice");
    // The keys are kept: a second token costs no fetch.
    verifier
        .verify(&sign(KEY_A, Some("a"), claims("bob")))
        .await
        .unwrap();
    assert_eq!(published.fetches(), 1);
}

#[tokio::test]
async fn a_token_signed_by_another_key_under_a_known_kid_is_refused() {
    let published = Published::default();
    published.set(json!({ "keys": [jwk(KEY_A, "a")] }));
    let verifier = verifier(&published);
    let forged = sign(KEY_B, Some("a"), claims("alice"));
    assert!(matches!(
        verifier.verify(&forged).await,
        Err(AuthError::InvalidToken(_))
    ));
}

#[tokio::test]
async fn the_public_key_used_as_an_hmac_secret_is_refused() {
    let published = Published::default();
    let public = jwk(KEY_A, "a");
    published.set(json!({ "keys": [public.clone()] }));
    let verifier = verifier(&published);
    // The classic confusion: sign HS256 with the public modulus the attacker can read.
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("a".into());
    let secret = public["n"].as_str().unwrap().as_bytes();
    let token =
        jsonwebtoken::encode(&header, &claims("alice"), &EncodingKey::from_secret(secret)).unwrap();
    let refused = verifier.verify(&token).await.unwrap_err();
    assert!(refused.detail().contains("not accepted"), "{refused:?}");
}

#[tokio::test]
async fn a_symmetric_key_in_the_set_is_never_used() {
    let published = Published::default();
    published.set(json!({ "keys": [{ "kty": "oct", "kid": "s", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA" }] }));
    let mut config = JwksConfig::new("https://issuer.example/jwks.json");
    // Even when an operator lists HS256, a key set's secret is not one to trust.
    config.algorithms = vec![Algorithm::RS256, Algorithm::HS256];
    let verifier = JwksVerifier::new(config, published.clone());
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("s".into());
    let token = jsonwebtoken::encode(
        &header,
        &json!({ "sub": "alice", "exp": now_secs() + 60 }),
        &EncodingKey::from_secret(b"secret-secret-secret-secret-secret"),
    )
    .unwrap();
    assert!(verifier.verify(&token).await.is_err());
}

#[tokio::test]
async fn a_token_without_kid_or_with_another_algorithm_is_refused_without_a_fetch() {
    let published = Published::default();
    published.set(json!({ "keys": [jwk(KEY_A, "a")] }));
    let verifier = verifier(&published);
    assert!(
        verifier
            .verify(&sign(KEY_A, None, claims("alice")))
            .await
            .unwrap_err()
            .detail()
            .contains("kid")
    );
    let mut header = Header::new(Algorithm::RS384);
    header.kid = Some("a".into());
    let rs384 =
        jsonwebtoken::encode(&header, &claims("alice"), &EncodingKey::from_rsa_der(KEY_A)).unwrap();
    assert!(verifier.verify(&rs384).await.is_err());
    assert_eq!(published.fetches(), 0);
}

#[tokio::test]
async fn a_key_whose_own_alg_or_use_forbids_it_is_not_used() {
    let published = Published::default();
    let mut encryption = jwk(KEY_A, "enc");
    encryption["use"] = json!("enc");
    let mut other_alg = jwk(KEY_B, "ps");
    other_alg["alg"] = json!("PS256");
    published.set(json!({ "keys": [encryption, other_alg] }));
    let verifier = verifier(&published);
    assert!(
        verifier
            .verify(&sign(KEY_A, Some("enc"), claims("alice")))
            .await
            .is_err()
    );
    assert!(
        verifier
            .verify(&sign(KEY_B, Some("ps"), claims("alice")))
            .await
            .unwrap_err()
            .detail()
            .contains("does not verify")
    );
}

#[tokio::test]
async fn a_rotated_key_is_fetched_once_and_made_up_kids_do_not_cause_fetches() {
    let published = Published::default();
    published.set(json!({ "keys": [jwk(KEY_A, "a")] }));
    let verifier = verifier(&published);
    verifier
        .verify(&sign(KEY_A, Some("a"), claims("alice")))
        .await
        .unwrap();
    // The provider rotates: key b joins the set. The first token signed by it triggers a
    // refresh, but only once per interval, so an attacker's random kids cost nothing.
    published.set(json!({ "keys": [jwk(KEY_A, "a"), jwk(KEY_B, "b")] }));
    let mut config = verifier.config.clone();
    config.min_refresh_interval = Duration::ZERO;
    let rotating = JwksVerifier::new(config, published.clone());
    rotating
        .verify(&sign(KEY_A, Some("a"), claims("alice")))
        .await
        .unwrap();
    rotating
        .verify(&sign(KEY_B, Some("b"), claims("alice")))
        .await
        .unwrap();
    let before = published.fetches();
    for i in 0..10 {
        let token = sign(KEY_B, Some(&format!("made-up-{i}")), claims("mallory"));
        assert!(verifier.verify(&token).await.is_err());
    }
    // The limited verifier, holding fresh keys, fetched nothing for ten unknown kids.
    assert_eq!(published.fetches(), before);
}

#[tokio::test]
async fn concurrent_first_tokens_make_one_fetch() {
    let published = Published::default();
    published.set(json!({ "keys": [jwk(KEY_A, "a")] }));
    let verifier = Arc::new(verifier(&published));
    let token = sign(KEY_A, Some("a"), claims("alice"));
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let (verifier, token) = (verifier.clone(), token.clone());
            tokio::spawn(async move { verifier.verify(&token).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    assert_eq!(published.fetches(), 1);
}

#[tokio::test]
async fn rfc_8725_rules_hold_for_key_set_tokens() {
    let published = Published::default();
    published.set(json!({ "keys": [jwk(KEY_A, "a")] }));
    let verifier = verifier(&published);
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("a".into());
    header.crit = Some(vec!["exp".into()]);
    let crit =
        jsonwebtoken::encode(&header, &claims("alice"), &EncodingKey::from_rsa_der(KEY_A)).unwrap();
    assert!(verifier.verify(&crit).await.is_err());
    let blank_sub = sign(KEY_A, Some("a"), claims(" "));
    assert!(verifier.verify(&blank_sub).await.is_err());
    let other_issuer = sign(
        KEY_A,
        Some("a"),
        json!({ "sub": "alice", "exp": now_secs() + 60, "iss": "https://evil.example" }),
    );
    assert!(verifier.verify(&other_issuer).await.is_err());
    let expired = sign(
        KEY_A,
        Some("a"),
        json!({ "sub": "alice", "exp": now_secs() - 3600, "iss": "https://issuer.example" }),
    );
    assert_eq!(
        verifier.verify(&expired).await.unwrap_err(),
        AuthError::Expired
    );
}

#[tokio::test]
async fn a_malformed_key_set_refuses_tokens_and_a_failed_refresh_keeps_old_keys() {
    let published = Published::default();
    published.set(json!({ "nothing": [] }));
    let token = sign(KEY_A, Some("a"), claims("alice"));
    assert!(verifier(&published).verify(&token).await.is_err());
    assert!(parse_key_set(&vec![b' '; MAX_KEY_SET_BYTES + 1]).is_err());

    // Keys that are always stale: every token asks for a refresh.
    published.set(json!({ "keys": [jwk(KEY_A, "a")] }));
    let mut config = JwksConfig::new("https://issuer.example/jwks.json");
    config.max_age = Duration::ZERO;
    config.min_refresh_interval = Duration::ZERO;
    let stale = JwksVerifier::new(config, published.clone());
    stale.verify(&token).await.unwrap();
    published.set(json!("the provider is down"));
    stale.verify(&token).await.unwrap();
    assert_eq!(published.fetches(), 3);
}

#[test]
fn the_algorithm_list_takes_asymmetric_algorithms_only() {
    assert_eq!(
        parse_algorithms("RS256, ES256").unwrap(),
        vec![Algorithm::RS256, Algorithm::ES256]
    );
    assert!(parse_algorithms("HS256").is_err());
    assert!(parse_algorithms("none").is_err());
    assert!(parse_algorithms(" , ").is_err());
}
