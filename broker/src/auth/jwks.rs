//! Tokens signed by an identity provider's private keys (Cognito, Auth0, Okta, your own),
//! verified against the public keys it publishes as a JSON Web Key Set.
//!
//! [`JwksVerifier`] keeps the keys in memory and asks its [`KeySetSource`] again only when a
//! token names a key it does not know (the provider rotated its keys) or the set is older than
//! [`JwksConfig::max_age`]; refreshes for unknown keys are at most one per
//! [`JwksConfig::min_refresh_interval`], so tokens with made-up `kid`s cannot make it fetch on
//! every request. What a token may use is decided by the verifier, never by the token:
//! - the algorithm must be one of [`JwksConfig::algorithms`] (RS256 by default) and never a
//!   symmetric one, so a public key can never be used as an HMAC secret;
//! - the token must name its key (`kid`), and that key must be a public key of a matching type
//!   whose own `alg`, `use` and `key_ops`, when present, allow verifying that algorithm;
//! - then [`verify_jwt`] applies the RFC 8725 rules every verifier shares.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, KeyAlgorithm, KeyOperations, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;
use tokio::sync::{Mutex, RwLock};

use super::{AuthError, Identity, TokenVerifier, check_header, validation, verify_jwt};
use crate::ConfigError;
use crate::settings;

/// The largest key set accepted from a source: providers publish a handful of keys.
pub const MAX_KEY_SET_BYTES: usize = 64 * 1024;

/// The most keys kept from one key set.
pub const MAX_KEYS: usize = 32;

/// How soon a failed or stale key set is fetched again.
const RETRY_INTERVAL: Duration = Duration::from_secs(1);

/// The longest `kid` looked up.
const MAX_KID_BYTES: usize = 256;

/// Where a key set comes from: an HTTPS endpoint on AWS ([`HttpKeySetSource`] with the `jwks`
/// feature), anything else in tests or for providers with another distribution.
#[async_trait]
pub trait KeySetSource: Send + Sync + 'static {
    /// The key set document (`{"keys": [...]}`), at most [`MAX_KEY_SET_BYTES`] long. The error
    /// is for the log.
    async fn fetch(&self) -> Result<Vec<u8>, String>;
}

/// What a [`JwksVerifier`] accepts.
#[derive(Clone, Debug)]
pub struct JwksConfig {
    /// The key set's address (`https://cognito-idp.{region}.amazonaws.com/{pool}/.well-known/jwks.json`).
    pub url: String,
    /// The `iss` every token must carry, when set (strongly advised with a shared provider).
    pub issuer: Option<String>,
    /// The `aud` every token must carry, when set.
    pub audience: Option<String>,
    /// The algorithms accepted; asymmetric ones only.
    pub algorithms: Vec<Algorithm>,
    /// Seconds of clock skew tolerated (`JWT_LEEWAY_SECS`), as [`super::AuthConfig::leeway_secs`].
    pub leeway_secs: u64,
    /// Keys older than this are fetched again before use.
    pub max_age: Duration,
    /// At most one refresh for an unknown `kid` per this interval.
    pub min_refresh_interval: Duration,
}

impl JwksConfig {
    /// A configuration for `url` with the defaults: RS256, keys kept an hour, a refresh for an
    /// unknown key at most every 30 seconds.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            issuer: None,
            audience: None,
            algorithms: settings::JWT_ALGORITHMS.default_value(),
            leeway_secs: settings::JWT_LEEWAY_SECS.default_value(),
            max_age: Duration::from_secs(3600),
            min_refresh_interval: Duration::from_secs(30),
        }
    }

    /// Reads `JWT_JWKS_URL` (`None` when unset: the HS256 secret is used), `JWT_ISSUER`,
    /// `JWT_AUDIENCE`, `JWT_ALGORITHMS` (a comma-separated list, default `RS256`) and
    /// `JWT_LEEWAY_SECS`, as
    /// declared in [`crate::settings`].
    pub fn from_env() -> Result<Option<Self>, ConfigError> {
        let Some(url) = settings::JWT_JWKS_URL.get()? else {
            return Ok(None);
        };
        let mut config = Self::new(url);
        config.issuer = settings::JWT_ISSUER.get()?;
        config.audience = settings::JWT_AUDIENCE.get()?;
        config.algorithms = settings::JWT_ALGORITHMS.value()?;
        config.leeway_secs = settings::JWT_LEEWAY_SECS.value()?;
        Ok(Some(config))
    }
}

