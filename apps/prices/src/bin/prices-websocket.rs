//! The WebSocket API's function for the prices app.

#[tokio::main]
async fn main() -> Result<(), graphql_api::runtime::Error> {
    graphql_api::runtime::run_websocket(prices::Prices).await
}
