//! Helpers shared by the end-to-end tests: a local gateway on a free port, a WebSocket client
//! that speaks either subprotocol, GraphQL over HTTP. What the benchmarks use too lives in
//! [`testkit`], re-exported here under the paths the tests name.

#![allow(
    missing_docs,
    missing_debug_implementations,
    reason = "the end-to-end tests' helpers are read where the tests call them; public only so the test binaries can"
)]

pub mod contract;
pub mod fixtures;
pub mod iam;
pub mod local;

pub use testkit::{aws, documents, lambda, recorder};
