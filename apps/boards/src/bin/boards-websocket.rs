//! The WebSocket API's function (`$connect`, `$disconnect`, `$default`) for the boards app.

/// mimalloc: a delivery costs about a fifth less CPU than with the system's allocator
/// (docs/benchmarks.md, the publisher benchmark).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> Result<(), graphql_api::runtime::Error> {
    graphql_api::runtime::run_websocket(boards::Boards).await
}
