//! Delivery on Lambda.
//!
//! - [`stream`]: the events table's DynamoDB Stream -> [`broker::Broker::deliver_event`].
//! - [`fanout`]: SQS fan-out pages -> [`broker::Broker::deliver_page`].
//! - [`runtime`]: [`runtime::run_stream`] and [`runtime::run_fanout`], the mains an app's
//!   binaries call with the app.
//! - [`DeliveryError`]: why a record or message failed, as the functions log it.
//!
//! Both report per-record failures, so one bad record is retried (then sent to the failure
//! destination) without blocking the rest of its batch.

mod error;
pub mod fanout;
pub mod runtime;
pub mod stream;

pub use error::DeliveryError;
