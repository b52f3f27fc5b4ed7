//! The second example app: market prices, after the Powertools WebSocket RFC.
//!
//! It differs from the boards app in kind: prices are public (any authenticated user may
//! listen), each subscriber picks the symbols it wants, one backend role may publish, and
//! alerts are private to one user and pushed by a backend.
//!
//! - `priceChanged(symbols: [String!]!)`: every price change of one of `symbols`. All prices
//!   travel on one topic; a subscriber's symbols are compared with the event's before
//!   anything is rendered, so a change of a symbol nobody of a group asked for costs a set
//!   lookup, not a rendering.
//! - `publishPrice(symbol, price)`: only for tokens with the role `backend` (the JWT claim
//!   `roles: ["backend"]`).
//! - `alerts`: the caller's own alerts, which a backend sends with `sendAlert(userId, …)`.
//! - `price(symbol)`: the last price published of a symbol, saved in one commit with the
//!   event that published it (`Outbox::publish_with`): the last price and the events agree,
//!   and a publish that timed out saved nothing.
//!
//! Its one table, `prices` ([`store`]), holds the last price of each symbol; alerts are
//! events only (`Outbox::publish`).

pub mod schema;
pub mod store;

use broker::{App, AppSchema, ConfigError, Storage, TableSpec};

pub use schema::{Alert, Price, PricesSchema, alerts_topic, build_schema, prices_topic};
pub use store::LastPrices;

/// The prices app, as the broker runs it.
#[derive(Clone, Copy, Debug, Default)]
pub struct Prices;

impl App for Prices {
    fn tables(&self) -> Vec<TableSpec> {
        vec![TableSpec::new(store::TABLE, store::SYMBOL)]
    }

    fn schema(&self, storage: &Storage) -> Result<AppSchema, ConfigError> {
        let prices = match storage {
            Storage::Memory(tables) => LastPrices::Memory(tables.table(store::TABLE)),
            Storage::File(store) => LastPrices::File(store.table(store::TABLE)),
            Storage::DynamoDb(tables) => LastPrices::DynamoDb {
                client: tables.client().clone(),
                table: tables.name(store::TABLE)?.to_owned(),
            },
            other => return Err(ConfigError::UnsupportedStorage(other.name())),
        };
        Ok(build_schema(prices).into())
    }
}
