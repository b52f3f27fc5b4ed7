//! The last price of each symbol: what `price(symbol)` answers, saved in one commit with
//! the event that publishes it, on the storage the process chose.
//!
//! One table, `prices`, keyed by the symbol alone (on DynamoDB the attribute `symbol`; in
//! memory and in the database file the partition, with an empty sort key), holding the
//! [`Price`] as it was published.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use broker::aws::dynamodb::{backend, from_item};
use broker::file::Table;
use broker::memory::MemoryTable;
use broker::{AppTable, Changes, StoreError};

use crate::schema::Price;

/// The table's name (`PRICES_TABLE` names it on AWS).
pub const TABLE: &str = "prices";

/// Its key attribute on DynamoDB.
pub const SYMBOL: &str = "symbol";

/// Where the last prices are.
#[derive(Debug)]
pub enum LastPrices {
    /// In memory, the tables the in-memory event log commits to.
    Memory(MemoryTable<Price>),
    /// In the local mode's database file.
    File(Table<Price>),
    /// On DynamoDB: the client and the deployed table's name.
    DynamoDb {
        /// The client.
        client: aws_sdk_dynamodb::Client,
        /// The deployed table's name.
        table: String,
    },
}

impl LastPrices {
    /// The table as a commit names it.
    fn app_table(&self) -> AppTable {
        match self {
            Self::Memory(_) | Self::File(_) => AppTable::new(TABLE),
            Self::DynamoDb { table, .. } => AppTable::new(table).keys(SYMBOL, None),
        }
    }

    /// The write that makes `price` its symbol's last, to commit with its event.
    pub fn record(&self, price: &Price) -> Result<Changes, StoreError> {
        Changes::new()
            .put(&self.app_table(), &price.symbol, "", price)
            .map_err(StoreError::backend)
    }

    /// The last price of `symbol`, if one was published.
    pub async fn last(&self, symbol: &str) -> Result<Option<Price>, StoreError> {
        match self {
            Self::Memory(table) => table.get(symbol, ""),
            Self::File(table) => table.get(symbol, "").await,
            Self::DynamoDb { client, table } => {
                let output = client
                    .get_item()
                    .table_name(table)
                    .set_key(Some(HashMap::from([(
                        SYMBOL.to_owned(),
                        AttributeValue::S(symbol.to_owned()),
                    )])))
                    .consistent_read(true)
                    .send()
                    .await
                    .map_err(backend("GetItem"))?;
                output.item.map(from_item).transpose()
            }
        }
    }
}