/// A usable verification key and the one algorithm it verifies, if its JWK names one.
struct Key {
    decoding: DecodingKey,
    algorithm: Option<Algorithm>,
    parameters: KeyType,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum KeyType {
    Rsa,
    Ec,
    Okp,
}

struct KeySet {
    keys: HashMap<String, Key>,
    fetched_at: Instant,
}

/// Verifies tokens against a published key set; see the [module](self) for the rules.
pub struct JwksVerifier {
    config: JwksConfig,
    source: Box<dyn KeySetSource>,
    keys: RwLock<Option<KeySet>>,
    /// Held while fetching, so concurrent misses make one request; remembers the last attempt.
    refresh: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for JwksVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksVerifier")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl JwksVerifier {
    /// A verifier fetching from `source`; no request is made until the first token.
    pub fn new(config: JwksConfig, source: impl KeySetSource) -> Self {
        Self {
            config,
            source: Box::new(source),
            keys: RwLock::new(None),
            refresh: Mutex::new(None),
        }
    }

    /// Looks `kid` up for `algorithm`, fetching the key set when it is missing, stale, or
    /// does not know `kid` (within the refresh limit).
    async fn key_for<T>(
        &self,
        kid: &str,
        algorithm: Algorithm,
        use_key: impl Fn(&Key) -> Result<T, AuthError>,
    ) -> Result<T, AuthError> {
        let fresh = |set: &KeySet| set.fetched_at.elapsed() < self.config.max_age;
        {
            let keys = self.keys.read().await;
            if let Some(set) = keys.as_ref().filter(|set| fresh(set))
                && let Some(key) = set.keys.get(kid)
            {
                return check_key(key, algorithm).and_then(|()| use_key(key));
            }
        }
        self.refresh(|set| set.is_some_and(|s| fresh(s) && s.keys.contains_key(kid)))
            .await;
        let keys = self.keys.read().await;
        let set = keys
            .as_ref()
            .ok_or_else(|| AuthError::invalid("the key set could not be fetched"))?;
        let key = set
            .keys
            .get(kid)
            .ok_or_else(|| AuthError::invalid(format!("no key {kid:?} in the key set")))?;
        check_key(key, algorithm).and_then(|()| use_key(key))
    }

