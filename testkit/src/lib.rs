//! What the tests (`tests/`) and the benchmarks (`bench/`) share, so neither depends on the
//! other: moto helpers and a scripted HTTP server ([`aws`]), the Lambda Runtime API on one
//! machine and the functions' environment ([`lambda`]), a recording proxy in front of
//! an endpoint ([`recorder`]), the `events/` sample events
//! ([`fixtures`]), and hostile GraphQL documents ([`documents`]). Dev-only: no shipped
//! binary links it.

#![allow(
    missing_docs,
    missing_debug_implementations,
    reason = "test support shared by the tests and the benchmarks, read where they call it"
)]

pub mod aws;
pub mod documents;
pub mod fixtures;
pub mod lambda;
pub mod recorder;
