//! The web app (`web/`) at `/`, and the development sign-in it uses. Local mode only: neither
//! exists on AWS, where a static host serves the app and your backend issues the tokens.
//!
//! - `GET /…`: the built app, read from [`WebOptions::dir`] on each request, so a rebuild
//!   shows on reload. Paths that name no file answer 404 with a hint to build it.
//! - `POST /dev/token` `{"user": "alice"}` → `{"token": "…", "user": "alice", "expiresIn": 86400}`:
//!   a token for any user name, with no password. That is only acceptable on a developer's
//!   machine, so it is served only while the local mode signs with the documented
//!   development secret (or a test asks for it), never with a secret set in `JWT_SECRET`.
//!   No CORS headers: only the page served from this origin may use it.

use std::path::PathBuf;

use axum::Json;
use axum::Router;
use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{any, post};
use broker::{Authenticator, ConfigError};
use serde::Deserialize;
use serde_json::json;
use tower_http::cors::{self, AllowOrigin, CorsLayer};
use tower_http::services::ServeDir;

/// Lifetime of a development token: a day, as `broker-local token` mints.
pub const DEV_TOKEN_TTL_SECS: u64 = 24 * 60 * 60;
/// Longest user name the development sign-in accepts.
pub const MAX_USER_CHARS: usize = 64;

/// Where the web app is served from, and which origins may call the APIs.
#[derive(Clone, Debug, Default)]
pub struct WebOptions {
    /// The built app (`web/dist`); `None` serves nothing at `/`.
    pub dir: Option<PathBuf>,
    /// Serve `POST /dev/token`.
    pub dev_tokens: bool,
    /// Which other origins' pages may call `/graphql` from a browser.
    pub cors_origins: CorsOrigins,
}

/// The origins whose pages may call `/graphql` from a browser (CORS), as the template's
/// `CorsAllowedOrigins` parameter sets on the HTTP API: any origin by default, or a list
/// (`CORS_ALLOWED_ORIGINS=https://app.example.com,http://localhost:5173`). Methods GET, POST
/// and OPTIONS and the headers `authorization` and `content-type`, as on AWS. Browsers apply
/// no CORS to WebSockets; the development sign-in never answers another origin.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum CorsOrigins {
    /// Every origin.
    #[default]
    Any,
    /// These origins only.
    List(Vec<HeaderValue>),
}

impl CorsOrigins {
    /// From `CORS_ALLOWED_ORIGINS` ([`broker::settings`]): unset, blank or `*` is any
    /// origin; otherwise a comma-separated list of origins such as `https://app.example.com`.
    pub fn from_env() -> Result<Self, ConfigError> {
        let var = &broker::settings::CORS_ALLOWED_ORIGINS;
        let value = var.value()?;
        Self::parse(&value).map_err(|reason| var.invalid(value, reason))
    }

    /// Reads `*` or a comma-separated list of origins.
    pub fn parse(value: &str) -> Result<Self, String> {
        let origins: Vec<&str> = value
            .split(',')
            .map(str::trim)
            .filter(|o| !o.is_empty())
            .collect();
        if origins.is_empty() || origins == ["*"] {
            return Ok(Self::Any);
        }
        origins
            .into_iter()
            .map(|origin| match HeaderValue::from_str(origin) {
                Ok(value) if origin.contains("://") && origin != "*" => Ok(value),
                _ => Err(format!(
                    "{origin:?} is not an origin (scheme://host[:port]) or a lone *"
                )),
            })
            .collect::<Result<_, _>>()
            .map(Self::List)
    }

    /// The layer that answers preflights and marks the responses of `/graphql`.
    pub fn layer(&self) -> CorsLayer {
        let layer = CorsLayer::new()
            .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE]);
        match self {
            Self::Any => layer.allow_origin(cors::Any),
            Self::List(origins) => layer.allow_origin(AllowOrigin::list(origins.iter().cloned())),
        }
    }
}

impl WebOptions {
    /// Where `scripts/build-web` puts the app in this source tree, found relative to this
    /// crate so that `cargo run` from anywhere in the repository serves it.
    pub fn source_tree_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../web/dist")
    }
}

/// The web app's files and the development sign-in.
pub fn router(options: &WebOptions, authenticator: Authenticator) -> Router {
    let mut router = Router::new();
    if options.dev_tokens {
        let sign_in = Router::new()
            .route("/dev/token", post(dev_token))
            .layer(DefaultBodyLimit::max(1024))
            .with_state(authenticator);
        router = router.merge(sign_in);
    }
    if let Some(dir) = &options.dir {
        let files = ServeDir::new(dir).not_found_service(any(not_built));
        router = router.fallback_service(files);
    }
    router
}

#[derive(Deserialize)]
struct TokenRequest {
    user: String,
}

async fn dev_token(
    State(authenticator): State<Authenticator>,
    request: Result<Json<TokenRequest>, JsonRejection>,
) -> Response {
    let user = match request {
        Ok(Json(TokenRequest { user })) => user,
        Err(rejection) => return refuse(format!("expected {{\"user\": \"name\"}}: {rejection}")),
    };
    if let Err(reason) = valid_user(&user) {
        return refuse(reason);
    }
    let token = authenticator.mint(&user, DEV_TOKEN_TTL_SECS);
    Json(json!({"token": token, "user": user, "expiresIn": DEV_TOKEN_TTL_SECS})).into_response()
}

/// User names become the token's `sub` and show in the page: keep them short and plain.
fn valid_user(user: &str) -> Result<(), String> {
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@');
    if user.is_empty() || user.chars().count() > MAX_USER_CHARS {
        Err(format!("a user name has 1 to {MAX_USER_CHARS} characters"))
    } else if !user.chars().all(plain) {
        Err("a user name has only letters, digits and . _ - @".to_owned())
    } else {
        Ok(())
    }
}

fn refuse(reason: impl Into<String>) -> Response {
    let reason = reason.into();
    (StatusCode::BAD_REQUEST, Json(json!({"error": reason}))).into_response()
}

async fn not_built() -> Response {
    (
        StatusCode::NOT_FOUND,
        Html(
            "<!doctype html><title>Not found</title><h1>Not found</h1>\
             <p>If you expected the web app here, build it: <code>scripts/build-web</code>, \
             then reload. GraphQL is at <code>/graphql</code>.</p>",
        ),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names_are_short_and_plain() {
        assert!(valid_user("alice").is_ok());
        assert!(valid_user("a.b_c-d@example.com").is_ok());
        assert!(valid_user("").is_err());
        assert!(valid_user(&"a".repeat(MAX_USER_CHARS)).is_ok());
        assert!(valid_user(&"a".repeat(MAX_USER_CHARS + 1)).is_err());
        assert!(valid_user("al ice").is_err());
        assert!(valid_user("<script>").is_err());
    }
}
