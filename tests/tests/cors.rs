//! CORS in the local mode, as the template's `CorsAllowedOrigins` sets it on the HTTP API:
//! a page of another origin may call `/graphql`; the development sign-in answers no origin
//! but its own.

use broker::DeliveryMode;
use broker_tests::local;
use local_gateway::{CorsOrigins, LocalGateway};
use reqwest::header::{ACCESS_CONTROL_ALLOW_ORIGIN, HeaderMap};

async fn preflight(gateway: &LocalGateway, path: &str, origin: &str) -> (u16, HeaderMap) {
    let response = reqwest::Client::new()
        .request(
            reqwest::Method::OPTIONS,
            format!("{}{path}", gateway.web_url().trim_end_matches('/')),
        )
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,content-type",
        )
        .send()
        .await
        .expect("preflight answered");
    (response.status().as_u16(), response.headers().clone())
}

async fn start(origins: CorsOrigins) -> LocalGateway {
    let mut options = local::options(DeliveryMode::Stream);
    options.web.cors_origins = origins;
    options.web.dev_tokens = true;
    local::start(options).await
}

#[tokio::test]
async fn by_default_any_origin_may_call_graphql() {
    let gateway = start(CorsOrigins::default()).await;

    let (status, headers) = preflight(&gateway, "/graphql", "http://elsewhere.example").await;
    assert!((200..300).contains(&status), "preflight status {status}");
    assert_eq!(headers[ACCESS_CONTROL_ALLOW_ORIGIN], "*");
    let methods = headers["access-control-allow-methods"].to_str().unwrap();
    assert!(
        methods.contains("POST") && methods.contains("GET"),
        "{methods}"
    );
    let allowed = headers["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(
        allowed.contains("authorization") && allowed.contains("content-type"),
        "{allowed}"
    );

    // The request itself carries the header too.
    let token = local::token(&gateway, "alice");
    let response = reqwest::Client::new()
        .post(gateway.graphql_url())
        .header("origin", "http://elsewhere.example")
        .bearer_auth(token)
        .json(&serde_json::json!({"query": "{ boards { id } }"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()[ACCESS_CONTROL_ALLOW_ORIGIN], "*");
}

#[tokio::test]
async fn a_configured_list_allows_only_its_origins() {
    let origins = CorsOrigins::parse("https://app.example, http://localhost:5173").unwrap();
    let gateway = start(origins).await;

    let (_, headers) = preflight(&gateway, "/graphql", "http://localhost:5173").await;
    assert_eq!(
        headers[ACCESS_CONTROL_ALLOW_ORIGIN],
        "http://localhost:5173"
    );
    let (_, headers) = preflight(&gateway, "/graphql", "https://evil.example").await;
    assert!(
        !headers.contains_key(ACCESS_CONTROL_ALLOW_ORIGIN),
        "an origin off the list is not allowed: {headers:?}"
    );
}

#[tokio::test]
async fn the_development_sign_in_allows_no_other_origin() {
    let gateway = start(CorsOrigins::default()).await;
    let (_, headers) = preflight(&gateway, "/dev/token", "http://elsewhere.example").await;
    assert!(
        !headers.contains_key(ACCESS_CONTROL_ALLOW_ORIGIN),
        "{headers:?}"
    );
}

#[test]
fn origins_are_parsed_strictly() {
    assert_eq!(CorsOrigins::parse("").unwrap(), CorsOrigins::Any);
    assert_eq!(CorsOrigins::parse(" * ").unwrap(), CorsOrigins::Any);
    assert!(CorsOrigins::parse("app.example").is_err());
    assert!(CorsOrigins::parse("https://a.example,*").is_err());
    assert!(matches!(
        CorsOrigins::parse("https://a.example,https://b.example").unwrap(),
        CorsOrigins::List(list) if list.len() == 2
    ));
}
