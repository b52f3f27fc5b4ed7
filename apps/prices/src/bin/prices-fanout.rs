//! The fan-out worker's function for the prices app.

#[tokio::main]
async fn main() -> Result<(), graphql_api::runtime::Error> {
    publisher::runtime::run_fanout(prices::Prices).await
}
