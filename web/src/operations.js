import { gql } from "@apollo/client";

export const BOARDS = gql`
  query Boards {
    boards {
      id
      title
    }
  }
`;

export const BOARD_CREATED = gql`
  subscription BoardCreated {
    boardCreated {
      id
      title
    }
  }
`;

export const CREATE_BOARD = gql`
  mutation CreateBoard($title: String!) {
    createBoard(title: $title) {
      id
      title
    }
  }
`;

export const CARDS = gql`
  query Cards($boardId: ID!) {
    cards(boardId: $boardId) {
      id
      boardId
      title
    }
  }
`;

export const CARD_ADDED = gql`
  subscription CardAdded($boardId: ID!) {
    cardAdded(boardId: $boardId) {
      id
      boardId
      title
    }
  }
`;

export const ADD_CARD = gql`
  mutation AddCard($boardId: ID!, $title: String!) {
    addCard(boardId: $boardId, title: $title) {
      id
      boardId
      title
    }
  }
`;

export const DELETE_BOARD = gql`
  mutation DeleteBoard($boardId: ID!) {
    deleteBoard(boardId: $boardId)
  }
`;

// Takes a board out of the cached list: after this tab deleted it, or when the broker ended
// the board's `cardAdded` subscription because another tab did.
export function forgetBoard(cache, boardId) {
  cache.updateQuery({ query: BOARDS }, (existing) =>
    existing ? { boards: existing.boards.filter((board) => board.id !== boardId) } : undefined,
  );
}

// Appends `item` to `list` unless an entry with its id is there already: the tab that made a
// change sees it twice, once as its mutation's answer and once as the subscription event
// every tab of the user gets, in either order.
export function appendOnce(list, item) {
  if (!item || list.some((entry) => entry.id === item.id)) return list;
  return [...list, item];
}
