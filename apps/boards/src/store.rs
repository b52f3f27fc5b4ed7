//! Where the example app keeps its data: memory (local mode, tests) or DynamoDB.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use broker::{StoreError, UserId};

use crate::schema::{Board, Card};

/// Where the boards app keeps its boards and cards; one implementation per [`broker::Storage`].
#[async_trait]
pub trait BoardStore: Send + Sync {
    /// Stores a new board; [`StoreError::Conflict`] if its id is taken.
    async fn create_board(&self, board: &Board) -> Result<(), StoreError>;
    /// The board with this id, if there is one.
    async fn board(&self, id: &str) -> Result<Option<Board>, StoreError>;
    /// The boards `owner` created, oldest first.
    async fn boards_of(&self, owner: &UserId) -> Result<Vec<Board>, StoreError>;
    /// Stores a card; the caller has checked the board exists and who owns it.
    async fn add_card(&self, card: &Card) -> Result<(), StoreError>;
    /// A board's cards, oldest first.
    async fn cards_of(&self, board_id: &str) -> Result<Vec<Card>, StoreError>;
    /// Removes a board and its cards; whether the board was there.
    async fn delete_board(&self, id: &str) -> Result<bool, StoreError>;
}

/// [`BoardStore`] in this process's memory: the local mode's `--store memory` and the tests.
#[derive(Debug, Default)]
pub struct MemoryBoardStore {
    inner: Mutex<Boards>,
}

#[derive(Debug, Default)]
struct Boards {
    boards: Vec<Board>,
    by_id: HashMap<String, usize>,
    cards: Vec<Card>,
}

#[async_trait]
impl BoardStore for MemoryBoardStore {
    async fn create_board(&self, board: &Board) -> Result<(), StoreError> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner.by_id.contains_key(board.id.as_str()) {
            return Err(StoreError::Conflict(format!("board {} exists", *board.id)));
        }
        let index = inner.boards.len();
        inner.by_id.insert(board.id.to_string(), index);
        inner.boards.push(board.clone());
        Ok(())
    }

    async fn board(&self, id: &str) -> Result<Option<Board>, StoreError> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        Ok(inner.by_id.get(id).map(|&i| inner.boards[i].clone()))
    }

    async fn boards_of(&self, owner: &UserId) -> Result<Vec<Board>, StoreError> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        Ok(inner
            .boards
            .iter()
            .filter(|b| b.owner == owner.as_str())
            .cloned()
            .collect())
    }

    async fn add_card(&self, card: &Card) -> Result<(), StoreError> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.cards.push(card.clone());
        Ok(())
    }

    async fn delete_board(&self, id: &str) -> Result<bool, StoreError> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let Some(index) = inner.by_id.remove(id) else {
            return Ok(false);
        };
        inner.boards.remove(index);
        // Later boards moved down by one.
        for i in inner.by_id.values_mut() {
            if *i > index {
                *i -= 1;
            }
        }
        inner.cards.retain(|c| c.board_id.as_str() != id);
        Ok(true)
    }

    async fn cards_of(&self, board_id: &str) -> Result<Vec<Card>, StoreError> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        Ok(inner
            .cards
            .iter()
            .filter(|c| c.board_id.as_str() == board_id)
            .cloned()
            .collect())
    }
}
