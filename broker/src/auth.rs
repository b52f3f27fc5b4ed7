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

use std::sync::Arc;

use async_trait::async_trait;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::Serialize;
use serde_json::{Map, Value};
use unicode_properties::{GeneralCategory, GeneralCategoryGroup, UnicodeGeneralCategory};

use crate::domain::{UserId, now_secs};
use crate::settings;

pub use crate::settings::DEVELOPMENT_SECRET;

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

/// A [`Validation`] for one algorithm, with an optional required issuer and audience, and
/// `leeway_secs` of clock skew tolerated for `exp` and `nbf`.
pub fn validation(
    algorithm: Algorithm,
    issuer: Option<&str>,
    audience: Option<&str>,
    leeway_secs: u64,
) -> Validation {
    let mut validation = Validation::new(algorithm);
    validation.algorithms = vec![algorithm];
    validation.leeway = leeway_secs;
    validation.validate_nbf = true;
    // A configured `iss` or `aud` must also be present: jsonwebtoken only compares the
    // claims a token carries unless they are required.
    let mut required = vec!["exp", "sub"];
    if let Some(iss) = issuer {
        validation.set_issuer(&[iss]);
        required.push("iss");
    }
    match audience {
        Some(aud) => {
            validation.set_audience(&[aud]);
            required.push("aud");
        }
        None => validation.validate_aud = false,
    }
    validation.set_required_spec_claims(&required);
    validation
}

/// Verifies `token` with `key` under `validation`, then applies the rules jsonwebtoken leaves
/// to its caller (RFC 8725): no `crit`, registered claims of their registered types, a
/// printable bounded `sub`. The identity's authority ends when jsonwebtoken starts refusing
/// the token (it accepts it through the second `exp` plus the leeway), so a socket closes
/// when a request with the same token would be refused.
pub fn verify_jwt(
    token: &str,
    key: &DecodingKey,
    validation: &Validation,
) -> Result<Identity, AuthError> {
    check_unambiguous(token)?;
    let header = jsonwebtoken::decode_header(token)
        .map_err(|e| AuthError::invalid(format!("header: {e}")))?;
    check_header(&header)?;
    let claims = jsonwebtoken::decode::<Map<String, Value>>(token, key, validation)
        .map_err(|e| match e.kind() {
            ErrorKind::ExpiredSignature => AuthError::Expired,
            _ => AuthError::invalid(e.to_string()),
        })?
        .claims;
    let identity = check_claims(&claims)?;
    Ok(Identity {
        expires_at: identity.expires_at.saturating_add(validation.leeway + 1),
        ..identity
    })
}

/// Header rules that hold whatever the key: an unknown critical extension must be refused
/// (RFC 7515 §4.1.11), and the broker understands none.
pub fn check_header(header: &Header) -> Result<(), AuthError> {
    if header.crit.is_some() {
        return Err(AuthError::invalid("crit header present"));
    }
    Ok(())
}

/// Claim rules that hold whatever the key, run after the signature and `exp`/`nbf`/`iss`/
/// `aud` were checked by jsonwebtoken (which reads an ill-typed claim as an absent one).
pub fn check_claims(claims: &Map<String, Value>) -> Result<Identity, AuthError> {
    let numeric = |name: &str| -> Result<Option<u64>, AuthError> {
        match claims.get(name) {
            None => Ok(None),
            Some(value) => value
                .as_u64()
                .map(Some)
                .ok_or_else(|| AuthError::invalid(format!("{name} is not a NumericDate"))),
        }
    };
    let expires_at = numeric("exp")?.ok_or_else(|| AuthError::invalid("exp is missing"))?;
    numeric("nbf")?;
    numeric("iat")?;
    if let Some(iss) = claims.get("iss")
        && !iss.is_string()
    {
        return Err(AuthError::invalid("iss is not a string"));
    }
    match claims.get("aud") {
        None | Some(Value::String(_)) => {}
        Some(Value::Array(items)) if items.iter().all(Value::is_string) => {}
        Some(_) => return Err(AuthError::invalid("aud is not a string or list of strings")),
    }
    let sub = match claims.get("sub") {
        Some(Value::String(sub)) => sub,
        Some(_) => return Err(AuthError::invalid("sub is not a string")),
        None => return Err(AuthError::invalid("sub is missing")),
    };
    if let Some(problem) = user_id_problem(sub) {
        return Err(AuthError::invalid(format!("sub {problem}")));
    }
    // The roles the issuer grants (`"roles": ["backend"]`); a claim of another shape makes
    // the token invalid rather than role-less.
    let roles = match claims.get("roles") {
        None => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|r| r.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| AuthError::invalid("roles is not a list of strings"))?,
        Some(_) => return Err(AuthError::invalid("roles is not a list of strings")),
    };
    Ok(Identity {
        user: UserId::new(sub.clone()),
        roles,
        expires_at,
    })
}

