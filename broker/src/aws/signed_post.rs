//! `PostToConnection` as a SigV4-signed HTTP POST on a pooled connection.
//!
//! The SDK client spends most of a post's CPU on its per-operation machinery (configuration
//! layers, interceptors, the orchestrator), several times what signing and sending the request
//! cost. This path sends the same request the SDK sends (`POST {endpoint}/@connections/{id}`,
//! the frame as an `application/octet-stream` body, signed for `execute-api` in the
//! configuration's region) on the HTTP stack the SDK's connector is built of (hyper's pooled
//! client, rustls on ring, the same connect timeout; Mozilla's roots, compiled in, see
//! `https_connector`) without the
//! connector's own layers around each call, signs it with the SDK's own signer
//! (`aws-sigv4`), takes credentials from the configuration's provider chain and keeps them
//! until shortly before they expire. Answers are sorted as the SDK path sorts them (see
//! `classify_answer`).

use std::sync::RwLock;
use std::time::{Duration, SystemTime};

use aws_config::SdkConfig;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_smithy_runtime_api::client::identity::Identity;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use super::answer::{Failure, classify_answer};
use super::config::{ATTEMPT_TIMEOUT, CONNECT_TIMEOUT};
use super::error::AwsCallError;
use super::retry::RetryPolicy;
use crate::domain::ConnectionId;
use crate::ports::GatewayError;

const OPERATION: &str = "PostToConnection";
/// The signing name of the Management API.
pub(super) const SIGNING_NAME: &str = "execute-api";
/// What an answer's body may hold before it is cut off: API Gateway's error bodies are a
/// short JSON object.
const MAX_ANSWER_BYTES: usize = 16 * 1024;
/// Attempts at a call that got no answer (refused connection, timeout), as many as the
/// SDK's standard retry mode makes.
const ATTEMPTS_WITHOUT_ANSWER: u32 = 3;
/// Credentials are renewed this long before they expire.
const CREDENTIALS_MARGIN: Duration = Duration::from_secs(300);

/// A path segment as the SDK encodes an `httpLabel`: everything but letters, digits and
/// `-._~` percent-encoded (`=` in a connection id becomes `%3D`).
const LABEL: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Posts frames to connections of one Management API endpoint.
pub(super) struct SignedPoster {
    /// The endpoint without a trailing slash, or why it cannot be used.
    endpoint: Result<String, String>,
    /// The `Host` header: the authority, without the scheme's default port.
    host: String,
    region: Option<String>,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    credentials: CachedCredentials,
}

impl std::fmt::Debug for SignedPoster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignedPoster")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

impl SignedPoster {
    pub(super) fn new(config: &SdkConfig, endpoint_url: &str) -> Self {
        let endpoint_url = endpoint_url.trim_end_matches('/');
        let (endpoint, host) = match endpoint_url.parse::<http::Uri>() {
            Ok(uri) => match (uri.scheme_str(), uri.host()) {
                (Some(scheme @ ("http" | "https")), Some(host)) => {
                    let default_port = if scheme == "https" { 443 } else { 80 };
                    let host = match uri.port_u16() {
                        Some(port) if port != default_port => format!("{host}:{port}"),
                        _ => host.to_owned(),
                    };
                    (Ok(endpoint_url.to_owned()), host)
                }
                _ => (
                    Err(format!("{endpoint_url:?} is not an http(s) URL")),
                    String::new(),
                ),
            },
            Err(error) => (Err(format!("{endpoint_url:?}: {error}")), String::new()),
        };
        Self {
            endpoint,
            host,
            region: config.region().map(|r| r.as_ref().to_owned()),
            client: Client::builder(TokioExecutor::new()).build(https_connector()),
            credentials: CachedCredentials::new(config.credentials_provider()),
        }
    }

