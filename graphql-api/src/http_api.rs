//! GraphQL over HTTP (API Gateway HTTP API, payload format 2.0), as the GraphQL-over-HTTP
//! spec asks: `POST` with an `application/json` body, `GET` with the parameters in the URL
//! (queries only), and the response in the media type the client's `Accept` prefers.
//!
//! - `application/json` (also without an `Accept` header, or for `*/*`): every well-formed
//!   request answers 200, errors in the body.
//! - `application/graphql-response+json`: a request that did not run (it does not parse,
//!   validate, fit the cost limits, name a known operation or have valid variables) answers
//!   400 with no `data` entry; one that ran answers 200, with or without field errors.
//!
//! Whatever the media type: 400 for a request that is not well-formed (no `query`, or a
//! parameter of the wrong type), 401 for a bad token, 405 for a mutation over GET, 406 for
//! an `Accept` that names neither type, 413/414 over the request limit, 415 for a body that
//! is not `application/json` in UTF-8. Every error body is a GraphQL response.

use async_graphql::parser::types::OperationType;
use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use aws_lambda_events::encodings::Body;
use broker::Broker;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use serde_json::{Map, Value, json};

/// The media type of a response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MediaType {
    /// `application/json`: 200 for every well-formed request.
    Json,
    /// `application/graphql-response+json`: 400 for a request that did not run.
    GraphqlResponseJson,
}

impl MediaType {
    fn content_type(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            MediaType::Json => "application/json",
            MediaType::GraphqlResponseJson => "application/graphql-response+json; charset=utf-8",
        })
    }

    /// The type the client prefers of those this handler speaks, from its `Accept` headers;
    /// `None` when it accepts neither (answered 406). Without an `Accept` header, or with an
    /// empty one, `application/json`, as legacy clients expect.
    pub fn negotiate(headers: &HeaderMap) -> Option<MediaType> {
        let accept = joined(headers, http::header::ACCEPT);
        if accept.trim().is_empty() {
            return Some(MediaType::Json);
        }
        // The highest `q` wins; then an exact type over a wildcard; then the first listed.
        let mut best: Option<((u16, u8), MediaType)> = None;
        for range in accept.split(',') {
            let Ok(mime) = range.trim().parse::<mime::Mime>() else {
                continue;
            };
            let (media, exact) = match mime.essence_str() {
                "application/graphql-response+json" => (MediaType::GraphqlResponseJson, 1),
                "application/json" => (MediaType::Json, 1),
                "application/*" | "*/*" => (MediaType::Json, 0),
                _ => continue,
            };
            // Responses are UTF-8 only.
            if mime
                .get_param(mime::CHARSET)
                .is_some_and(|c| !c.as_str().eq_ignore_ascii_case("utf-8"))
            {
                continue;
            }
            let q = match mime.get_param("q") {
                Some(q) => match q.as_str().parse::<f32>() {
                    Ok(q) if (0.0..=1.0).contains(&q) => (q * 1000.0).round() as u16,
                    _ => continue,
                },
                None => 1000,
            };
            if q == 0 {
                continue;
            }
            if best.is_none_or(|(rank, _)| (q, exact) > rank) {
                best = Some(((q, exact), media));
            }
        }
        best.map(|(_, media)| media)
    }
}

