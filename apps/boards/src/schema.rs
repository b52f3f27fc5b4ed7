//! The example app's GraphQL schema.

use std::sync::Arc;

use async_graphql::{Context, ID, Object, Result, Schema, SimpleObject, Subscription};
use broker::{
    Audience, EventStream, Outbox, PublishError, StoreError, SubscriptionsOf, Topic, UserId,
    internal_error, listen, principal, publish_error, registering,
};
use serde::{Deserialize, Serialize};

use crate::store::BoardStore;

/// A board: a titled list of cards, owned by the user who created it.
#[derive(Clone, Debug, PartialEq, SimpleObject, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Board {
    /// The board's id, a ULID.
    pub id: ID,
    /// The board's title, trimmed, 1 to 200 characters.
    pub title: String,
    /// The user who created it. Not exposed: other users' ids are nobody's business.
    #[graphql(skip)]
    pub owner: String,
}

/// One card on a board.
#[derive(Clone, Debug, PartialEq, SimpleObject, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Card {
    /// The card's id, a ULID.
    pub id: ID,
    /// The board it is on.
    pub board_id: ID,
    /// The card's title, trimmed, 1 to 200 characters.
    pub title: String,
}

/// The boards app's schema, as built by [`build_schema`].
pub type BoardsSchema = Schema<Query, Mutation, SubscriptionRoot>;

/// The schema with its data in `store`, with the broker's prevalidation and the app's depth
/// and complexity limits.
pub fn build_schema(store: Arc<dyn BoardStore>) -> BoardsSchema {
    Schema::build(Query, Mutation, SubscriptionRoot)
        // Delivery renders each stored subscription without validating it again per event.
        .extension(broker::Prevalidation)
        .data(store)
        .limit_depth(16)
        .limit_complexity(500)
        .finish()
}

/// The topic a board's new cards are published on.
pub fn card_topic(board_id: &str) -> Topic {
    Topic::new(format!("board/{board_id}/cardAdded"))
}

fn store<'a>(ctx: &'a Context<'_>) -> Result<&'a Arc<dyn BoardStore>> {
    ctx.data::<Arc<dyn BoardStore>>()
}

/// The board, if `user` owns it. Another user's board answers exactly like a missing one,
/// so ids cannot be probed.
async fn owned_board(ctx: &Context<'_>, user: &UserId, board_id: &str) -> Result<Board> {
    match store(ctx)?.board(board_id).await.map_err(internal_error)? {
        Some(board) if board.owner == user.as_str() => Ok(board),
        _ => Err(format!("board {board_id} not found").into()),
    }
}

/// The root of the app's queries.
#[derive(Debug)]
pub struct Query;

#[Object]
impl Query {
    /// The caller's boards.
    async fn boards(&self, ctx: &Context<'_>) -> Result<Vec<Board>> {
        let user = principal(ctx)?;
        store(ctx)?.boards_of(user).await.map_err(internal_error)
    }

    /// The cards of a board the caller owns, oldest first.
    async fn cards(&self, ctx: &Context<'_>, board_id: ID) -> Result<Vec<Card>> {
        let user = principal(ctx)?;
        let board = owned_board(ctx, user, &board_id).await?;
        store(ctx)?
            .cards_of(&board.id)
            .await
            .map_err(internal_error)
    }
}

/// The root of the app's mutations.
#[derive(Debug)]
pub struct Mutation;

#[Object]
impl Mutation {
    async fn create_board(&self, ctx: &Context<'_>, title: String) -> Result<Board> {
        let user = principal(ctx)?;
        let title = valid_title(&title)?;
        let board = Board {
            id: ID(ulid::Ulid::new().to_string()),
            title,
            owner: user.to_string(),
        };
        // The board and its event are stored together, or neither is.
        let changes = store(ctx)?
            .create_board_changes(&board)
            .map_err(internal_error)?;
        ctx.data::<Outbox>()?
            .publish_with(
                changes,
                Topic::private(user, "boardCreated"),
                &board,
                Audience::User(user.clone()),
            )
            .await
            .map_err(publish_error)?;
        Ok(board)
    }

    async fn add_card(&self, ctx: &Context<'_>, board_id: ID, title: String) -> Result<Card> {
        let user = principal(ctx)?;
        let title = valid_title(&title)?;
        let board = owned_board(ctx, user, &board_id).await?;
        let card = Card {
            id: ID(ulid::Ulid::new().to_string()),
            board_id: board.id.clone(),
            title,
        };
        // The card and its event are stored together, if the board is still there.
        let changes = store(ctx)?
            .add_card_changes(&card)
            .map_err(internal_error)?;
        ctx.data::<Outbox>()?
            .publish_with(
                changes,
                card_topic(&board.id),
                &card,
                Audience::User(user.clone()),
            )
            .await
            .map_err(|error| match error {
                PublishError::Store(StoreError::Conflict(_)) => {
                    format!("board {} not found", *board_id).into()
                }
                other => publish_error(other),
            })?;
        Ok(card)
    }

    /// Deletes a board the caller owns, and its cards. Whoever listens to its cards (any of
    /// the owner's frontends) receives `complete`: nothing keeps listening to a board that
    /// is gone.
    async fn delete_board(&self, ctx: &Context<'_>, board_id: ID) -> Result<bool> {
        let user = principal(ctx)?;
        let board = owned_board(ctx, user, &board_id).await?;
        store(ctx)?
            .delete_board(&board.id)
            .await
            .map_err(internal_error)?;
        ctx.data::<Outbox>()?
            .end_subscriptions(SubscriptionsOf::Topic(card_topic(&board.id)))
            .await
            .map_err(internal_error)?;
        Ok(true)
    }
}

fn valid_title(title: &str) -> Result<String> {
    let title = title.trim().to_owned();
    match title.chars().count() {
        0 => Err("title must not be empty".into()),
        1..=200 => Ok(title),
        _ => Err("title must be at most 200 characters".into()),
    }
}

/// The root of the app's subscriptions.
#[derive(Debug)]
pub struct SubscriptionRoot;

#[Subscription]
impl SubscriptionRoot {
    /// The caller's own new boards, from any of their frontends.
    async fn board_created(&self, ctx: &Context<'_>) -> Result<EventStream<Board>> {
        let user = principal(ctx)?;
        listen(ctx, Topic::private(user, "boardCreated"))
    }

    /// New cards of a board the caller owns.
    async fn card_added(&self, ctx: &Context<'_>, board_id: ID) -> Result<EventStream<Card>> {
        let user = principal(ctx)?;
        // Ownership is checked once, at subscribe. At delivery the event's audience (the
        // board's owner) decides who receives it, so rendering reads nothing from the store.
        if registering(ctx) {
            owned_board(ctx, user, &board_id).await?;
        }
        listen(ctx, card_topic(&board_id))
    }
}
