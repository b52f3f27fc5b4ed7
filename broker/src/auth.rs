//! JWT authentication. Tokens are issued by the app's backend and signed with a shared HS256
//! secret; `sub` is the user id. RFC 8725: one allowed algorithm, `exp` required, `iss` and
//! `aud` checked whenever they are configured.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::domain::{UserId, now_secs};

/// The secret the local mode uses when `JWT_SECRET` is not set. Never use it on AWS: the SAM
/// template requires a secret of its own.
pub const DEVELOPMENT_SECRET: &str = "local-development-secret-change-me-0123456789";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("missing token")]
    MissingToken,
    #[error("invalid token: {0}")]
    InvalidToken(String),
}

#[derive(Clone, Debug)]
pub struct AuthConfig {
    pub secret: String,
    pub issuer: Option<String>,
    pub audience: Option<String>,
}

impl AuthConfig {
    /// Reads `JWT_SECRET`, `JWT_ISSUER`, `JWT_AUDIENCE`. Without a secret, `fallback_secret`
    /// is used if given (the local mode), else it is an error.
    pub fn from_env(fallback_secret: Option<&str>) -> Result<Self, AuthError> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let secret = var("JWT_SECRET")
            .or_else(|| fallback_secret.map(str::to_owned))
            .ok_or_else(|| AuthError::InvalidToken("JWT_SECRET is not set".into()))?;
        Ok(Self {
            secret,
            issuer: var("JWT_ISSUER"),
            audience: var("JWT_AUDIENCE"),
        })
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

/// What is read from a verified token. `iss` and `aud` are checked by the validation and not
/// read here, so an `aud` list (allowed by RFC 7519) decodes as well as a single string.
#[derive(Debug, Deserialize)]
struct Subject {
    sub: String,
    /// The roles the issuer grants (`"roles": ["backend"]`); a claim of another shape makes
    /// the token invalid rather than role-less.
    #[serde(default)]
    roles: Vec<String>,
}

/// Who a verified token speaks for, and the roles its `roles` claim grants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub user: UserId,
    pub roles: Vec<String>,
}

