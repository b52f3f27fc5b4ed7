//! `broker-local` as the tests run it in a process of its own (so a test can `kill -9` it):
//! the same command line, serving the boards app, without the per-user limits (its tests
//! play hundreds of one user's subscribers).

use std::sync::Arc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    local_gateway::cli::main_with(&[("boards", || Arc::new(boards::Boards))], |options| {
        options.broker = options.broker.clone().without_user_limits();
    })
    .await
}
