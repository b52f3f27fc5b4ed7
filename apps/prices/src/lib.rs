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
//!
//! The app keeps no data: [`Prices`] needs no table and serves on any storage.

pub mod schema;

use broker::{App, AppSchema, ConfigError, Storage};

pub use schema::{Alert, Price, PricesSchema, alerts_topic, build_schema, prices_topic};

/// The prices app, as the broker runs it.
#[derive(Clone, Copy, Debug, Default)]
pub struct Prices;

impl App for Prices {
    fn schema(&self, _storage: &Storage) -> Result<AppSchema, ConfigError> {
        Ok(build_schema().into())
    }
}
