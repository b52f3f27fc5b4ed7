//! JWT authentication behind one seam, [`TokenVerifier`]. The default verifier checks HS256
//! tokens signed with a shared secret ([`AuthConfig`]); an app supplies its own (for example
//! one that checks RS256 tokens of Cognito or Auth0 against their published keys) with
//! [`Authenticator::with_verifier`]. `sub` is the user id.
//!
//! Every verifier applies the same RFC 8725 rules through [`verify_jwt`]: one allowed
//! algorithm per key, `exp` required, no `crit` header (no extension is understood), claims
//! of the registered names must have their registered types (`iss` a string, `exp`/`nbf`/`iat`
//! non-negative integers), `iss` and `aud` checked whenever configured, and a `sub` that is a
//! printable id of at most [`MAX_SUBJECT_BYTES`]. Clients only ever learn "invalid token" or
//! "token expired"; the reason goes to the log.
//!
//! Tokens of an identity provider that signs with its private keys (Cognito, Auth0, Okta)
//! are checked by [`jwks::JwksVerifier`] against the provider's published key set: set
//! `JWT_JWKS_URL` and [`Authenticator::from_env`] chooses it.

pub mod jwks;
mod rules;

use std::sync::Arc;

use async_trait::async_trait;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::Serialize;
use serde_json::Value;

use crate::domain::{UserId, now_secs};
use crate::settings;

pub use crate::settings::DEVELOPMENT_SECRET;
pub use rules::{
    check_claims, check_header, check_unambiguous, user_id_problem, validation, verify_jwt,
};

/// The longest user id a token may carry: user ids become parts of storage keys.
pub const MAX_SUBJECT_BYTES: usize = 256;

/// Tokens longer than this are refused before any decoding.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Seconds of clock skew tolerated between the token's issuer and the broker by default
/// (`JWT_LEEWAY_SECS`): a token's authority ends this long after its `exp`.
pub const DEFAULT_LEEWAY_SECS: u64 = 5;

/// Why a token was refused. `Display` is all a client sees; [`AuthError::detail`] is for the
/// log.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    /// No token was presented where one is required.
    #[error("missing token")]
    MissingToken,
    /// The token's `exp` has passed, by more than the leeway ([`AuthConfig::leeway_secs`]).
    #[error("token expired")]
    Expired,
    /// The token is malformed, badly signed or breaks a rule; the string says which, for the log.
    #[error("invalid token")]
    InvalidToken(String),
}

impl AuthError {
    /// [`AuthError::InvalidToken`] with `detail` for the log.
    pub fn invalid(detail: impl Into<String>) -> Self {
        Self::InvalidToken(detail.into())
    }

    /// What went wrong, for the log only.
    pub fn detail(&self) -> &str {
        match self {
            Self::MissingToken => "missing token",
            Self::Expired => "token expired",
            Self::InvalidToken(detail) => detail,
        }
    }
}

/// Who a verified token speaks for, the roles its `roles` claim grants, and until when
/// (`exp`, seconds since the epoch): the connection that presented it loses its authority at
/// that second.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The token's `sub`.
    pub user: UserId,
    /// The token's `roles` claim, empty without one.
    pub roles: Vec<String>,
    /// The first second (since the Unix epoch) the token is refused: the second after its
    /// `exp` plus the verifier's leeway ([`verify_jwt`] works it out). From then on a
    /// connection is closed with 4403 and no request runs, whatever the path.
    pub expires_at: u64,
}

/// Verifies one bearer token. Implement it to bring your own identity provider; use
/// [`verify_jwt`] inside so the RFC 8725 rules hold for your keys too.
#[async_trait]
pub trait TokenVerifier: Send + Sync + 'static {
    /// The identity `token` speaks for, or why it is refused.
    async fn verify(&self, token: &str) -> Result<Identity, AuthError>;
}

/// The settings of the default verifier, [`Hs256Verifier`].
#[derive(Clone, Debug)]
pub struct AuthConfig {
    /// The shared HS256 secret tokens are signed with (`JWT_SECRET`).
    pub secret: String,
    /// The `iss` every token must carry (`JWT_ISSUER`), if set.
    pub issuer: Option<String>,
    /// The `aud` every token must carry (`JWT_AUDIENCE`), if set.
    pub audience: Option<String>,
    /// Seconds of clock skew tolerated (`JWT_LEEWAY_SECS`, [`DEFAULT_LEEWAY_SECS`]): a token
    /// is accepted until its `exp` plus this, on HTTP and WebSocket alike, and a socket is
    /// closed then.
    pub leeway_secs: u64,
}

