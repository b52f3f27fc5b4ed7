//! API Gateway's event shapes, built from what arrived on a local socket or HTTP request, so
//! the Lambda handlers run here exactly as they run on AWS.

use aws_lambda_events::apigw::{
    ApiGatewayV2httpRequest, ApiGatewayV2httpRequestContextHttpDescription,
    ApiGatewayWebsocketProxyRequest,
};
use aws_lambda_events::query_map::QueryMap;
use broker::ConnectionId;
use http::{HeaderMap, Method};

/// The stage every event names in `requestContext.stage`; on AWS, the deployed API's stage.
pub const STAGE: &str = "local";

/// A WebSocket route event: `$connect` (with the upgrade's headers and query string),
/// `$default` (with a frame) or `$disconnect`.
pub fn websocket(
    route: &str,
    connection: &ConnectionId,
    connected_at_ms: u64,
    headers: HeaderMap,
    query: QueryMap,
    body: Option<String>,
) -> ApiGatewayWebsocketProxyRequest {
    let now = broker::domain::now_ms() as i64;
    let mut event = ApiGatewayWebsocketProxyRequest::default();
    event.headers = headers;
    event.query_string_parameters = query;
    event.body = body;
    let context = &mut event.request_context;
    context.route_key = Some(route.to_owned());
    context.event_type = Some(
        match route {
            "$connect" => "CONNECT",
            "$disconnect" => "DISCONNECT",
            _ => "MESSAGE",
        }
        .to_owned(),
    );
    context.connection_id = Some(connection.to_string());
    context.connected_at = connected_at_ms as i64;
    context.request_time_epoch = now;
    context.stage = Some(STAGE.to_owned());
    context.domain_name = Some("127.0.0.1".to_owned());
    context.message_direction = Some("IN".to_owned());
    context.apiid = Some("local".to_owned());
    context.request_id = Some(ulid::Ulid::new().to_string());
    event
}

/// An HTTP API (payload format 2.0) event.
pub fn http(
    method: Method,
    path: &str,
    raw_query: Option<&str>,
    headers: HeaderMap,
    body: Option<String>,
) -> ApiGatewayV2httpRequest {
    let mut event = ApiGatewayV2httpRequest::default();
    event.version = Some("2.0".to_owned());
    event.route_key = Some(format!("{method} {path}"));
    event.raw_path = Some(path.to_owned());
    event.raw_query_string = raw_query.map(str::to_owned);
    event.query_string_parameters = raw_query
        .and_then(|q| q.parse::<QueryMap>().ok())
        .unwrap_or_default();
    event.headers = headers;
    event.body = body;
    let mut description = ApiGatewayV2httpRequestContextHttpDescription::default();
    description.method = method;
    description.path = Some(path.to_owned());
    description.protocol = Some("HTTP/1.1".to_owned());
    event.request_context.http = description;
    event.request_context.stage = Some("$default".to_owned());
    event
}
