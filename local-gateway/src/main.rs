//! `broker-local`: the whole system on one machine, serving one of the apps under `apps/`
//! (`--app`, the first by default).

use std::sync::Arc;

use local_gateway::cli::AppChoice;

/// The apps `broker-local` is built with; adding one is one line (and a dependency).
const APPS: &[AppChoice] = &[
    ("boards", || Arc::new(boards::Boards)),
    ("prices", || Arc::new(prices::Prices)),
];

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    local_gateway::cli::main(APPS).await
}
