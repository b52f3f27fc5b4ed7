//! The schema of the public cases: the example app's `cardAdded`, declared the same for
//! every viewer (`listen_public`), and a card field that reads the viewer, which half the
//! subscribers of the `public-half-viewer` case select.

use async_graphql::{ComplexObject, Context, EmptyMutation, ID, Object, Schema, SimpleObject};
use broker::{EventStream, Prevalidation, listen_public, principal};
use serde::Deserialize;

#[derive(Clone, Deserialize, SimpleObject)]
#[serde(rename_all = "camelCase")]
#[graphql(complex)]
struct Card {
    id: ID,
    board_id: ID,
    title: String,
}

#[ComplexObject]
impl Card {
    /// The viewer's user id: rendered per viewer.
    async fn viewer(&self, ctx: &Context<'_>) -> async_graphql::Result<String> {
        Ok(principal(ctx)?.to_string())
    }
}

pub(crate) struct Query;

#[Object]
impl Query {
    async fn ok(&self) -> bool {
        true
    }
}

pub(crate) struct SubscriptionRoot;

#[async_graphql::Subscription]
impl SubscriptionRoot {
    async fn card_added(
        &self,
        ctx: &Context<'_>,
        board_id: ID,
    ) -> async_graphql::Result<EventStream<Card>> {
        listen_public(ctx, boards::card_topic(&board_id))
    }
}

/// The public cases' schema, with the extension every app schema carries.
pub(crate) fn schema() -> Schema<Query, EmptyMutation, SubscriptionRoot> {
    Schema::build(Query, EmptyMutation, SubscriptionRoot)
        .extension(Prevalidation)
        .finish()
}