    /// Posts `frame`, retrying throttled and failed answers per `retry`.
    pub(super) async fn post(
        &self,
        id: &ConnectionId,
        frame: &str,
        retry: &RetryPolicy,
    ) -> Result<(), GatewayError> {
        let endpoint = self
            .endpoint
            .as_ref()
            .map_err(|reason| backend(format!("bad endpoint {reason}")))?;
        if id.as_str().is_empty() {
            return Err(backend("connection_id cannot be empty or unset".into()));
        }
        let url = format!(
            "{endpoint}/@connections/{}",
            utf8_percent_encode(id.as_str(), LABEL)
        );
        let body = Bytes::copy_from_slice(frame.as_bytes());
        let (mut throttled, mut unanswered) = (0, 0);
        loop {
            let answer = self.attempt(&url, &body).await;
            let (failure, details) = match answer {
                Ok(Answer { status, .. }) if (200..300).contains(&status) => return Ok(()),
                Ok(answer) => (
                    classify_answer(Some(answer.status), answer.code.as_deref()),
                    answer.describe(),
                ),
                Err(Unanswered(details)) => {
                    if unanswered + 1 < ATTEMPTS_WITHOUT_ANSWER {
                        tracing::debug!(operation = OPERATION, %details, "no answer; retrying");
                        retry.sleep(unanswered).await;
                        unanswered += 1;
                        continue;
                    }
                    (classify_answer(None, None), details)
                }
            };
            match failure {
                Failure::Gone => return Err(GatewayError::Gone),
                Failure::Transient if throttled < retry.retries => {
                    tracing::debug!(
                        operation = OPERATION,
                        attempt = throttled,
                        "throttled; retrying"
                    );
                    retry.sleep(throttled).await;
                    throttled += 1;
                }
                Failure::Rejected => {
                    return Err(GatewayError::Rejected {
                        source: Box::new(AwsCallError::message(OPERATION, details)),
                    });
                }
                Failure::Transient | Failure::Failed => return Err(backend(details)),
            }
        }
    }

    /// One signed request and its answer, within the attempt timeout.
    async fn attempt(&self, url: &str, body: &Bytes) -> Result<Answer, Unanswered> {
        let call = async {
            let identity = self
                .credentials
                .identity()
                .await
                .map_err(|e| Unanswered(format!("no credentials: {e}")))?;
            let request = self
                .signed_request(url, body, &identity)
                .map_err(Unanswered)?;
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| Unanswered(error_chain(&e)))?;
            let status = response.status().as_u16();
            let error_type = response
                .headers()
                .get("x-amzn-errortype")
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned);
            let bytes = http_body_util::Limited::new(response.into_body(), MAX_ANSWER_BYTES)
                .collect()
                .await
                .map_err(|e| Unanswered(format!("reading the answer: {e}")))?
                .to_bytes();
            Ok(Answer::new(status, error_type, &bytes))
        };
        tokio::time::timeout(ATTEMPT_TIMEOUT, call)
            .await
            .unwrap_or_else(|_| {
                Err(Unanswered(format!(
                    "no answer within {} s",
                    ATTEMPT_TIMEOUT.as_secs()
                )))
            })
    }

    fn signed_request(
        &self,
        url: &str,
        body: &Bytes,
        identity: &Identity,
    ) -> Result<http::Request<Full<Bytes>>, String> {
        let region = self
            .region
            .as_deref()
            .ok_or("no region in the configuration")?;
        let mut request = http::Request::post(url)
            .header(http::header::HOST, &self.host)
            .header(http::header::CONTENT_TYPE, "application/octet-stream")
            .header(http::header::CONTENT_LENGTH, body.len())
            .body(())
            .map_err(|e| format!("building the request: {e}"))?;
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(identity)
            .region(region)
            .name(SIGNING_NAME)
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| format!("signing: {e}"))?
            .into();
        let headers = request.headers().iter().filter_map(|(name, value)| {
            // Every value above is ASCII.
            value.to_str().ok().map(|value| (name.as_str(), value))
        });
        let signable = SignableRequest::new("POST", url, headers, SignableBody::Bytes(body))
            .map_err(|e| format!("signing: {e}"))?;
        let (instructions, _) = sign(signable, &params)
            .map_err(|e| format!("signing: {e}"))?
            .into_parts();
        instructions.apply_to_request_http1x(&mut request);
        Ok(request.map(|()| Full::new(body.clone())))
    }
}

/// HTTPS (rustls on ring) or plain HTTP (an emulator, the local gateway), with the SDK's
/// connect timeout. The roots are Mozilla's, compiled in (`webpki-roots`): the Management
/// API's endpoints (`execute-api`, and custom domains, whose certificates ACM issues) chain
/// to Amazon's public roots, which are among them. Reading and parsing the system's roots
/// instead (a few hundred files on some systems) was more than half of a function's cold
/// start (docs/benchmarks.md, cold start).
fn https_connector() -> HttpsConnector<HttpConnector> {
    let mut http = HttpConnector::new();
    http.set_connect_timeout(Some(CONNECT_TIMEOUT));
    http.set_nodelay(true);
    http.enforce_http(false);
    hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
        .expect("ring supports the default protocol versions")
        .https_or_http()
        .enable_http1()
        .wrap_connector(http)
}

fn backend(details: String) -> GatewayError {
    GatewayError::backend(AwsCallError::message(OPERATION, details))
}

