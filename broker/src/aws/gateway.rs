//! [`ConnectionGateway`] on the API Gateway Management API (or the local gateway, which
//! serves the same API).

use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_apigatewaymanagement::Client;
use aws_sdk_apigatewaymanagement::config::http::HttpResponse;
use aws_sdk_apigatewaymanagement::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_apigatewaymanagement::primitives::Blob;

use super::answer::{Failure, classify_answer};
use super::error::AwsCallError;
use super::retry::RetryPolicy;
use super::signed_post::SignedPoster;
use crate::domain::ConnectionId;
use crate::ports::{ConnectionGateway, GatewayError};
use crate::protocol::CloseCode;
use crate::{ConfigError, settings};

/// Request header carrying the WebSocket close code on `DELETE /@connections/{id}`. API
/// Gateway cannot close with a code and ignores it; the local gateway honours it.
pub const CLOSE_CODE_HEADER: &str = "x-broker-close-code";
/// Request header carrying the close reason (printable ASCII, at most 123 bytes).
pub const CLOSE_REASON_HEADER: &str = "x-broker-close-reason";

/// A WebSocket close frame has room for 123 bytes of reason.
const MAX_CLOSE_REASON: usize = 123;

/// The Management API endpoint of a WebSocket API, from the `domainName` and `stage` of a
/// route event's request context.
pub fn management_endpoint(domain_name: &str, stage: &str) -> String {
    format!("https://{domain_name}/{stage}")
}

/// How frames are posted to connections (`PostToConnection`); every other call goes through
/// the SDK client.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PostClient {
    /// A SigV4-signed HTTP POST on a pooled connection: the SDK's signer, HTTP connector
    /// and credentials, without its per-operation machinery, which costs several times
    /// more CPU than the post itself.
    #[default]
    Signed,
    /// The `aws-sdk-apigatewaymanagement` client.
    Sdk,
}

impl PostClient {
    /// The environment variable that chooses: `signed` (the default) or `sdk`.
    pub const ENV_VAR: &str = settings::MANAGEMENT_POST.setting.name;

    /// From [`Self::ENV_VAR`] ([`settings::MANAGEMENT_POST`]); unset or blank is
    /// [`PostClient::Signed`].
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(match settings::MANAGEMENT_POST.value()? {
            "sdk" => Self::Sdk,
            _ => Self::Signed,
        })
    }
}

/// [`ConnectionGateway`] on API Gateway's Management API: posts to, and deletes,
/// connections, retrying what is throttled.
#[derive(Clone, Debug)]
pub struct ApiGatewayConnectionGateway {
    client: Client,
    retry: RetryPolicy,
    /// Posts without the SDK client, when chosen.
    signed: Option<Arc<SignedPoster>>,
}

impl ApiGatewayConnectionGateway {
    /// A gateway on `client` alone: it posts through the SDK client too.
    pub fn new(client: Client) -> Self {
        Self {
            client,
            retry: RetryPolicy::default(),
            signed: None,
        }
    }

    /// A gateway for the Management API at `endpoint_url` (see [`management_endpoint`]; for
    /// the local gateway, its HTTP address), posting with [`PostClient::Signed`].
    pub fn from_config(config: &SdkConfig, endpoint_url: &str) -> Self {
        Self::from_config_with(config, endpoint_url, PostClient::default())
    }

    /// As [`Self::from_config`], posting with `post`.
    pub fn from_config_with(config: &SdkConfig, endpoint_url: &str, post: PostClient) -> Self {
        let sdk_config = aws_sdk_apigatewaymanagement::config::Builder::from(config)
            .endpoint_url(endpoint_url)
            .build();
        let mut gateway = Self::new(Client::from_conf(sdk_config));
        if post == PostClient::Signed {
            gateway.signed = Some(Arc::new(SignedPoster::new(config, endpoint_url)));
        }
        gateway
    }

