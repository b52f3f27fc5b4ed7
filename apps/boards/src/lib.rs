//! The example app: boards and cards that keep all of one user's frontends in sync.
//!
//! Boards belong to the user who created them. Only the owner may add cards to a board or
//! listen to its cards; `boardCreated` listens on a topic derived from the caller's identity.
//!
//! The whole app is [`Boards`], its [`broker::App`]: one table, and a schema built on the
//! store the process chose. The binaries in `src/bin` are its four Lambda functions.

pub mod dynamodb;
pub mod file;
pub mod schema;
pub mod store;

use std::sync::Arc;

use broker::{App, AppSchema, ConfigError, IndexSpec, Storage, TableSpec};

pub use schema::{Board, BoardsSchema, Card, build_schema, card_topic};
pub use store::{BoardStore, MemoryBoardStore};

use crate::dynamodb::DynamoDbBoardStore;
use crate::file::FileBoardStore;

/// The app's one table (`BOARDS_TABLE` names it on AWS).
pub const TABLE: &str = "boards";

/// A user's boards: `owner` + `pk`, all attributes.
pub const BY_OWNER_INDEX: &str = "byOwner";

/// The boards app, as the broker runs it.
#[derive(Clone, Copy, Debug, Default)]
pub struct Boards;

impl App for Boards {
    fn tables(&self) -> Vec<TableSpec> {
        // A board and its cards share a partition; see `dynamodb` for the item layout.
        vec![
            TableSpec::new(TABLE, "pk")
                .sort_key("sk")
                .index(IndexSpec::new(BY_OWNER_INDEX, "owner").sort_key("pk")),
        ]
    }

    fn schema(&self, storage: &Storage) -> Result<AppSchema, ConfigError> {
        let store: Arc<dyn BoardStore> = match storage {
            Storage::Memory(tables) => Arc::new(MemoryBoardStore::new(tables)),
            Storage::File(store) => Arc::new(FileBoardStore::new(store)),
            Storage::DynamoDb(tables) => Arc::new(DynamoDbBoardStore::new(
                tables.client().clone(),
                tables.name(TABLE)?,
            )),
            other => return Err(ConfigError::UnsupportedStorage(other.name())),
        };
        Ok(build_schema(store).into())
    }
}
