//! [`BoardStore`] in the local mode's database file ([`broker::file`]).
//!
//! Three tables, laid out as the DynamoDB one is queried: `boards` (board id → board),
//! `owners` (owner, board id → board: a user's boards, oldest first, as the `byOwner` index)
//! and `cards` (board id, card id → card: a board's cards, oldest first). Ids are ULIDs, so
//! sort keys order by creation time.

use async_trait::async_trait;
use broker::file::{FileStore, Table};
use broker::{Changes, StoreError, UserId};

use crate::schema::{Board, Card};
use crate::store::{BOARD, BOARDS, BoardStore, CARDS, OWNERS, new_board_changes, new_card_changes};

/// [`BoardStore`] on three tables of the local mode's database file.
pub struct FileBoardStore {
    boards: Table<Board>,
    owners: Table<Board>,
    cards: Table<Card>,
}

impl std::fmt::Debug for FileBoardStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileBoardStore").finish_non_exhaustive()
    }
}

impl FileBoardStore {
    /// A store on `store`'s `boards`, `boards-by-owner` and `cards` tables.
    pub fn new(store: &FileStore) -> Self {
        Self {
            boards: store.table(BOARDS),
            owners: store.table(OWNERS),
            cards: store.table(CARDS),
        }
    }
}

#[async_trait]
impl BoardStore for FileBoardStore {
    async fn create_board(&self, board: &Board) -> Result<(), StoreError> {
        // The board first: a crash between the two writes leaves a board no list shows,
        // never a list entry without its board.
        self.boards.put_new(&board.id, BOARD, board).await?;
        self.owners.put(&board.owner, &board.id, board).await
    }

    fn create_board_changes(&self, board: &Board) -> Result<Changes, StoreError> {
        new_board_changes(board)
    }

    async fn board(&self, id: &str) -> Result<Option<Board>, StoreError> {
        self.boards.get(id, BOARD).await
    }

    async fn boards_of(&self, owner: &UserId) -> Result<Vec<Board>, StoreError> {
        let boards = self.owners.partition(owner.as_str()).await?;
        Ok(boards.into_iter().map(|(_, board)| board).collect())
    }

    async fn add_card(&self, card: &Card) -> Result<(), StoreError> {
        self.cards.put(&card.board_id, &card.id, card).await
    }

    fn add_card_changes(&self, card: &Card) -> Result<Changes, StoreError> {
        new_card_changes(card)
    }

    async fn cards_of(&self, board_id: &str) -> Result<Vec<Card>, StoreError> {
        let cards = self.cards.partition(board_id).await?;
        Ok(cards.into_iter().map(|(_, card)| card).collect())
    }

    async fn delete_board(&self, id: &str) -> Result<bool, StoreError> {
        let Some(board) = self.boards.get(id, BOARD).await? else {
            return Ok(false);
        };
        // The list entry first, the cards last: a crash in between leaves cards of a board
        // that no longer exists, which nothing reads.
        self.owners.delete(&board.owner, id).await?;
        let existed = self.boards.delete(id, BOARD).await?;
        self.cards.delete_partition(id).await?;
        Ok(existed)
    }
}
