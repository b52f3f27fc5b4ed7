//! GraphQL over HTTP (API Gateway HTTP API, payload format 2.0): `POST` with a JSON body,
//! `GET` with the query in the URL (queries only, as the GraphQL-over-HTTP spec asks).

use async_graphql::parser::types::OperationType;
use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use aws_lambda_events::encodings::Body;
use broker::Broker;
use http::{HeaderValue, Method};
use serde_json::json;

pub async fn handle(broker: &Broker, event: ApiGatewayV2httpRequest) -> ApiGatewayV2httpResponse {
    let method = event.request_context.http.method.clone();
    let authorization = event
        .headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let identity = match broker.authenticator().identify_bearer(authorization).await {
        Ok(identity) => identity,
        Err(e) => {
            let mut response = error(401, &e.to_string());
            response.headers.insert(
                http::header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer"),
            );
            return response;
        }
    };
    // Refused before any parsing: API Gateway's own limit is larger than any GraphQL request
    // needs, and the document limit inside is smaller still.
    let limit = broker.config().max_request_bytes;
    if event.body.as_deref().map_or(0, str::len) > limit {
        return error(413, &format!("the request body is over {limit} bytes"));
    }
    if event.raw_query_string.as_deref().map_or(0, str::len) > limit {
        return error(414, &format!("the query string is over {limit} bytes"));
    }
    let request = match method {
        Method::POST => {
            let Some(body) = crate::body_text(event.body.as_deref(), event.is_base64_encoded)
            else {
                return error(400, "the request body is not UTF-8 text");
            };
            match serde_json::from_str::<async_graphql::Request>(&body) {
                Ok(request) => request,
                Err(e) => return error(400, &format!("invalid GraphQL request body: {e}")),
            }
        }
        Method::GET => {
            let query = event.raw_query_string.as_deref().unwrap_or_default();
            match async_graphql::http::parse_query_string(query) {
                Ok(request) if broker.operation_type(&request) == Some(OperationType::Mutation) => {
                    let mut response = error(405, "mutations are not allowed over GET");
                    response
                        .headers
                        .insert(http::header::ALLOW, HeaderValue::from_static("POST"));
                    return response;
                }
                Ok(request) => request,
                Err(e) => return error(400, &format!("invalid GraphQL query string: {e}")),
            }
        }
        Method::OPTIONS => return respond(204, None),
        _ => {
            let mut response = error(405, "use GET or POST");
            response
                .headers
                .insert(http::header::ALLOW, HeaderValue::from_static("GET, POST"));
            return response;
        }
    };
    let response = broker
        .execute_with_roles(identity.user, identity.roles, request)
        .await;
    let body = serde_json::to_string(&response).expect("a GraphQL response serializes to JSON");
    respond(200, Some(body))
}

fn error(status: u16, message: &str) -> ApiGatewayV2httpResponse {
    respond(
        status,
        Some(json!({"errors": [{"message": message}]}).to_string()),
    )
}

fn respond(status: u16, body: Option<String>) -> ApiGatewayV2httpResponse {
    let mut response = ApiGatewayV2httpResponse::default();
    response.status_code = i64::from(status);
    if body.is_some() {
        response.headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    response.body = body.map(Body::Text);
    response
}
