//! Where the example app keeps its data: memory (local mode, tests), the local mode's
//! database file, or DynamoDB.

use async_trait::async_trait;
use broker::memory::{MemoryTable, MemoryTables};
use broker::{AppTable, Changes, StoreError, UserId};

use crate::schema::{Board, Card};

/// Where the boards app keeps its boards and cards; one implementation per [`broker::Storage`].
#[async_trait]
pub trait BoardStore: Send + Sync {
    /// Stores a new board; [`StoreError::Conflict`] if its id is taken. A write of its own,
    /// for data loaded without an event; the app commits [`Self::create_board_changes`]
    /// with its event instead.
    async fn create_board(&self, board: &Board) -> Result<(), StoreError>;
    /// The writes that store a new board (its id must be free), to commit with the event
    /// that announces it ([`broker::Outbox::publish_with`]).
    fn create_board_changes(&self, board: &Board) -> Result<Changes, StoreError>;
    /// The board with this id, if there is one.
    async fn board(&self, id: &str) -> Result<Option<Board>, StoreError>;
    /// The boards `owner` created, oldest first.
    async fn boards_of(&self, owner: &UserId) -> Result<Vec<Board>, StoreError>;
    /// Stores a card; the caller has checked the board exists and who owns it. A write of
    /// its own, as [`Self::create_board`].
    async fn add_card(&self, card: &Card) -> Result<(), StoreError>;
    /// The writes that store a card, on the condition that its board is still there, to
    /// commit with the event that announces it.
    fn add_card_changes(&self, card: &Card) -> Result<Changes, StoreError>;
    /// A board's cards, oldest first.
    async fn cards_of(&self, board_id: &str) -> Result<Vec<Card>, StoreError>;
    /// Removes a board and its cards; whether the board was there.
    async fn delete_board(&self, id: &str) -> Result<bool, StoreError>;
}

/// [`BoardStore`] in this process's memory: the local mode's `--store memory` and the tests.
/// Laid out as [`crate::file::FileBoardStore`], on the in-memory tables the broker's
/// in-memory event log commits the app's writes to ([`MemoryEventLog::tables`]).
#[derive(Debug)]
pub struct MemoryBoardStore {
    boards: MemoryTable<Board>,
    owners: MemoryTable<Board>,
    cards: MemoryTable<Card>,
}

impl MemoryBoardStore {
    /// A store on `tables`' `boards`, `boards-by-owner` and `cards` tables: for the atomic
    /// publish to write where this store reads, the tables of the broker's event log.
    pub fn new(tables: &MemoryTables) -> Self {
        Self {
            boards: tables.table(BOARDS),
            owners: tables.table(OWNERS),
            cards: tables.table(CARDS),
        }
    }
}

/// The tables of the memory and file stores: board id → board, (owner, board id) → board,
/// (board id, card id) → card.
pub(crate) const BOARDS: &str = "boards";
pub(crate) const OWNERS: &str = "boards-by-owner";
pub(crate) const CARDS: &str = "cards";

/// Boards have one item each: the partition is the board id, the sort key empty.
pub(crate) const BOARD: &str = "";

/// What the memory and file stores commit to create a board: the board where its id must be
/// free, and its entry in its owner's list.
pub(crate) fn new_board_changes(board: &Board) -> Result<Changes, StoreError> {
    let changes = Changes::new()
        .put_new(&AppTable::new(BOARDS), &board.id, BOARD, board)
        .and_then(|c| c.put(&AppTable::new(OWNERS), &board.owner, &board.id, board))
        .map_err(StoreError::backend)?;
    Ok(changes)
}

/// What the memory and file stores commit to add a card: the card, if its board is still
/// there.
pub(crate) fn new_card_changes(card: &Card) -> Result<Changes, StoreError> {
    Changes::new()
        .require(&AppTable::new(BOARDS), &card.board_id, BOARD)
        .put_new(&AppTable::new(CARDS), &card.board_id, &card.id, card)
        .map_err(StoreError::backend)
}

#[async_trait]
impl BoardStore for MemoryBoardStore {
    async fn create_board(&self, board: &Board) -> Result<(), StoreError> {
        if self.boards.get(&board.id, BOARD)?.is_some() {
            return Err(StoreError::Conflict(format!("board {} exists", *board.id)));
        }
        self.boards.put(&board.id, BOARD, board)?;
        self.owners.put(&board.owner, &board.id, board)
    }

    fn create_board_changes(&self, board: &Board) -> Result<Changes, StoreError> {
        new_board_changes(board)
    }

    async fn board(&self, id: &str) -> Result<Option<Board>, StoreError> {
        self.boards.get(id, BOARD)
    }

    async fn boards_of(&self, owner: &UserId) -> Result<Vec<Board>, StoreError> {
        let boards = self.owners.partition(owner.as_str())?;
        Ok(boards.into_iter().map(|(_, board)| board).collect())
    }

    async fn add_card(&self, card: &Card) -> Result<(), StoreError> {
        self.cards.put(&card.board_id, &card.id, card)
    }

    fn add_card_changes(&self, card: &Card) -> Result<Changes, StoreError> {
        new_card_changes(card)
    }

    async fn cards_of(&self, board_id: &str) -> Result<Vec<Card>, StoreError> {
        let cards = self.cards.partition(board_id)?;
        Ok(cards.into_iter().map(|(_, card)| card).collect())
    }

    async fn delete_board(&self, id: &str) -> Result<bool, StoreError> {
        let Some(board) = self.boards.get(id, BOARD)? else {
            return Ok(false);
        };
        self.owners.delete(&board.owner, id);
        let existed = self.boards.delete(id, BOARD);
        self.cards.delete_partition(id);
        Ok(existed)
    }
}