/// Verifies tokens. Cheap to clone.
#[derive(Clone)]
pub struct Authenticator {
    config: AuthConfig,
    decoding: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("issuer", &self.config.issuer)
            .field("audience", &self.config.audience)
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    pub fn new(config: AuthConfig) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256];
        validation.leeway = 30;
        validation.validate_nbf = true;
        // A configured `iss` or `aud` must also be present: jsonwebtoken only compares the
        // claims a token carries unless they are required.
        let mut required = vec!["exp", "sub"];
        if let Some(iss) = &config.issuer {
            validation.set_issuer(&[iss]);
            required.push("iss");
        }
        match &config.audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);
        Self {
            decoding: DecodingKey::from_secret(config.secret.as_bytes()),
            config,
            validation,
        }
    }

    pub fn verify(&self, token: &str) -> Result<UserId, AuthError> {
        self.identify(token).map(|identity| identity.user)
    }

    /// Like [`Authenticator::verify`], with the token's roles.
    pub fn identify(&self, token: &str) -> Result<Identity, AuthError> {
        let token = token.trim();
        if token.is_empty() {
            return Err(AuthError::MissingToken);
        }
        let data = jsonwebtoken::decode::<Subject>(token, &self.decoding, &self.validation)
            .map_err(|e| AuthError::InvalidToken(e.to_string()))?;
        if data.claims.sub.is_empty() {
            return Err(AuthError::InvalidToken("empty subject".into()));
        }
        Ok(Identity {
            user: UserId::new(data.claims.sub),
            roles: data.claims.roles,
        })
    }

    /// Verifies an `Authorization` header value (`Bearer <jwt>`).
    pub fn verify_bearer(&self, header: Option<&str>) -> Result<UserId, AuthError> {
        self.identify_bearer(header).map(|identity| identity.user)
    }

    /// Like [`Authenticator::verify_bearer`], with the token's roles.
    pub fn identify_bearer(&self, header: Option<&str>) -> Result<Identity, AuthError> {
        let header = header.ok_or(AuthError::MissingToken)?;
        let token = strip_bearer(header)
            .ok_or_else(|| AuthError::InvalidToken("expected \"Bearer <token>\"".into()))?;
        self.identify(token)
    }

    /// Mints a token for `user`, valid for `ttl_secs`, with the configured issuer and
    /// audience. For development and tests: production tokens come from the app's backend.
    pub fn mint(&self, user: &str, ttl_secs: u64) -> String {
        self.mint_with_roles(user, ttl_secs, &[])
    }

    /// [`Authenticator::mint`] with a `roles` claim.
    pub fn mint_with_roles(&self, user: &str, ttl_secs: u64, roles: &[&str]) -> String {
        let claims = Claims {
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
            sub: user.to_owned(),
            exp: now_secs() + ttl_secs,
            iss: self.config.issuer.clone(),
            aud: self.config.audience.clone(),
        };
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(self.config.secret.as_bytes()),
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn auth(issuer: Option<&str>, audience: Option<&str>) -> Authenticator {
        Authenticator::new(AuthConfig {
            secret: "s".repeat(32),
            issuer: issuer.map(Into::into),
            audience: audience.map(Into::into),
        })
    }

    #[test]
    fn a_minted_token_verifies_to_its_subject() {
        let a = auth(Some("app"), Some("broker"));
        assert_eq!(a.verify(&a.mint("user-a", 60)), Ok(UserId::new("user-a")));
        assert_eq!(
            a.verify_bearer(Some(&format!("Bearer {}", a.mint("u", 60)))),
            Ok(UserId::new("u"))
        );
    }

    #[test]
    fn the_roles_claim_is_read_and_must_be_a_list_of_strings() {
        let a = auth(None, None);
        let backend = a
            .identify(&a.mint_with_roles("svc", 60, &["backend"]))
            .unwrap();
        assert_eq!(backend.roles, vec!["backend".to_owned()]);
        assert_eq!(
            a.identify(&a.mint("u", 60)).unwrap().roles,
            Vec::<String>::new()
        );
        let malformed = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &json!({"sub": "u", "exp": now_secs() + 60, "roles": "backend"}),
            &EncodingKey::from_secret("s".repeat(32).as_bytes()),
        )
        .unwrap();
        assert!(matches!(
            a.identify(&malformed),
            Err(AuthError::InvalidToken(_))
        ));
    }

    #[test]
    fn wrong_secret_issuer_audience_expiry_and_alg_none_are_rejected() {
        let a = auth(Some("app"), Some("broker"));
        let other_secret = Authenticator::new(AuthConfig {
            secret: "x".repeat(32),
            issuer: Some("app".into()),
            audience: Some("broker".into()),
        });
        assert!(a.verify(&other_secret.mint("u", 60)).is_err());
        assert!(
            a.verify(&auth(Some("evil"), Some("broker")).mint("u", 60))
                .is_err()
        );
        assert!(
            a.verify(&auth(Some("app"), Some("other")).mint("u", 60))
                .is_err()
        );
        // Configured claims must be present, not only equal when present.
        assert!(a.verify(&auth(Some("app"), None).mint("u", 60)).is_err());
        assert!(a.verify(&auth(None, Some("broker")).mint("u", 60)).is_err());

        let expired = Claims {
            sub: "u".into(),
            exp: now_secs() - 3600,
            iss: Some("app".into()),
            aud: Some("broker".into()),
            roles: Vec::new(),
        };
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &expired,
            &EncodingKey::from_secret("s".repeat(32).as_bytes()),
        )
        .unwrap();
        assert!(a.verify(&token).is_err());

        // {"alg":"none"} with the same claims and no signature.
        let none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJ1IiwiZXhwIjo0MTAyNDQ0ODAwfQ.";
        assert!(auth(None, None).verify(none).is_err());
        assert_eq!(a.verify(""), Err(AuthError::MissingToken));
        assert_eq!(a.verify_bearer(None), Err(AuthError::MissingToken));
        assert!(a.verify_bearer(Some("Basic abc")).is_err());
    }

    fn sign(claims: Value) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret("s".repeat(32).as_bytes()),
        )
        .unwrap()
    }

    #[test]
    fn an_audience_list_is_accepted_and_a_future_nbf_is_not() {
        let a = auth(None, Some("broker"));
        let exp = now_secs() + 60;
        let listed = sign(json!({"sub": "u", "exp": exp, "aud": ["other", "broker"]}));
        assert_eq!(a.verify(&listed), Ok(UserId::new("u")));
        let elsewhere = sign(json!({"sub": "u", "exp": exp, "aud": ["other"]}));
        assert!(a.verify(&elsewhere).is_err());
        let early = sign(json!({"sub": "u", "exp": exp, "aud": "broker", "nbf": exp}));
        assert!(a.verify(&early).is_err());
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
