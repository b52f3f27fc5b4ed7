//! The HTTP API's function (GraphQL over HTTP) for the prices app.

#[tokio::main]
async fn main() -> Result<(), graphql_api::runtime::Error> {
    graphql_api::runtime::run_http(prices::Prices).await
}
