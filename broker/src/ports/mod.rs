//! Ports: what the broker needs from the outside world, one port per file. Adapters live in
//! [`crate::memory`] (unit tests, the embedded local mode), `crate::file` (the local mode's
//! database file) and `crate::aws` (DynamoDB, SQS, API Gateway).

mod connections;
mod errors;
mod events;
mod fanout_queue;
mod gateway;
mod page_marks;
mod quotas;
mod replay_gate;
mod subscriptions;

pub use connections::ConnectionStore;
pub use errors::{BoxError, GatewayError, StoreError};
pub use events::{EventLog, StreamRead};
pub use fanout_queue::{FanoutPage, FanoutQueue};
pub use gateway::ConnectionGateway;
pub use page_marks::PageMarks;
pub use quotas::Quotas;
pub use replay_gate::{HandOver, Hold, ReplayGate};
pub use subscriptions::{Inserted, SubscriptionStore};
