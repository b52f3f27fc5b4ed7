//! Delivery on Lambda.
//!
//! - [`stream`]: the events table's DynamoDB Stream -> [`broker::Broker::deliver_event`].
//! - [`fanout`]: SQS fan-out pages -> [`broker::Broker::deliver_page`].
//! - [`runtime`]: [`runtime::run_stream`] and [`runtime::run_fanout`], the mains an app's
//!   binaries call with the app.
//!
//! Both report per-record failures, so one bad record is retried (then sent to the failure
//! destination) without blocking the rest of its batch.

pub mod fanout;
pub mod runtime;
pub mod stream;