/// Handles one request of the HTTP API: a GraphQL query or mutation over GET or POST, as the
/// bearer token's user, answered in the media type the client accepts.
pub async fn handle(broker: &Broker, event: ApiGatewayV2httpRequest) -> ApiGatewayV2httpResponse {
    let method = event.request_context.http.method.clone();
    match method {
        Method::GET | Method::POST => {}
        Method::OPTIONS => return respond(204, MediaType::Json, None),
        _ => {
            let mut response = error(405, MediaType::Json, "use GET or POST");
            response
                .headers
                .insert(http::header::ALLOW, HeaderValue::from_static("GET, POST"));
            return response;
        }
    }
    let Some(media) = MediaType::negotiate(&event.headers) else {
        return error(
            406,
            MediaType::Json,
            "accept application/graphql-response+json or application/json",
        );
    };
    let authorization = event
        .headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let identity = match broker.authenticator().identify_bearer(authorization).await {
        Ok(identity) => identity,
        Err(e) => {
            let mut response = error(401, media, &e.to_string());
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
        return error(
            413,
            media,
            &format!("the request body is over {limit} bytes"),
        );
    }
    if event.raw_query_string.as_deref().map_or(0, str::len) > limit {
        return error(
            414,
            media,
            &format!("the query string is over {limit} bytes"),
        );
    }
    let request = if method == Method::POST {
        if !is_json(&event.headers) {
            return error(415, media, "a POST body must be application/json (UTF-8)");
        }
        let Some(body) = crate::body_text(event.body.as_deref(), event.is_base64_encoded) else {
            return error(400, media, "the request body is not UTF-8 text");
        };
        match parse_body(&body) {
            Ok(request) => request,
            Err(message) => return error(400, media, &message),
        }
    } else {
        let query = event.raw_query_string.as_deref().unwrap_or_default();
        match parse_query_string(query) {
            Ok(request) if broker.operation_type(&request) == Some(OperationType::Mutation) => {
                let mut response = error(405, media, "mutations are not allowed over GET");
                response
                    .headers
                    .insert(http::header::ALLOW, HeaderValue::from_static("POST"));
                return response;
            }
            Ok(request) => request,
            Err(message) => return error(400, media, &message),
        }
    };
    let response = broker
        .execute_with_roles(identity.user, identity.roles, request)
        .await;
    graphql_response(media, &response)
}

/// Every value of a header, as one comma-separated list.
fn joined(headers: &HeaderMap, name: HeaderName) -> String {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(",")
}

/// Whether the body is declared `application/json`, in UTF-8 if a charset is named.
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<mime::Mime>().ok())
        .is_some_and(|mime| {
            mime.essence_str() == "application/json"
                && mime
                    .get_param(mime::CHARSET)
                    .is_none_or(|c| c.as_str().eq_ignore_ascii_case("utf-8"))
        })
}

/// A POST body: a JSON object of the request parameters.
fn parse_body(body: &str) -> Result<async_graphql::Request, String> {
    match serde_json::from_str::<Value>(body) {
        Ok(Value::Object(parameters)) => request_from(parameters),
        Ok(_) => Err("the request body must be a JSON object".to_owned()),
        Err(_) => Err("the request body is not JSON".to_owned()),
    }
}

/// A GET query string: `query`, `operationName` (`operation_name` is read too), and
/// `variables` and `extensions` as JSON text. A parameter given twice is an error.
fn parse_query_string(query: &str) -> Result<async_graphql::Request, String> {
    let mut parameters = Map::new();
    for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
        let name = match key.as_ref() {
            "query" => "query",
            "operationName" | "operation_name" => "operationName",
            "variables" => "variables",
            "extensions" => "extensions",
            _ => continue,
        };
        let value = match name {
            "variables" | "extensions" if value.trim().is_empty() => Value::Null,
            "variables" | "extensions" => {
                serde_json::from_str(&value).map_err(|_| format!("{name} must be a JSON object"))?
            }
            _ => Value::String(value.into_owned()),
        };
        if parameters.insert(name.to_owned(), value).is_some() {
            return Err(format!("{name} is given more than once"));
        }
    }
    request_from(parameters)
}

/// The request the parameters make, if they are well-formed: `query` a non-empty string,
/// `operationName` a string, `variables` and `extensions` objects; `null` (and an empty
/// `operationName`) count as absent.
fn request_from(mut parameters: Map<String, Value>) -> Result<async_graphql::Request, String> {
    parameters.retain(|_, value| !value.is_null());
    match parameters.get("query") {
        None => return Err("the request has no query".to_owned()),
        Some(Value::String(query)) if query.trim().is_empty() => {
            return Err("the query is empty".to_owned());
        }
        Some(Value::String(_)) => {}
        Some(_) => return Err("query must be a string".to_owned()),
    }
    match parameters.get("operationName") {
        None => {}
        Some(Value::String(name)) if name.is_empty() => {
            parameters.remove("operationName");
        }
        Some(Value::String(_)) => {}
        Some(_) => return Err("operationName must be a string".to_owned()),
    }
    for name in ["variables", "extensions"] {
        if parameters.get(name).is_some_and(|v| !v.is_object()) {
            return Err(format!("{name} must be a JSON object"));
        }
    }
    serde_json::from_value(Value::Object(parameters))
        .map_err(|e| format!("invalid GraphQL request: {e}"))
}

/// The executed request's response: with `application/graphql-response+json`, a request
/// error (nothing ran: no data, and no error has a path) is 400 without a `data` entry.
fn graphql_response(
    media: MediaType,
    response: &async_graphql::Response,
) -> ApiGatewayV2httpResponse {
    let mut body = serde_json::to_value(response).expect("a GraphQL response serializes to JSON");
    let did_not_run = response.data == async_graphql::Value::Null
        && !response.errors.is_empty()
        && response.errors.iter().all(|e| e.path.is_empty());
    let status = if media == MediaType::GraphqlResponseJson && did_not_run {
        if let Some(fields) = body.as_object_mut() {
            fields.remove("data");
        }
        400
    } else {
        200
    };
    respond(status, media, Some(body.to_string()))
}