/// What makes `id` unfit to be a user id, if anything: the rules a token's `sub` must
/// satisfy ([`check_claims`]): at least one visible character, at most
/// [`MAX_SUBJECT_BYTES`], no control character, no line or paragraph separator nor format
/// character (two ids that print alike must not be two users). Audiences of published
/// events are checked against them too ([`crate::publish::check_audience`]).
pub fn user_id_problem(id: &str) -> Option<String> {
    if !id.chars().any(is_visible) {
        return Some("has no visible character".to_owned());
    }
    if id.len() > MAX_SUBJECT_BYTES {
        return Some(format!(
            "has {} bytes, more than {MAX_SUBJECT_BYTES}",
            id.len()
        ));
    }
    if id.chars().any(char::is_control) {
        return Some("contains a control character".to_owned());
    }
    // Invisible, or breaking a line of a log or a header where the id is written.
    if id.chars().any(is_separator_or_format) {
        return Some("contains a line or paragraph separator or a format character".to_owned());
    }
    None
}

/// Whether `c` shows: a letter, mark, number, punctuation or symbol, not a space, separator,
/// control, format, private-use or unassigned code point.
fn is_visible(c: char) -> bool {
    !matches!(
        c.general_category_group(),
        GeneralCategoryGroup::Separator | GeneralCategoryGroup::Other
    )
}

/// Unicode's line and paragraph separators (U+2028, U+2029) and its format characters
/// (zero-width spaces and joiners, bidirectional controls, the byte order mark, ...).
fn is_separator_or_format(c: char) -> bool {
    matches!(
        c.general_category(),
        GeneralCategory::LineSeparator
            | GeneralCategory::ParagraphSeparator
            | GeneralCategory::Format
    )
}

/// Refuses a token whose header or claims give one key twice, at any depth: JSON leaves
/// such an object's meaning to the reader (jsonwebtoken takes the last), so a token that
/// says `"roles"` or `"alg"` twice may mean one thing to its issuer and another here.
pub fn check_unambiguous(token: &str) -> Result<(), AuthError> {
    use base64::Engine as _;
    let mut segments = token.split('.');
    for part in ["header", "claims"] {
        let Some(segment) = segments.next() else {
            return Err(AuthError::invalid(format!("no {part} segment")));
        };
        let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(segment)
            .map_err(|e| AuthError::invalid(format!("{part}: {e}")))?;
        let mut reader = serde_json::Deserializer::from_slice(&json);
        serde::Deserialize::deserialize(&mut reader)
            .map(|UniqueKeys| ())
            .map_err(|e| AuthError::invalid(format!("{part}: {e}")))?;
    }
    Ok(())
}

/// Any JSON value whose objects, at every depth, name each key once.
struct UniqueKeys;

impl<'de> serde::Deserialize<'de> for UniqueKeys {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(UniqueKeysVisitor)
    }
}

struct UniqueKeysVisitor;

impl<'de> serde::de::Visitor<'de> for UniqueKeysVisitor {
    type Value = UniqueKeys;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<UniqueKeys, A::Error> {
        let mut keys = std::collections::HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !keys.insert(key.clone()) {
                return Err(serde::de::Error::custom(format!("key {key:?} given twice")));
            }
            map.next_value::<UniqueKeys>()?;
        }
        Ok(UniqueKeys)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<UniqueKeys, A::Error> {
        while seq.next_element::<UniqueKeys>()?.is_some() {}
        Ok(UniqueKeys)
    }

    fn visit_bool<E>(self, _: bool) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }

    fn visit_i64<E>(self, _: i64) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }

    fn visit_u64<E>(self, _: u64) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }

    fn visit_f64<E>(self, _: f64) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }

    fn visit_str<E>(self, _: &str) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }

    fn visit_unit<E>(self) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
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
mod tests {
    use super::*;
    use serde_json::json;

