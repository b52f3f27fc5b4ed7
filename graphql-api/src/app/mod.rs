//! The example app: boards and cards that keep all of one user's frontends in sync.
//!
//! Boards belong to the user who created them. Only the owner may add cards to a board or
//! listen to its cards; `boardCreated` listens on a topic derived from the caller's identity.

#[cfg(feature = "aws")]
pub mod dynamodb;
pub mod schema;
pub mod store;

pub use schema::{AppSchema, Board, Card, build_schema, card_topic};
pub use store::{BoardStore, MemoryBoardStore};