fn error(status: u16, media: MediaType, message: &str) -> ApiGatewayV2httpResponse {
    respond(
        status,
        media,
        Some(json!({"errors": [{"message": message}]}).to_string()),
    )
}

fn respond(status: u16, media: MediaType, body: Option<String>) -> ApiGatewayV2httpResponse {
    let mut response = ApiGatewayV2httpResponse::default();
    response.status_code = i64::from(status);
    if body.is_some() {
        response
            .headers
            .insert(http::header::CONTENT_TYPE, media.content_type());
        // The media type depends on `Accept`: caches of GET responses must know.
        response
            .headers
            .insert(http::header::VARY, HeaderValue::from_static("accept"));
    }
    response.body = body.map(Body::Text);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(value: &str) -> Option<MediaType> {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::ACCEPT, HeaderValue::from_str(value).unwrap());
        MediaType::negotiate(&headers)
    }

    #[test]
    fn the_preferred_supported_media_type_is_chosen() {
        use MediaType::*;
        assert_eq!(MediaType::negotiate(&HeaderMap::new()), Some(Json));
        assert_eq!(
            accept("application/graphql-response+json"),
            Some(GraphqlResponseJson)
        );
        assert_eq!(
            accept("application/graphql-response+json, application/json;q=0.9"),
            Some(GraphqlResponseJson)
        );
        assert_eq!(
            accept("application/json;q=0.5, application/graphql-response+json"),
            Some(GraphqlResponseJson)
        );
        assert_eq!(
            accept("application/json, application/graphql-response+json"),
            Some(Json)
        );
        assert_eq!(accept("*/*"), Some(Json));
        assert_eq!(
            accept("*/*, application/graphql-response+json"),
            Some(GraphqlResponseJson)
        );
        assert_eq!(
            accept("Application/GraphQL-Response+JSON; charset=UTF-8"),
            Some(GraphqlResponseJson)
        );
        assert_eq!(
            accept("application/graphql-response+json;q=0, application/json"),
            Some(Json)
        );
        assert_eq!(accept("text/html"), None);
        assert_eq!(accept("application/json; charset=latin1"), None);
        assert_eq!(accept("application/json;q=2"), None);
    }

    #[test]
    fn parameters_of_the_wrong_shape_are_refused() {
        let refused = |body: &str| parse_body(body).err().unwrap_or_default();
        assert!(refused("{").contains("not JSON"));
        assert!(refused("[]").contains("JSON object"));
        assert!(refused("{}").contains("no query"));
        assert!(refused(r#"{"query": null}"#).contains("no query"));
        assert!(refused(r#"{"query": " "}"#).contains("empty"));
        assert!(refused(r#"{"query": 1}"#).contains("must be a string"));
        assert!(refused(r#"{"query": "{a}", "operationName": 1}"#).contains("operationName"));
        assert!(refused(r#"{"query": "{a}", "variables": [7]}"#).contains("variables"));
        assert!(refused(r#"{"query": "{a}", "extensions": "x"}"#).contains("extensions"));
        let request =
            parse_body(r#"{"query": "{a}", "operationName": "", "variables": null}"#).unwrap();
        assert_eq!(request.operation_name, None);
    }

    #[test]
    fn get_reads_operation_name_and_json_parameters() {
        let request =
            parse_query_string("query=query+A%7Ba%7D&operationName=A&variables=%7B%22x%22%3A1%7D")
                .unwrap();
        assert_eq!(request.query, "query A{a}");
        assert_eq!(request.operation_name.as_deref(), Some("A"));
        assert_eq!(
            request.variables.into_value().into_json().unwrap(),
            json!({"x": 1})
        );
        let legacy = parse_query_string("query=%7Ba%7D&operation_name=B").unwrap();
        assert_eq!(legacy.operation_name.as_deref(), Some("B"));
        let refused = |query: &str| parse_query_string(query).err().unwrap_or_default();
        assert!(refused("").contains("no query"));
        assert!(refused("query=").contains("empty"));
        assert!(refused("query=a&query=b").contains("more than once"));
        assert!(refused("query=a&variables=%5B7%5D").contains("variables"));
        assert!(refused("query=a&variables=nope").contains("variables"));
    }
}
