//! The plug-in point: what an app gives the broker, and what the broker gives its resolvers.
//!
//! An app is one crate holding an async-graphql schema built from its own stores. It
//! implements [`App`]: the tables it keeps its data in (as plain data, [`TableSpec`]) and
//! how to build its schema on the storage the process chose ([`Storage`]). Everything that
//! runs the broker (the Lambda functions, the local mode, provisioning, the tests) receives
//! the app as a value; the broker itself names no app.
//!
//! Resolvers reach the broker through the request data: [`crate::principal`] (who is asking),
//! [`crate::listen`] (what a subscription listens to) and [`crate::Outbox`] (publishing a change).

use std::sync::Arc;

use crate::config::ConfigError;
use crate::graphql::GraphqlExecutor;
use crate::hooks::Hooks;

/// An app's schema, as the broker runs it: any `async_graphql::Schema` converts into one
/// (`schema.into()`).
#[derive(Clone)]
pub struct AppSchema(pub(crate) Arc<dyn GraphqlExecutor>);

impl std::fmt::Debug for AppSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppSchema").finish_non_exhaustive()
    }
}

impl<E: async_graphql::Executor> From<E> for AppSchema {
    fn from(schema: E) -> Self {
        Self(Arc::new(schema))
    }
}

/// A GraphQL API served by the broker.
///
/// ```
/// use broker::async_graphql::{EmptyMutation, EmptySubscription, Object, Schema};
/// use broker::{App, AppSchema, ConfigError, Storage};
///
/// struct Query;
///
/// #[Object]
/// impl Query {
///     async fn hello(&self) -> &str {
///         "world"
///     }
/// }
///
/// struct Hello;
///
/// impl App for Hello {
///     fn schema(&self, _storage: &Storage) -> Result<AppSchema, ConfigError> {
///         Ok(Schema::new(Query, EmptyMutation, EmptySubscription).into())
///     }
/// }
/// ```
pub trait App: Send + Sync + 'static {
    /// The tables the app keeps its data in, none by default. Provisioning creates them for
    /// the local mode and the tests; on AWS the SAM template declares the same.
    fn tables(&self) -> Vec<TableSpec> {
        Vec::new()
    }

    /// The app's schema with its stores on `storage`. Called once per process (a cold
    /// start, a local gateway); an app that cannot keep its data there says so with
    /// [`ConfigError::UnsupportedStorage`].
    fn schema(&self, storage: &Storage) -> Result<AppSchema, ConfigError>;

    /// The app's lifecycle hooks (connect, init, subscribe, complete, disconnect), none by
    /// default. Every process that runs the app installs them ([`crate::Broker::with_app_hooks`]).
    fn hooks(&self) -> Option<Arc<dyn Hooks>> {
        None
    }
}

/// Where an app's stores keep their data, as chosen by the process that runs the app.
#[non_exhaustive]
pub enum Storage {
    /// This process's memory: the local mode's `--store memory` and unit tests. An app's
    /// tables are [`crate::memory::MemoryTable`]s of these tables, the in-memory event
    /// log's ([`crate::memory::MemoryEventLog::tables`]), which commits an app's writes with
    /// their event.
    Memory(crate::memory::MemoryTables),
    /// One database file on this machine: the local mode's default. An app's tables are
    /// [`crate::file::Table`]s (`store.table("orders")`).
    #[cfg(feature = "file")]
    File(crate::file::FileStore),
    /// DynamoDB: a client and the deployed names of the app's [`App::tables`].
    #[cfg(feature = "aws")]
    DynamoDb(crate::aws::AppTables),
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Memory(_) => f.debug_tuple("Memory").finish_non_exhaustive(),
            #[cfg(feature = "file")]
            Self::File(_) => f.debug_tuple("File").finish_non_exhaustive(),
            #[cfg(feature = "aws")]
            Self::DynamoDb(tables) => f.debug_tuple("DynamoDb").field(tables).finish(),
        }
    }
}

impl Storage {
    /// How errors and logs name this storage.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Memory(_) => "memory",
            #[cfg(feature = "file")]
            Self::File(_) => "a file",
            #[cfg(feature = "aws")]
            Self::DynamoDb(_) => "DynamoDB",
        }
    }
}

/// One DynamoDB table of an app, as plain data: keys and global secondary indexes, every
/// attribute of them a string, pay per request, TTL on `ttl`.
///
/// `name` is the table's role in the app (`"orders"`); the deployed table's name comes
/// from the environment variable [`TableSpec::env_var`] (`ORDERS_TABLE`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableSpec {
    /// The table's role in the app, e.g. `"orders"`; see [`TableSpec::env_var`].
    pub name: &'static str,
    /// The attribute holding the partition key.
    pub partition_key: &'static str,
    /// The attribute holding the sort key, if the table has one.
    pub sort_key: Option<&'static str>,
    /// Its global secondary indexes.
    pub indexes: Vec<IndexSpec>,
}

/// A global secondary index, projecting all attributes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexSpec {
    /// The index's name, as queries name it.
    pub name: &'static str,
    /// The attribute holding the index's partition key.
    pub partition_key: &'static str,
    /// The attribute holding the index's sort key, if it has one.
    pub sort_key: Option<&'static str>,
}

impl TableSpec {
    /// A table keyed by `partition_key` alone, without indexes.
    pub fn new(name: &'static str, partition_key: &'static str) -> Self {
        Self {
            name,
            partition_key,
            sort_key: None,
            indexes: Vec::new(),
        }
    }

    /// The same table with a sort key as well.
    pub fn sort_key(mut self, sort_key: &'static str) -> Self {
        self.sort_key = Some(sort_key);
        self
    }

    /// The same table with one more global secondary index.
    pub fn index(mut self, index: IndexSpec) -> Self {
        self.indexes.push(index);
        self
    }

    /// The environment variable holding the deployed table's name: the name in upper case,
    /// `-` as `_`, then `_TABLE`.
    pub fn env_var(&self) -> String {
        table_env_var(self.name)
    }
}

/// See [`TableSpec::env_var`].
pub fn table_env_var(name: &str) -> String {
    format!("{}_TABLE", name.to_ascii_uppercase().replace('-', "_"))
}

impl IndexSpec {
    /// An index keyed by `partition_key` alone.
    pub fn new(name: &'static str, partition_key: &'static str) -> Self {
        Self {
            name,
            partition_key,
            sort_key: None,
        }
    }

    /// The same index with a sort key as well.
    pub fn sort_key(mut self, sort_key: &'static str) -> Self {
        self.sort_key = Some(sort_key);
        self
    }
}