impl AuthConfig {
    /// Reads `JWT_SECRET`, `JWT_ISSUER`, `JWT_AUDIENCE`, `JWT_LEEWAY_SECS` ([`crate::settings`]). Without a
    /// secret (unset or empty), `fallback_secret` is used if given (the local mode), else it
    /// is an error.
    pub fn from_env(fallback_secret: Option<&str>) -> Result<Self, AuthError> {
        // Free text: never malformed, so the errors below cannot occur.
        let text = |var: &settings::Var<String>| var.get().ok().flatten();
        let secret = text(&settings::JWT_SECRET)
            .or_else(|| fallback_secret.map(str::to_owned))
            .ok_or_else(|| AuthError::invalid("JWT_SECRET is not set or empty"))?;
        Ok(Self {
            secret,
            issuer: text(&settings::JWT_ISSUER),
            audience: text(&settings::JWT_AUDIENCE),
            leeway_secs: settings::JWT_LEEWAY_SECS
                .value()
                .map_err(|e| AuthError::invalid(e.to_string()))?,
        })
    }

    /// The validation every verifier starts from: `alg` pinned, `exp` and `sub` required,
    /// `nbf` checked, a configured `iss` or `aud` required and compared, the leeway applied.
    pub fn validation(&self, algorithm: Algorithm) -> Validation {
        validation(
            algorithm,
            self.issuer.as_deref(),
            self.audience.as_deref(),
            self.leeway_secs,
        )
    }
}

/// The default verifier: HS256 with a shared secret.
pub struct Hs256Verifier {
    decoding: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for Hs256Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key: it is the shared secret.
        f.debug_struct("Hs256Verifier")
            .field("issuer", &self.validation.iss)
            .field("audience", &self.validation.aud)
            .finish_non_exhaustive()
    }
}

impl Hs256Verifier {
    /// A verifier for tokens signed with `config`'s secret, checking its issuer and audience.
    pub fn new(config: &AuthConfig) -> Self {
        Self {
            decoding: DecodingKey::from_secret(config.secret.as_bytes()),
            validation: config.validation(Algorithm::HS256),
        }
    }
}

#[async_trait]
impl TokenVerifier for Hs256Verifier {
    async fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        verify_jwt(token, &self.decoding, &self.validation)
    }
}

/// What a minted token says.
#[derive(Debug, Serialize)]
struct Claims {
    sub: String,
    exp: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    roles: Vec<String>,
}

/// Verifies tokens through its [`TokenVerifier`], logs why one was refused. Cheap to clone.
#[derive(Clone)]
pub struct Authenticator {
    verifier: Arc<dyn TokenVerifier>,
    /// The HS256 configuration, when this is the default verifier: what [`Self::mint`] signs
    /// with.
    signing: Option<AuthConfig>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let signing = self.signing.as_ref();
        f.debug_struct("Authenticator")
            .field("issuer", &signing.map(|c| &c.issuer))
            .field("audience", &signing.map(|c| &c.audience))
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// The default: HS256 tokens signed with `config.secret`.
    pub fn new(config: AuthConfig) -> Self {
        Self {
            verifier: Arc::new(Hs256Verifier::new(&config)),
            signing: Some(config),
        }
    }

    /// The verifier the environment asks for: the key set at `JWT_JWKS_URL` when it is set
    /// (with the `jwks` feature), else HS256 with `JWT_SECRET`, or `fallback_secret` when
    /// that is unset too (the local mode's development secret).
    pub fn from_env(fallback_secret: Option<&str>) -> Result<Self, crate::ConfigError> {
        match jwks::JwksConfig::from_env()? {
            Some(config) => Self::from_key_set(config),
            None => Ok(Self::new(AuthConfig::from_env(fallback_secret)?)),
        }
    }

    /// Tokens signed by the keys published at `config.url`.
    #[cfg(feature = "jwks")]
    pub fn from_key_set(config: jwks::JwksConfig) -> Result<Self, crate::ConfigError> {
        let source = jwks::HttpKeySetSource::new(&config.url)?;
        Ok(Self::with_verifier(jwks::JwksVerifier::new(config, source)))
    }