    fn auth(issuer: Option<&str>, audience: Option<&str>) -> Authenticator {
        Authenticator::new(AuthConfig {
            secret: "s".repeat(32),
            issuer: issuer.map(Into::into),
            audience: audience.map(Into::into),
            leeway_secs: crate::auth::DEFAULT_LEEWAY_SECS,
        })
    }

    #[expect(
        clippy::needless_pass_by_value,
        reason = "callers build the value in the call"
    )]
    fn sign_with(header: Header, claims: Value) -> String {
        jsonwebtoken::encode(
            &header,
            &claims,
            &EncodingKey::from_secret("s".repeat(32).as_bytes()),
        )
        .unwrap()
    }

    fn sign(claims: Value) -> String {
        sign_with(Header::new(Algorithm::HS256), claims)
    }

    fn exp() -> u64 {
        now_secs() + 60
    }

    /// The client-facing text of a refusal: one of three fixed phrases.
    async fn refusal(a: &Authenticator, token: &str) -> String {
        let e = a.authenticate(token).await.unwrap_err();
        let shown = e.to_string();
        assert!(
            ["invalid token", "token expired", "missing token"].contains(&shown.as_str()),
            "{shown}"
        );
        shown
    }

    #[tokio::test]
    async fn a_minted_token_verifies_to_its_subject_and_expiry() {
        let a = auth(Some("app"), Some("broker"));
        let identity = a.authenticate(&a.mint("user-a", 60)).await.unwrap();
        assert_eq!(identity.user, UserId::new("user-a"));
        // Refused from the second after `exp` plus the leeway.
        let end = 60 + DEFAULT_LEEWAY_SECS + 1;
        assert!((now_secs() + end - 1..=now_secs() + end).contains(&identity.expires_at));
        assert_eq!(
            a.verify_bearer(Some(&format!("Bearer {}", a.mint("u", 60))))
                .await,
            Ok(UserId::new("u"))
        );
    }

    #[tokio::test]
    async fn wrong_secret_issuer_audience_expiry_and_alg_none_are_rejected() {
        let a = auth(Some("app"), Some("broker"));
        let other_secret = Authenticator::new(AuthConfig {
            secret: "x".repeat(32),
            issuer: Some("app".into()),
            audience: Some("broker".into()),
            leeway_secs: crate::auth::DEFAULT_LEEWAY_SECS,
        });
        assert_eq!(
            refusal(&a, &other_secret.mint("u", 60)).await,
            "invalid token"
        );
        let evil = auth(Some("evil"), Some("broker")).mint("u", 60);
        assert_eq!(refusal(&a, &evil).await, "invalid token");
        let other_aud = auth(Some("app"), Some("other")).mint("u", 60);
        assert_eq!(refusal(&a, &other_aud).await, "invalid token");
        // Configured claims must be present, not only equal when present.
        assert!(
            a.verify(&auth(Some("app"), None).mint("u", 60))
                .await
                .is_err()
        );
        assert!(
            a.verify(&auth(None, Some("broker")).mint("u", 60))
                .await
                .is_err()
        );

        let expired =
            sign(json!({"sub": "u", "exp": now_secs() - 3600, "iss": "app", "aud": "broker"}));
        assert_eq!(refusal(&a, &expired).await, "token expired");
        assert_eq!(a.authenticate(&expired).await, Err(AuthError::Expired));

        // {"alg":"none"} with the same claims and no signature.
        let none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJ1IiwiZXhwIjo0MTAyNDQ0ODAwfQ.";
        assert_eq!(refusal(&auth(None, None), none).await, "invalid token");
        assert_eq!(a.verify("").await, Err(AuthError::MissingToken));
        assert_eq!(a.verify_bearer(None).await, Err(AuthError::MissingToken));
        assert!(a.verify_bearer(Some("Basic abc")).await.is_err());
    }

    #[tokio::test]
    async fn an_audience_list_is_accepted_and_a_future_nbf_is_not() {
        let a = auth(None, Some("broker"));
        let exp = exp();
        let listed = sign(json!({"sub": "u", "exp": exp, "aud": ["other", "broker"]}));
        assert_eq!(a.verify(&listed).await, Ok(UserId::new("u")));
        let elsewhere = sign(json!({"sub": "u", "exp": exp, "aud": ["other"]}));
        assert!(a.verify(&elsewhere).await.is_err());
        let early = sign(json!({"sub": "u", "exp": exp, "aud": "broker", "nbf": exp}));
        assert!(a.verify(&early).await.is_err());
    }

    #[tokio::test]
    async fn a_crit_header_is_rejected() {
        let a = auth(None, None);
        let mut header = Header::new(Algorithm::HS256);
        header.crit = Some(vec!["exp-ext".into()]);
        let token = sign_with(header, json!({"sub": "u", "exp": exp()}));
        assert_eq!(refusal(&a, &token).await, "invalid token");
        assert!(
            a.authenticate(&token)
                .await
                .unwrap_err()
                .detail()
                .contains("crit")
        );
    }

    #[tokio::test]
    async fn an_issuer_list_is_rejected_even_when_it_names_the_issuer() {
        let a = auth(Some("app"), None);
        let listed = sign(json!({"sub": "u", "exp": exp(), "iss": ["evil", "app"]}));
        assert_eq!(refusal(&a, &listed).await, "invalid token");
        let number = sign(json!({"sub": "u", "exp": exp(), "iss": 7}));
        assert_eq!(refusal(&auth(None, None), &number).await, "invalid token");
        let plain = sign(json!({"sub": "u", "exp": exp(), "iss": "app"}));
        assert_eq!(a.verify(&plain).await, Ok(UserId::new("u")));
    }

    #[tokio::test]
    async fn blank_control_character_and_oversized_subjects_are_rejected() {
        let a = auth(None, None);
        for sub in [
            json!(" "),
            json!(""),
            json!("\t\n"),
            json!("a\u{0}b"),
            json!("a\nb"),
            json!("a\u{7f}"),
            json!("x".repeat(MAX_SUBJECT_BYTES + 1)),
            json!(12),
            json!(["u"]),
            // Nothing visible: a zero-width space, a no-break space, a byte order mark.
            json!("\u{200b}"),
            json!("\u{a0}\u{feff}"),
            // A line or paragraph separator, or a format character, anywhere.
            json!("alice\u{2028}"),
            json!("al\u{2029}ice"),
            json!("al\u{200d}ice"),
            json!("\u{202e}ecila"),
        ] {
            let token = sign(json!({"sub": sub, "exp": exp()}));
            assert_eq!(refusal(&a, &token).await, "invalid token", "sub {sub}");
        }
        let longest = "é".repeat(MAX_SUBJECT_BYTES / 2);
        let token = sign(json!({"sub": longest, "exp": exp()}));
        assert_eq!(a.verify(&token).await, Ok(UserId::new(longest)));
    }

    #[tokio::test]
    async fn visible_unicode_subjects_are_accepted() {
        let a = auth(None, None);
        for sub in ["ä", "名前", "user 1", "a-b_c.d@e"] {
            let token = sign(json!({"sub": sub, "exp": exp()}));
            assert_eq!(a.verify(&token).await, Ok(UserId::new(sub)), "{sub}");
        }
    }

    /// A token signed over the JSON texts given, as they are.
    fn sign_texts(header: &str, claims: &str) -> String {
        use base64::Engine as _;
        let b64 = |t: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(t);
        let signed = format!("{}.{}", b64(header), b64(claims));
        let key = EncodingKey::from_secret("s".repeat(32).as_bytes());
        let signature =
            jsonwebtoken::crypto::sign(signed.as_bytes(), &key, Algorithm::HS256).unwrap();
        format!("{signed}.{signature}")
    }

    #[tokio::test]
    async fn a_key_given_twice_in_the_header_or_the_claims_is_refused() {
        let a = auth(None, None);
        let header = r#"{"alg":"HS256","typ":"JWT"}"#;
        let claims = format!(r#"{{"sub":"u","exp":{},"roles":["backend"]}}"#, exp());
        // The texts as written verify: the check reads them, not a re-encoding.
        let plain = sign_texts(header, &claims);
        assert_eq!(a.verify(&plain).await, Ok(UserId::new("u")));
        for (header, claims) in [
            (
                header.to_owned(),
                claims.replace(
                    r#""roles":["backend"]"#,
                    r#""roles":[],"roles":["backend"]"#,
                ),
            ),
            (
                header.to_owned(),
                claims.replace(r#""sub":"u""#, r#""sub":"u","sub":"admin""#),
            ),
            (
                r#"{"alg":"HS256","alg":"HS256"}"#.to_owned(),
                claims.clone(),
            ),
            (
                header.to_owned(),
                claims.replace("}", r#","x":{"a":1,"a":2}}"#),
            ),
        ] {
            let token = sign_texts(&header, &claims);
            assert_eq!(
                refusal(&a, &token).await,
                "invalid token",
                "{header} {claims}"
            );
        }
    }

    #[tokio::test]
    async fn ill_typed_exp_nbf_and_iat_are_rejected() {
        let a = auth(None, None);
        let later = exp();
        for claims in [
            json!({"sub": "u", "exp": later.to_string()}),
            json!({"sub": "u", "exp": -5}),
            json!({"sub": "u", "exp": null}),
            json!({"sub": "u", "exp": true}),
            json!({"sub": "u", "exp": [later]}),
            json!({"sub": "u"}),
            json!({"sub": "u", "exp": later, "nbf": "0"}),
            json!({"sub": "u", "exp": later, "nbf": -1}),
            json!({"sub": "u", "exp": later, "iat": "now"}),
        ] {
            let token = sign(claims.clone());
            assert_eq!(refusal(&a, &token).await, "invalid token", "{claims}");
        }
    }

    #[tokio::test]
    async fn malformed_and_oversized_tokens_say_only_invalid_token() {
        let a = auth(Some("app"), None);
        // A payload that is a JSON array: jsonwebtoken's message names its internal types.
        let array = format!(
            "eyJhbGciOiJIUzI1NiJ9.{}.c2ln",
            "WzEsMl0" // [1,2]
        );
        for token in [
            "garbage",
            "a.b.c",
            array.as_str(),
            "eyJhbGciOiJSUzUxMiJ9.e30.c2ln",
        ] {
            assert_eq!(refusal(&a, token).await, "invalid token", "{token}");
        }
        let huge = "a".repeat(MAX_TOKEN_BYTES + 1);
        assert_eq!(refusal(&a, &huge).await, "invalid token");
    }

    #[tokio::test]
    async fn an_app_verifier_replaces_the_default() {
        struct Fixed;
        #[async_trait]
        impl TokenVerifier for Fixed {
            async fn verify(&self, token: &str) -> Result<Identity, AuthError> {
                match token {
                    "let-me-in" => Ok(Identity {
                        user: UserId::new("fixed"),
                        roles: Vec::new(),
                        expires_at: u64::MAX,
                    }),
                    _ => Err(AuthError::invalid("not the fixed token")),
                }
            }
        }
        let a = Authenticator::with_verifier(Fixed);
        assert_eq!(a.verify("let-me-in").await, Ok(UserId::new("fixed")));
        assert_eq!(refusal(&a, "other").await, "invalid token");
        // A token of the default HS256 verifier means nothing to it.
        assert!(a.verify(&auth(None, None).mint("u", 60)).await.is_err());
    }

    #[tokio::test]
    async fn the_roles_claim_is_read_and_must_be_a_list_of_strings() {
        let a = auth(None, None);
        let backend = a
            .identify(&a.mint_with_roles("svc", 60, &["backend"]))
            .await
            .unwrap();
        assert_eq!(backend.roles, vec!["backend".to_owned()]);
        assert_eq!(
            a.identify(&a.mint("u", 60)).await.unwrap().roles,
            Vec::<String>::new()
        );
        for roles in [json!("backend"), json!([1]), json!({"a": "b"})] {
            let malformed = sign(json!({"sub": "u", "exp": exp(), "roles": roles}));
            assert!(matches!(
                a.identify(&malformed).await,
                Err(AuthError::InvalidToken(_))
            ));
        }
    }

    #[test]
    fn init_payload_token_forms() {
        assert_eq!(
            token_from_init_payload(Some(&json!({"token": "t"}))),
            Some("t")
        );
        assert_eq!(
            token_from_init_payload(Some(&json!({"authorization": "Bearer t"}))),
            Some("t")
        );
        assert_eq!(
            token_from_init_payload(Some(&json!({"Authorization": "bearer t"}))),
            Some("t")
        );
        assert_eq!(token_from_init_payload(Some(&json!({"other": 1}))), None);
        assert_eq!(token_from_init_payload(None), None);
    }
}
