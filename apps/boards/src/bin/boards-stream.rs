//! The events table's stream function (the stream publisher) for the boards app.

#[tokio::main]
async fn main() -> Result<(), graphql_api::runtime::Error> {
    publisher::runtime::run_stream(boards::Boards).await
}
