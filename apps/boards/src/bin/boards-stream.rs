//! The events table's stream function (the stream publisher) for the boards app.

/// mimalloc: a delivery costs about a fifth less CPU than with the system's allocator
/// (docs/benchmarks.md, the publisher benchmark).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> Result<(), graphql_api::runtime::Error> {
    publisher::runtime::run_stream(boards::Boards).await
}
