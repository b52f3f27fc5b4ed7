//! The stream publisher's function for the prices app.

#[tokio::main]
async fn main() -> Result<(), graphql_api::runtime::Error> {
    publisher::runtime::run_stream(prices::Prices).await
}
