//! The fan-out queue's function (the fan-out worker) for the boards app.

#[tokio::main]
async fn main() -> Result<(), graphql_api::runtime::Error> {
    publisher::runtime::run_fanout(boards::Boards).await
}
