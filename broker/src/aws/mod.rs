//! AWS adapters for the ports: DynamoDB stores, the API Gateway Management API, SQS.
//!
//! # Table layout
//! The SAM template declares the same tables; [`provision`] creates them for the local mode
//! and the tests.
//!
//! - Connections: key `connectionId`; GSI `byPrincipal` (key `principal`, all attributes).
//!   Attributes `protocol`, `principal` (absent until known), `initialised`, `connectedAt`
//!   (ms), `ttl` (s).
//! - Subscriptions: key `topic` + `subscriptionKey` (`connectionId#operationId`); no
//!   index. Attributes `connectionId`, `operationId`, `protocol`, `principal`, `document`,
//!   `operationName`, `variables` (JSON text), `ttl`. Each subscription has a companion
//!   *claim* item in its connection's partition of the same table, through which a
//!   connection's subscriptions are found (see [`dynamodb`]). A topic whose fan-out pages
//!   are on an ordered queue has an item `#pages/{topic}` + `#pages` counting them
//!   (`pages`, `ttl`).
//! - Events: key `topic` + `eventId` (ULID); stream `NEW_IMAGE`. Attributes `payload` (JSON
//!   text), `audience` (required: a user id, or `*` for everyone), `publishedAt` (ms,
//!   optional), `ttl` (s), `delivered`.
//!
//! Expired items (`ttl <= now`) are filtered on every read: DynamoDB deletes them lazily
//! (often within two days) and emulators never do.

mod answer;
mod config;
pub mod dynamodb;
mod error;
mod gateway;
pub mod provision;
mod retry;
mod signed_post;
mod sqs;
mod wiring;

pub use config::{TableNames, config_loader, sdk_config};
pub use dynamodb::{
    DynamoDbConnectionStore, DynamoDbEventLog, DynamoDbPageMarks, DynamoDbQuotas,
    DynamoDbReplayGate, DynamoDbSubscriptionStore, event_from_image, event_to_image,
};
pub use error::AwsCallError;
pub use gateway::{
    ApiGatewayConnectionGateway, CLOSE_CODE_HEADER, CLOSE_REASON_HEADER, PostClient,
    management_endpoint,
};
pub use retry::RetryPolicy;
pub use sqs::{SqsFanoutQueue, deduplication_id, message_group_id};
pub use wiring::{AppTables, broker_from_env, ports};
