//! `broker-local` as the tests run it in a process of its own (so a test can `kill -9` it):
//! the same command line, serving the boards app.

use std::sync::Arc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    local_gateway::cli::main(&[("boards", || Arc::new(boards::Boards))]).await
}