    /// Fetches the key set unless `satisfied` already holds (another caller fetched it while
    /// this one waited) or the last attempt was less than the minimum interval ago while a
    /// fresh set is held. A failed fetch keeps the keys held.
    async fn refresh(&self, satisfied: impl Fn(Option<&KeySet>) -> bool) {
        let mut last_attempt = self.refresh.lock().await;
        let has_fresh_set = {
            let keys = self.keys.read().await;
            if satisfied(keys.as_ref()) {
                return;
            }
            keys.as_ref()
                .is_some_and(|set| set.fetched_at.elapsed() < self.config.max_age)
        };
        // With fresh keys held, a miss is a rotation or a made-up `kid`: refresh rarely. Without
        // them (never fetched, failed, or stale), retry sooner, but still not per request.
        let interval = if has_fresh_set {
            self.config.min_refresh_interval
        } else {
            self.config.min_refresh_interval.min(RETRY_INTERVAL)
        };
        if last_attempt.is_some_and(|at| at.elapsed() < interval) {
            return;
        }
        *last_attempt = Some(Instant::now());
        match self
            .source
            .fetch()
            .await
            .and_then(|body| parse_key_set(&body))
        {
            Ok(keys) => {
                tracing::info!(url = %self.config.url, keys = keys.len(), "key set fetched");
                *self.keys.write().await = Some(KeySet {
                    keys,
                    fetched_at: Instant::now(),
                });
            }
            Err(reason) => {
                tracing::warn!(url = %self.config.url, reason, "key set fetch failed");
            }
        }
    }
}

#[async_trait]
impl TokenVerifier for JwksVerifier {
    async fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| AuthError::invalid(format!("header: {e}")))?;
        check_header(&header)?;
        if !self.config.algorithms.contains(&header.alg) {
            return Err(AuthError::invalid(format!(
                "algorithm {:?} is not accepted",
                header.alg
            )));
        }
        let kid = header
            .kid
            .as_deref()
            .ok_or_else(|| AuthError::invalid("the token names no key (kid)"))?;
        if kid.len() > MAX_KID_BYTES {
            return Err(AuthError::invalid("kid is too long"));
        }
        let validation = validation(
            header.alg,
            self.config.issuer.as_deref(),
            self.config.audience.as_deref(),
            self.config.leeway_secs,
        );
        self.key_for(kid, header.alg, |key| {
            verify_jwt(token, &key.decoding, &validation)
        })
        .await
    }
}

/// Whether `key` may verify `algorithm`: its type fits, and its own `alg` names it if set.
fn check_key(key: &Key, algorithm: Algorithm) -> Result<(), AuthError> {
    let fits = match algorithm {
        Algorithm::RS256
        | Algorithm::RS384
        | Algorithm::RS512
        | Algorithm::PS256
        | Algorithm::PS384
        | Algorithm::PS512 => key.parameters == KeyType::Rsa,
        Algorithm::ES256 | Algorithm::ES384 => key.parameters == KeyType::Ec,
        Algorithm::EdDSA => key.parameters == KeyType::Okp,
        // Symmetric algorithms, and any algorithm a later jsonwebtoken adds: no key fits.
        _ => false,
    };
    if !fits || key.algorithm.is_some_and(|a| a != algorithm) {
        return Err(AuthError::invalid(format!(
            "the key does not verify {algorithm:?}"
        )));
    }
    Ok(())
}

/// The usable keys of a key set document: public verification keys with a `kid`. Keys of
/// other kinds (encryption keys, symmetric keys, unknown types) are left out one by one, so a
/// provider adding a key of a new kind does not stop the others from working.
fn parse_key_set(body: &[u8]) -> Result<HashMap<String, Key>, String> {
    if body.len() > MAX_KEY_SET_BYTES {
        return Err(format!(
            "the key set has {} bytes, more than {MAX_KEY_SET_BYTES}",
            body.len()
        ));
    }
    let document: Value =
        serde_json::from_slice(body).map_err(|e| format!("the key set is not JSON: {e}"))?;
    let entries = document
        .get("keys")
        .and_then(Value::as_array)
        .ok_or("the key set has no \"keys\" list")?;
    let mut keys = HashMap::new();
    for entry in entries {
        if keys.len() == MAX_KEYS {
            tracing::warn!("the key set has more than {MAX_KEYS} keys; the rest are ignored");
            break;
        }
        let Ok(jwk) = serde_json::from_value::<Jwk>(entry.clone()) else {
            continue;
        };
        if let Some((kid, key)) = usable_key(&jwk) {
            keys.insert(kid, key);
        }
    }
    Ok(keys)
}

