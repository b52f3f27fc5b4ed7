//! [`BoardStore`] on one DynamoDB table (the app table).
//!
//! A board and its cards share a partition, `BOARD#{boardId}`: the board item has sort key
//! `BOARD`, each card `CARD#{cardId}`. The GSI `byOwner` (`owner` + `pk`) lists a user's
//! boards; only board items carry `owner`, so cards stay out of it.

use std::collections::HashMap;

use crate::BY_OWNER_INDEX;
use async_graphql::ID;
use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;
use broker::aws::dynamodb::{backend, from_item, put_new, to_item};
use broker::{AppTable, Changes, StoreError, UserId};
use serde::{Deserialize, Serialize};

use crate::schema::{Board, Card};
use crate::store::BoardStore;

const BOARD_PREFIX: &str = "BOARD#";
const BOARD_SORT_KEY: &str = "BOARD";
const CARD_PREFIX: &str = "CARD#";

/// [`BoardStore`] on the app's DynamoDB table, laid out as described above.
#[derive(Debug)]
pub struct DynamoDbBoardStore {
    client: Client,
    table: String,
}

impl DynamoDbBoardStore {
    /// A store on the deployed table named `table`.
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BoardItem {
    pk: String,
    sk: String,
    id: String,
    owner: String,
    title: String,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CardItem {
    pk: String,
    sk: String,
    id: String,
    board_id: String,
    title: String,
}

impl From<CardItem> for Card {
    fn from(item: CardItem) -> Self {
        Self {
            id: ID(item.id),
            board_id: ID(item.board_id),
            title: item.title,
        }
    }
}

impl From<BoardItem> for Board {
    fn from(item: BoardItem) -> Self {
        Self {
            id: ID(item.id),
            title: item.title,
            owner: item.owner,
        }
    }
}

fn board_key(id: &str) -> HashMap<String, AttributeValue> {
    HashMap::from([
        (
            "pk".to_owned(),
            AttributeValue::S(format!("{BOARD_PREFIX}{id}")),
        ),
        (
            "sk".to_owned(),
            AttributeValue::S(BOARD_SORT_KEY.to_owned()),
        ),
    ])
}

impl BoardItem {
    fn of(board: &Board) -> Self {
        Self {
            pk: format!("{BOARD_PREFIX}{}", *board.id),
            sk: BOARD_SORT_KEY.to_owned(),
            id: board.id.to_string(),
            owner: board.owner.clone(),
            title: board.title.clone(),
        }
    }
}

impl CardItem {
    fn of(card: &Card) -> Self {
        Self {
            pk: format!("{BOARD_PREFIX}{}", *card.board_id),
            sk: format!("{CARD_PREFIX}{}", *card.id),
            id: card.id.to_string(),
            board_id: card.board_id.to_string(),
            title: card.title.clone(),
        }
    }
}

impl DynamoDbBoardStore {
    /// The app table, as a commit with an event names it (keys `pk` and `sk`).
    fn app_table(&self) -> AppTable {
        AppTable::new(&self.table)
    }
}

#[async_trait]
impl BoardStore for DynamoDbBoardStore {
    async fn create_board(&self, board: &Board) -> Result<(), StoreError> {
        let item = BoardItem::of(board);
        put_new(&self.client, &self.table, to_item(&item)?, "pk", || {
            format!("board {} exists", *board.id)
        })
        .await
    }

    fn create_board_changes(&self, board: &Board) -> Result<Changes, StoreError> {
        let item = BoardItem::of(board);
        Changes::new()
            .put_new(&self.app_table(), &item.pk, &item.sk, &item)
            .map_err(StoreError::backend)
    }

    async fn board(&self, id: &str) -> Result<Option<Board>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(board_key(id)))
            .consistent_read(true)
            .send()
            .await
            .map_err(backend("GetItem"))?;
        output
            .item
            .map(|item| from_item::<BoardItem>(item).map(Board::from))
            .transpose()
    }

