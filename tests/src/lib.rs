//! Helpers shared by the end-to-end tests: a local gateway on a free port, a WebSocket client
//! that speaks either subprotocol, GraphQL over HTTP.

pub mod aws;
pub mod contract;
pub mod fixtures;
pub mod lambda;
pub mod local;