    /// How frames are posted.
    pub fn post_client(&self) -> PostClient {
        if self.signed.is_some() {
            PostClient::Signed
        } else {
            PostClient::Sdk
        }
    }

    /// How throttled calls are retried once the SDK's own retries gave up. Under a burst
    /// the account-wide API throttle answers 429 for a while, longer than the SDK waits.
    pub fn with_retry_policy(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    async fn call<T, E, F, Fut>(
        &self,
        operation: &'static str,
        mut send: F,
    ) -> Result<T, GatewayError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, SdkError<E, HttpResponse>>>,
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let mut attempt = 0;
        loop {
            let error = match send().await {
                Ok(value) => return Ok(value),
                Err(error) => error,
            };
            match classify(&error) {
                Failure::Gone => return Err(GatewayError::Gone),
                Failure::Transient if attempt < self.retry.retries => {
                    tracing::debug!(operation, attempt, "throttled; retrying");
                    self.retry.sleep(attempt).await;
                    attempt += 1;
                }
                Failure::Rejected => {
                    return Err(GatewayError::Rejected {
                        source: Box::new(AwsCallError::new(operation, error)),
                    });
                }
                Failure::Transient | Failure::Failed => {
                    return Err(GatewayError::backend(AwsCallError::new(operation, error)));
                }
            }
        }
    }
}

fn classify<E: ProvideErrorMetadata>(error: &SdkError<E, HttpResponse>) -> Failure {
    classify_answer(
        error.raw_response().map(|r| r.status().as_u16()),
        error.code(),
    )
}

/// The reason as a header value: printable ASCII only (anything else becomes `?`), cut to
/// what a close frame can carry.
fn header_safe_reason(reason: &str) -> String {
    reason
        .chars()
        .map(|c| {
            if c == ' ' || c.is_ascii_graphic() {
                c
            } else {
                '?'
            }
        })
        .take(MAX_CLOSE_REASON)
        .collect()
}

#[async_trait]
impl ConnectionGateway for ApiGatewayConnectionGateway {
    async fn post(&self, id: &ConnectionId, frame: &str) -> Result<(), GatewayError> {
        if let Some(signed) = &self.signed {
            return signed.post(id, frame, &self.retry).await;
        }
        let data = Blob::new(frame.as_bytes());
        self.call("PostToConnection", || {
            self.client
                .post_to_connection()
                .connection_id(id.as_str())
                .data(data.clone())
                .send()
        })
        .await
        .map(drop)
    }

    async fn close(
        &self,
        id: &ConnectionId,
        code: CloseCode,
        reason: &str,
    ) -> Result<(), GatewayError> {
        let code = code.code().to_string();
        let reason = header_safe_reason(reason);
        self.call("DeleteConnection", || {
            let (code, reason) = (code.clone(), reason.clone());
            self.client
                .delete_connection()
                .connection_id(id.as_str())
                .customize()
                .mutate_request(move |request| {
                    // Both values are ASCII by construction; a refusal would only cost the
                    // local gateway its close code, so it is not worth failing the close.
                    let headers = request.headers_mut();
                    let _ = headers.try_insert(CLOSE_CODE_HEADER, code.clone());
                    let _ = headers.try_insert(CLOSE_REASON_HEADER, reason.clone());
                })
                .send()
        })
        .await
        .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_become_printable_ascii_within_a_close_frame() {
        assert_eq!(
            header_safe_reason("Subscriber for 1 already exists"),
            "Subscriber for 1 already exists"
        );
        assert_eq!(header_safe_reason("bad\nline é"), "bad?line ?");
        assert_eq!(header_safe_reason(&"x".repeat(500)).len(), MAX_CLOSE_REASON);
    }

    #[test]
    fn management_endpoint_joins_domain_and_stage() {
        assert_eq!(
            management_endpoint("abc.execute-api.eu-west-1.amazonaws.com", "prod"),
            "https://abc.execute-api.eu-west-1.amazonaws.com/prod"
        );
    }
}
