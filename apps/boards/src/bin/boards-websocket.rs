//! The WebSocket API's function (`$connect`, `$disconnect`, `$default`) for the boards app.

#[tokio::main]
async fn main() -> Result<(), graphql_api::runtime::Error> {
    graphql_api::runtime::run_websocket(boards::Boards).await
}