fn usable_key(jwk: &Jwk) -> Option<(String, Key)> {
    let common = &jwk.common;
    let kid = common.key_id.clone()?;
    if common
        .public_key_use
        .as_ref()
        .is_some_and(|u| *u != PublicKeyUse::Signature)
    {
        return None;
    }
    if common
        .key_operations
        .as_ref()
        .is_some_and(|ops| !ops.contains(&KeyOperations::Verify))
    {
        return None;
    }
    let parameters = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => KeyType::Rsa,
        AlgorithmParameters::EllipticCurve(_) => KeyType::Ec,
        AlgorithmParameters::OctetKeyPair(_) => KeyType::Okp,
        // A symmetric key published in a key set is a secret gone public: never use it; nor a
        // key of a type this code does not know.
        _ => return None,
    };
    let algorithm = match common.key_algorithm {
        None => None,
        Some(alg) => Some(key_algorithm(alg)?),
    };
    let decoding = DecodingKey::from_jwk(jwk).ok()?;
    Some((
        kid,
        Key {
            decoding,
            algorithm,
            parameters,
        },
    ))
}

/// The signature algorithm a JWK's `alg` names; `None` for encryption algorithms.
fn key_algorithm(alg: KeyAlgorithm) -> Option<Algorithm> {
    alg.to_string().parse().ok()
}

#[cfg(feature = "jwks")]
pub use http::HttpKeySetSource;

#[cfg(feature = "jwks")]
mod http {
    use std::time::Duration;

    use async_trait::async_trait;
    use http_body_util::{BodyExt, Empty, Limited};
    use hyper::body::Bytes;
    use hyper_rustls::HttpsConnector;
    use hyper_util::client::legacy::Client;
    use hyper_util::client::legacy::connect::HttpConnector;
    use hyper_util::rt::TokioExecutor;

    use super::{KeySetSource, MAX_KEY_SET_BYTES};
    use crate::ConfigError;

    /// How long one fetch of the key set may take, connection included.
    const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

    /// A key set fetched with a GET over HTTPS (plain HTTP only for loopback addresses, for
    /// tests and the local mode).
    pub struct HttpKeySetSource {
        uri: hyper::Uri,
        client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
    }

    impl std::fmt::Debug for HttpKeySetSource {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("HttpKeySetSource")
                .field("uri", &self.uri)
                .finish_non_exhaustive()
        }
    }

    impl HttpKeySetSource {
        /// A source fetching `url`, which must be `https` (or `http` on a loopback address).
        pub fn new(url: &str) -> Result<Self, ConfigError> {
            let invalid = |reason: &str| ConfigError::Invalid {
                name: "JWT_JWKS_URL".into(),
                value: url.into(),
                reason: reason.into(),
            };
            let uri: hyper::Uri = url.parse().map_err(|_| invalid("not a URL"))?;
            let loopback = matches!(uri.host(), Some("127.0.0.1" | "localhost" | "[::1]"));
            match uri.scheme_str() {
                Some("https") => {}
                Some("http") if loopback => {}
                _ => return Err(invalid("the key set must be fetched over https")),
            }
            let connector = hyper_rustls::HttpsConnectorBuilder::new()
                .with_provider_and_native_roots(rustls::crypto::ring::default_provider())
                .map_err(|e| invalid(&format!("no TLS root certificates: {e}")))?
                .https_or_http()
                .enable_http1()
                .build();
            let client = Client::builder(TokioExecutor::new()).build(connector);
            Ok(Self { uri, client })
        }
    }

    #[async_trait]
    impl KeySetSource for HttpKeySetSource {
        async fn fetch(&self) -> Result<Vec<u8>, String> {
            let fetch = async {
                let response = self
                    .client
                    .get(self.uri.clone())
                    .await
                    .map_err(|e| format!("GET failed: {e}"))?;
                if !response.status().is_success() {
                    return Err(format!("GET answered {}", response.status()));
                }
                let body = Limited::new(response.into_body(), MAX_KEY_SET_BYTES)
                    .collect()
                    .await
                    .map_err(|e| format!("reading the key set: {e}"))?;
                Ok(body.to_bytes().to_vec())
            };
            tokio::time::timeout(FETCH_TIMEOUT, fetch)
                .await
                .map_err(|_| format!("no key set within {FETCH_TIMEOUT:?}"))?
        }
    }
}

#[cfg(test)]
mod tests;