    async fn boards_of(&self, owner: &UserId) -> Result<Vec<Board>, StoreError> {
        let mut pages = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(BY_OWNER_INDEX)
            .key_condition_expression("#owner = :owner AND begins_with(#pk, :prefix)")
            // Only board items have an owner today; the filter keeps it so if cards get one.
            .filter_expression("#sk = :board")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_names("#pk", "pk")
            .expression_attribute_names("#sk", "sk")
            .expression_attribute_values(":owner", AttributeValue::S(owner.to_string()))
            .expression_attribute_values(":prefix", AttributeValue::S(BOARD_PREFIX.to_owned()))
            .expression_attribute_values(":board", AttributeValue::S(BOARD_SORT_KEY.to_owned()))
            .into_paginator()
            .items()
            .send();
        let mut boards = Vec::new();
        while let Some(item) = pages.next().await {
            let item = item.map_err(backend("Query"))?;
            boards.push(Board::from(from_item::<BoardItem>(item)?));
        }
        // Board ids are ULIDs: sorted by id is oldest first.
        boards.sort_by(|a, b| a.id.as_str().cmp(b.id.as_str()));
        Ok(boards)
    }

    async fn add_card(&self, card: &Card) -> Result<(), StoreError> {
        let item = CardItem::of(card);
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(to_item(&item)?))
            .send()
            .await
            .map_err(backend("PutItem"))?;
        Ok(())
    }

    fn add_card_changes(&self, card: &Card) -> Result<Changes, StoreError> {
        let item = CardItem::of(card);
        // The card, if its board is still there.
        Changes::new()
            .require(&self.app_table(), &item.pk, BOARD_SORT_KEY)
            .put_new(&self.app_table(), &item.pk, &item.sk, &item)
            .map_err(StoreError::backend)
    }

    async fn cards_of(&self, board_id: &str) -> Result<Vec<Card>, StoreError> {
        // The board's partition, card items only; sort keys hold ULIDs, so oldest first.
        let mut pages = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("#pk = :pk AND begins_with(#sk, :card)")
            .expression_attribute_names("#pk", "pk")
            .expression_attribute_names("#sk", "sk")
            .expression_attribute_values(
                ":pk",
                AttributeValue::S(format!("{BOARD_PREFIX}{board_id}")),
            )
            .expression_attribute_values(":card", AttributeValue::S(CARD_PREFIX.to_owned()))
            .consistent_read(true)
            .into_paginator()
            .items()
            .send();
        let mut cards = Vec::new();
        while let Some(item) = pages.next().await {
            let item = item.map_err(backend("Query"))?;
            cards.push(Card::from(from_item::<CardItem>(item)?));
        }
        Ok(cards)
    }

    async fn delete_board(&self, id: &str) -> Result<bool, StoreError> {
        // The board's partition holds the board and its cards. Cards go first: should a
        // delete fail half-way, the board is still there to delete again.
        let mut pages = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("#pk = :pk")
            .expression_attribute_names("#pk", "pk")
            .expression_attribute_values(":pk", AttributeValue::S(format!("{BOARD_PREFIX}{id}")))
            .projection_expression("pk, sk")
            .consistent_read(true)
            .into_paginator()
            .items()
            .send();
        let mut keys = Vec::new();
        while let Some(item) = pages.next().await {
            keys.push(item.map_err(backend("Query"))?);
        }
        let is_board = |key: &HashMap<String, AttributeValue>| {
            key.get("sk") == Some(&AttributeValue::S(BOARD_SORT_KEY.to_owned()))
        };
        let found = keys.iter().any(is_board);
        keys.sort_by_key(is_board);
        for key in keys {
            self.client
                .delete_item()
                .table_name(&self.table)
                .set_key(Some(key))
                .send()
                .await
                .map_err(backend("DeleteItem"))?;
        }
        Ok(found)
    }
}