    /// Without the `jwks` feature there is no HTTP client to fetch a key set with.
    #[cfg(not(feature = "jwks"))]
    pub fn from_key_set(config: jwks::JwksConfig) -> Result<Self, crate::ConfigError> {
        Err(crate::ConfigError::Invalid {
            name: "JWT_JWKS_URL".into(),
            value: config.url,
            reason: "this build has no key set client (the broker's `jwks` feature)".into(),
        })
    }

    /// Whether tokens can be minted here: the HS256 default, not a key set's verifier.
    pub fn can_mint(&self) -> bool {
        self.signing.is_some()
    }

    /// An app's own verifier (RS256 with a JWKS, an opaque-token lookup, ...).
    pub fn with_verifier(verifier: impl TokenVerifier) -> Self {
        Self {
            verifier: Arc::new(verifier),
            signing: None,
        }
    }

    /// Verifies a token: who it speaks for and until when.
    pub async fn authenticate(&self, token: &str) -> Result<Identity, AuthError> {
        let token = token.trim();
        if token.is_empty() {
            return Err(AuthError::MissingToken);
        }
        let result = if token.len() > MAX_TOKEN_BYTES {
            Err(AuthError::invalid(format!(
                "token has {} bytes, more than {MAX_TOKEN_BYTES}",
                token.len()
            )))
        } else {
            self.verifier.verify(token).await
        };
        if let Err(e) = &result {
            tracing::info!(reason = e.detail(), "token refused");
        }
        result
    }

    /// [`Self::authenticate`]: the same, under the name HTTP handlers know it by.
    pub async fn identify(&self, token: &str) -> Result<Identity, AuthError> {
        self.authenticate(token).await
    }

    /// [`Self::authenticate_bearer`], under the name HTTP handlers know it by.
    pub async fn identify_bearer(&self, header: Option<&str>) -> Result<Identity, AuthError> {
        self.authenticate_bearer(header).await
    }

    /// Verifies a token and returns only its user.
    pub async fn verify(&self, token: &str) -> Result<UserId, AuthError> {
        self.authenticate(token).await.map(|identity| identity.user)
    }

    /// Verifies an `Authorization` header value (`Bearer <jwt>`).
    pub async fn authenticate_bearer(&self, header: Option<&str>) -> Result<Identity, AuthError> {
        let header = header.ok_or(AuthError::MissingToken)?;
        let token = strip_bearer(header)
            .ok_or_else(|| AuthError::invalid("expected \"Bearer <token>\""))?;
        self.authenticate(token).await
    }

    /// [`Self::authenticate_bearer`], the user only.
    pub async fn verify_bearer(&self, header: Option<&str>) -> Result<UserId, AuthError> {
        self.authenticate_bearer(header)
            .await
            .map(|identity| identity.user)
    }

    /// Mints a token for `user`, valid for `ttl_secs`, with the configured issuer and
    /// audience. For development and tests: production tokens come from the app's backend.
    ///
    /// # Panics
    /// On an authenticator made [`Self::with_verifier`]: it holds no key to sign with.
    pub fn mint(&self, user: &str, ttl_secs: u64) -> String {
        self.mint_with_roles(user, ttl_secs, &[])
    }

    /// [`Authenticator::mint`] with a `roles` claim.
    ///
    /// # Panics
    /// As [`Self::mint`].
    pub fn mint_with_roles(&self, user: &str, ttl_secs: u64, roles: &[&str]) -> String {
        let config = self
            .signing
            .as_ref()
            .expect("only the HS256 authenticator can mint tokens");
        let claims = Claims {
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
            sub: user.to_owned(),
            exp: now_secs() + ttl_secs,
            iss: config.issuer.clone(),
            aud: config.audience.clone(),
        };
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(config.secret.as_bytes()),
        )
        .expect("HS256 signing of plain claims cannot fail")
    }
}

fn strip_bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token)
}

/// The token a `connection_init` payload carries: `{"token": "..."}` or
/// `{"authorization": "Bearer ..."}` (also `Authorization`, as some clients send it).
pub fn token_from_init_payload(payload: Option<&Value>) -> Option<&str> {
    let payload = payload?.as_object()?;
    if let Some(token) = payload.get("token").and_then(Value::as_str) {
        return Some(token);
    }
    ["authorization", "Authorization"]
        .iter()
        .find_map(|k| payload.get(*k).and_then(Value::as_str))
        .and_then(strip_bearer)
}

impl From<AuthError> for crate::ConfigError {
    fn from(error: AuthError) -> Self {
        Self::Auth(Box::new(error))
    }
}

#[cfg(test)]
mod tests;
