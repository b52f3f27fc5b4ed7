//! The prices app's GraphQL schema.

use std::collections::BTreeSet;
use std::sync::Arc;

use async_graphql::{Context, ID, Object, Result, Schema, SimpleObject, Subscription};
use broker::{
    Audience, EventStream, Outbox, Topic, UserId, internal_error, listen, listen_public, principal,
    publish_error, registering,
};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use crate::store::LastPrices;

/// The most symbols one subscription may ask for.
pub const MAX_SYMBOLS: usize = 50;
/// The longest symbol, in bytes.
pub const MAX_SYMBOL_LEN: usize = 12;

/// The role a token needs to publish prices and send alerts (claim `roles`).
pub const BACKEND_ROLE: &str = "backend";

/// The price of one symbol at one moment, as published by the backend.
#[derive(Clone, Debug, PartialEq, SimpleObject, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Price {
    /// The symbol, upper case (see [`MAX_SYMBOL_LEN`]).
    pub symbol: String,
    /// The price: finite, never negative.
    pub price: f64,
    /// When the backend published it, milliseconds since the Unix epoch.
    pub at: f64,
}

/// A message the backend sent to one user.
#[derive(Clone, Debug, PartialEq, SimpleObject, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    /// The alert's id, a ULID.
    pub id: ID,
    /// The message, trimmed, 1 to 500 characters.
    pub message: String,
}

/// The prices app's schema, as built by [`build_schema`].
pub type PricesSchema = Schema<Query, Mutation, SubscriptionRoot>;

/// The schema with the last prices in `prices`, with the broker's prevalidation and the
/// app's depth and complexity limits.
pub fn build_schema(prices: LastPrices) -> PricesSchema {
    Schema::build(Query, Mutation, SubscriptionRoot)
        // Delivery renders each stored subscription without validating it again per event.
        .extension(broker::Prevalidation)
        .data(Arc::new(prices))
        .limit_depth(8)
        .limit_complexity(100)
        .finish()
}

/// The one topic every price travels on.
pub fn prices_topic() -> Topic {
    Topic::new("prices")
}

/// A user's alerts: derived from the user, never from input.
pub fn alerts_topic(user: &UserId) -> Topic {
    Topic::private(user, "alerts")
}

fn require_backend(ctx: &Context<'_>) -> Result<()> {
    principal(ctx)?;
    if broker::has_role(ctx, BACKEND_ROLE) {
        Ok(())
    } else {
        Err(format!("only the {BACKEND_ROLE} role may do this").into())
    }
}

/// Upper case, trimmed, letters, digits, `.` and `-` only.
fn valid_symbol(symbol: &str) -> Result<String> {
    let symbol = symbol.trim().to_ascii_uppercase();
    let fits = !symbol.is_empty()
        && symbol.len() <= MAX_SYMBOL_LEN
        && symbol
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
    if fits {
        Ok(symbol)
    } else {
        Err(
            format!("a symbol has 1 to {MAX_SYMBOL_LEN} letters, digits, '.' or '-': {symbol:?}")
                .into(),
        )
    }
}

/// The root of the app's queries.
#[derive(Debug)]
pub struct Query;

#[Object]
impl Query {
    /// The caller's user id.
    async fn me(&self, ctx: &Context<'_>) -> Result<ID> {
        Ok(ID(principal(ctx)?.to_string()))
    }

    /// The last price published of `symbol`, if any.
    async fn price(&self, ctx: &Context<'_>, symbol: String) -> Result<Option<Price>> {
        principal(ctx)?;
        let symbol = valid_symbol(&symbol)?;
        let prices = ctx.data::<Arc<LastPrices>>()?;
        prices.last(&symbol).await.map_err(internal_error)
    }
}

/// The root of the app's mutations.
#[derive(Debug)]
pub struct Mutation;

#[Object]
impl Mutation {
    /// Publishes a price to everyone listening to its symbol. Backend role only.
    async fn publish_price(&self, ctx: &Context<'_>, symbol: String, price: f64) -> Result<Price> {
        require_backend(ctx)?;
        let symbol = valid_symbol(&symbol)?;
        if !price.is_finite() || price < 0.0 {
            return Err("a price is a finite number, not negative".into());
        }
        let price = Price {
            symbol,
            price,
            at: broker::domain::now_ms() as f64,
        };
        // The symbol's last price and the event, in one commit.
        let changes = ctx
            .data::<Arc<LastPrices>>()?
            .record(&price)
            .map_err(internal_error)?;
        ctx.data::<Outbox>()?
            .publish_with(changes, prices_topic(), &price, Audience::Everyone)
            .await
            .map_err(publish_error)?;
        Ok(price)
    }

    /// Sends an alert to every frontend of `user_id` listening to `alerts`. Backend role
    /// only. Returns the alert.
    async fn send_alert(&self, ctx: &Context<'_>, user_id: ID, message: String) -> Result<Alert> {
        require_backend(ctx)?;
        let message = message.trim().to_owned();
        if message.is_empty() || message.chars().count() > 500 {
            return Err("an alert has 1 to 500 characters".into());
        }
        let user = UserId::new(user_id.as_str());
        let alert = Alert {
            id: ID(ulid::Ulid::new().to_string()),
            message,
        };
        ctx.data::<Outbox>()?
            .publish(alerts_topic(&user), &alert, Audience::User(user.clone()))
            .await
            .map_err(publish_error)?;
        Ok(alert)
    }
}

/// The root of the app's subscriptions.
#[derive(Debug)]
pub struct SubscriptionRoot;

#[Subscription]
impl SubscriptionRoot {
    /// Every price change of one of `symbols`, for any authenticated user. A price reads
    /// the same for every viewer: it is rendered once for all of them (`listen_public`), and
    /// the caller is checked at subscribe only.
    async fn price_changed(
        &self,
        ctx: &Context<'_>,
        symbols: Vec<String>,
    ) -> Result<EventStream<Price>> {
        if registering(ctx) {
            principal(ctx)?;
        }
        if symbols.is_empty() || symbols.len() > MAX_SYMBOLS {
            return Err(format!("ask for 1 to {MAX_SYMBOLS} symbols").into());
        }
        let wanted: BTreeSet<String> = symbols
            .iter()
            .map(|s| valid_symbol(s))
            .collect::<Result<_>>()?;
        // At delivery the event is checked against the symbols before any field is resolved:
        // a price of another symbol ends the stream empty, and nothing is rendered or sent.
        let prices = listen_public::<Price>(ctx, prices_topic())?;
        Ok(prices
            .filter(move |price| std::future::ready(wanted.contains(&price.symbol)))
            .boxed())
    }

    /// The caller's own alerts.
    async fn alerts(&self, ctx: &Context<'_>) -> Result<EventStream<Alert>> {
        let user = principal(ctx)?;
        listen(ctx, alerts_topic(user))
    }
}
