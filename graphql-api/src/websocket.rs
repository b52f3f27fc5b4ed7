//! The WebSocket API's routes: `$connect`, `$disconnect`, `$default`, as API Gateway sends
//! them to Lambda.

use aws_lambda_events::apigw::{ApiGatewayProxyResponse, ApiGatewayWebsocketProxyRequest};
use aws_lambda_events::encodings::Body;
use broker::session::SessionError;
use broker::{Broker, CloseCode, ConnectOutcome, ConnectionId};
use http::HeaderValue;

/// Why a WebSocket route could not be handled: Lambda reports it, and API Gateway answers
/// the route with an error.
#[derive(Debug, thiserror::Error)]
pub enum WebSocketError {
    /// The event carries no `connectionId`: it did not come from a WebSocket API.
    #[error("the request has no connection id")]
    MissingConnectionId,
    /// The broker's stores or the gateway failed.
    #[error(transparent)]
    Session(#[from] SessionError),
}

/// Handles one route event (`$connect`, `$disconnect` or `$default`) of the WebSocket API and
/// answers it as API Gateway expects.
pub async fn handle(
    broker: &Broker,
    event: ApiGatewayWebsocketProxyRequest,
) -> Result<ApiGatewayProxyResponse, WebSocketError> {
    let context = &event.request_context;
    let id = context
        .connection_id
        .as_deref()
        .map(ConnectionId::from)
        .ok_or(WebSocketError::MissingConnectionId)?;
    match context.route_key.as_deref().unwrap_or("$default") {
        "$connect" => {
            let protocols = event
                .headers
                .get("sec-websocket-protocol")
                .and_then(|v| v.to_str().ok());
            let token = event.query_string_parameters.first("token");
            match broker.connect(id, protocols, token).await? {
                ConnectOutcome::Accepted { protocol } => {
                    let mut response = reply(200, None);
                    if let Some(protocol) = protocol {
                        response.headers.insert(
                            "sec-websocket-protocol",
                            HeaderValue::from_static(protocol.name()),
                        );
                    }
                    Ok(response)
                }
                ConnectOutcome::Rejected { status, reason } => {
                    tracing::info!(connection = %context.connection_id.as_deref().unwrap_or(""), status, %reason, "connect refused");
                    Ok(reply(status, Some(reason)))
                }
            }
        }
        "$disconnect" => {
            broker.disconnect(&id).await?;
            Ok(reply(200, None))
        }
        _ => {
            match crate::body_text(event.body.as_deref(), event.is_base64_encoded) {
                Some(text) => broker.receive(&id, &text).await?,
                None => {
                    let reason = "frames must be UTF-8 text";
                    broker.close(&id, CloseCode::BadRequest, reason).await?
                }
            }
            Ok(reply(200, None))
        }
    }
}

fn reply(status: u16, body: Option<String>) -> ApiGatewayProxyResponse {
    let mut response = ApiGatewayProxyResponse::default();
    response.status_code = i64::from(status);
    response.body = body.map(Body::Text);
    response
}

/// How Lambda reports a failed route: a missing connection id is a malformed event; anything
/// else is a dependency failing, which API Gateway surfaces as an internal error.
impl From<WebSocketError> for lambda_runtime::Diagnostic {
    fn from(error: WebSocketError) -> Self {
        let error_type = match error {
            WebSocketError::MissingConnectionId => "NonRetryable",
            WebSocketError::Session(_) => "Retryable",
        };
        Self {
            error_type: error_type.to_owned(),
            error_message: error.to_string(),
        }
    }
}