/// An error and its sources, one line.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A call that got no HTTP answer, and why.
struct Unanswered(String);

/// An HTTP answer: its status and, for a failure, the error code and message.
struct Answer {
    status: u16,
    code: Option<String>,
    message: Option<String>,
}

impl Answer {
    /// The error code as the SDK's `restJson1` protocol reads it: the `x-amzn-ErrorType`
    /// header, else the body's `code` or `__type`, without a trailing `:…` or a leading
    /// `namespace#`.
    fn new(status: u16, error_type: Option<String>, body: &[u8]) -> Self {
        if (200..300).contains(&status) {
            return Self {
                status,
                code: None,
                message: None,
            };
        }
        let body: Option<serde_json::Map<String, serde_json::Value>> =
            serde_json::from_slice(body).ok();
        let field = |names: &[&str]| {
            body.as_ref().and_then(|body| {
                names
                    .iter()
                    .find_map(|name| body.get(*name).and_then(|v| v.as_str()))
                    .map(str::to_owned)
            })
        };
        let code = error_type
            .or_else(|| field(&["code", "__type"]))
            .map(|code| sanitize_error_code(&code).to_owned());
        Self {
            status,
            code,
            message: field(&["message", "Message", "errorMessage"]),
        }
    }

    fn describe(&self) -> String {
        format!(
            "{}: {} (HTTP status {})",
            self.code.as_deref().unwrap_or("unhandled error"),
            self.message.as_deref().unwrap_or("no message"),
            self.status
        )
    }
}

fn sanitize_error_code(code: &str) -> &str {
    let code = code.split(':').next().unwrap_or(code);
    code.rsplit_once('#').map_or(code, |(_, code)| code)
}

/// Credentials from the configuration's provider, kept until [`CREDENTIALS_MARGIN`] before
/// they expire (on Lambda they come from the environment and never do).
struct CachedCredentials {
    provider: Option<SharedCredentialsProvider>,
    current: RwLock<Option<(Identity, Option<SystemTime>)>>,
    refresh: tokio::sync::Mutex<()>,
}

impl CachedCredentials {
    fn new(provider: Option<SharedCredentialsProvider>) -> Self {
        Self {
            provider,
            current: RwLock::new(None),
            refresh: tokio::sync::Mutex::new(()),
        }
    }

    fn fresh(&self) -> Option<Identity> {
        let current = self.current.read().unwrap_or_else(|e| e.into_inner());
        let (identity, expiry) = current.as_ref()?;
        let fresh = expiry.is_none_or(|expiry| {
            expiry
                .duration_since(SystemTime::now())
                .is_ok_and(|left| left > CREDENTIALS_MARGIN)
        });
        fresh.then(|| identity.clone())
    }

    async fn identity(&self) -> Result<Identity, String> {
        if let Some(identity) = self.fresh() {
            return Ok(identity);
        }
        // One caller asks the provider; the others wait for its answer.
        let _refreshing = self.refresh.lock().await;
        if let Some(identity) = self.fresh() {
            return Ok(identity);
        }
        let provider = self
            .provider
            .as_ref()
            .ok_or("the configuration has no credentials provider")?;
        let credentials = provider
            .provide_credentials()
            .await
            .map_err(|e| error_chain(&e))?;
        let expiry = credentials.expiry();
        let identity = Identity::from(credentials);
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Some((identity.clone(), expiry));
        Ok(identity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_are_read_as_the_sdk_reads_them() {
        let answer = Answer::new(410, Some("GoneException".into()), br#"{"message": null}"#);
        assert_eq!(answer.code.as_deref(), Some("GoneException"));
        let answer = Answer::new(
            400,
            None,
            br#"{"__type": "com.amazonaws#LimitExceededException:http://x", "message": "slow"}"#,
        );
        assert_eq!(answer.code.as_deref(), Some("LimitExceededException"));
        assert_eq!(answer.message.as_deref(), Some("slow"));
        let answer = Answer::new(500, None, b"<html>oops</html>");
        assert_eq!(answer.code, None);
        assert_eq!(
            answer.describe(),
            "unhandled error: no message (HTTP status 500)"
        );
    }

    #[test]
    fn connection_ids_are_encoded_as_one_path_segment() {
        assert_eq!(
            utf8_percent_encode("L0SM9cOFvHcCIhw=", LABEL).to_string(),
            "L0SM9cOFvHcCIhw%3D"
        );
        assert_eq!(
            utf8_percent_encode("a/b c-d_e.f~", LABEL).to_string(),
            "a%2Fb%20c-d_e.f~"
        );
    }
}
