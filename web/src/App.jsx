import { useEffect, useState } from "react";
import {
  ApolloProvider,
  useApolloClient,
  useMutation,
  useQuery,
  useSubscription,
} from "@apollo/client/react";

import { createApollo } from "./apollo.js";
import { endpoints } from "./config.js";
import {
  ADD_CARD,
  BOARD_CREATED,
  BOARDS,
  CARD_ADDED,
  CARDS,
  CREATE_BOARD,
  DELETE_BOARD,
  appendOnce,
  forgetBoard,
} from "./operations.js";
import { loadSession, mintDevelopmentToken, saveSession, userOfToken } from "./session.js";

export function App() {
  const [session, setSession] = useState(loadSession);
  const signIn = (next) => {
    saveSession(next);
    setSession(next);
  };
  return session ? (
    <Workspace key={session.token} session={session} onSignOut={() => signIn(null)} />
  ) : (
    <SignIn onSignIn={signIn} />
  );
}

function SignIn({ onSignIn }) {
  const { token: tokenUrl } = endpoints();
  const [name, setName] = useState("");
  const [pasted, setPasted] = useState("");
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);

  async function withName(event) {
    event.preventDefault();
    setBusy(true);
    setError(null);
    try {
      onSignIn(await mintDevelopmentToken(tokenUrl, name.trim()));
    } catch (e) {
      setError(e.message);
    } finally {
      setBusy(false);
    }
  }

  function withToken(event) {
    event.preventDefault();
    const token = pasted.trim();
    const user = userOfToken(token);
    if (!user) {
      setError("that does not look like a JWT with a `sub` claim");
      return;
    }
    onSignIn({ user, token });
  }

  return (
    <main className="sign-in">
      <h1>Boards</h1>
      <p className="lede">Every change shows up live in every tab of the same user, and in nobody else's.</p>
      {tokenUrl && (
        <form onSubmit={withName} aria-label="sign in with a user name">
          <label htmlFor="user">User name</label>
          <div className="row">
            <input
              id="user"
              name="user"
              autoFocus
              required
              maxLength={64}
              pattern="[A-Za-z0-9._@\-]+"
              placeholder="alice"
              value={name}
              onChange={(e) => setName(e.target.value)}
            />
            <button type="submit" disabled={busy}>
              Sign in
            </button>
          </div>
          <p className="warning" role="note">
            Local development only: the local mode hands out a token for any name, with no
            password. A deployed stack has no such endpoint; there your backend issues the tokens.
          </p>
        </form>
      )}
      <details open={!tokenUrl}>
        <summary>Sign in with a token</summary>
        <form onSubmit={withToken} aria-label="sign in with a token">
          <label htmlFor="token">A JWT issued by your backend (HS256; its sub claim is the user id)</label>
          <textarea id="token" rows={3} value={pasted} onChange={(e) => setPasted(e.target.value)} />
          <button type="submit">Use this token</button>
        </form>
      </details>
      {error && <p className="error" role="alert">{error}</p>}
    </main>
  );
}

function Workspace({ session, onSignOut }) {
  const [state, setState] = useState("connecting");
  const [apollo, setApollo] = useState(null);
  // The client and its socket live exactly as long as this signed-in view.
  useEffect(() => {
    const next = createApollo({ endpoints: endpoints(), token: session.token, onState: setState });
    setApollo(next);
    return () => next.dispose();
  }, [session.token]);
  if (!apollo) return null;

  return (
    <ApolloProvider client={apollo.client}>
      <header>
        <h1>Boards</h1>
        <ConnectionBadge state={state} />
        <span className="user" data-testid="user">
          {session.user}
        </span>
        <button className="quiet" onClick={onSignOut}>
          Sign out
        </button>
      </header>
      <Boards />
    </ApolloProvider>
  );
}

const STATE_LABELS = {
  connecting: "Connecting…",
  live: "Live",
  reconnecting: "Reconnecting…",
  offline: "Offline, retrying",
  refused: "Refused: sign in again",
};

function ConnectionBadge({ state }) {
  return (
    <span className={`badge ${state}`} data-testid="connection" data-state={state} role="status">
      {STATE_LABELS[state] ?? state}
    </span>
  );
}

function Boards() {
  const { data, loading, error, subscribeToMore } = useQuery(BOARDS);
  const [notLive, setNotLive] = useState(null);
  useEffect(
    () =>
      subscribeToMore({
        document: BOARD_CREATED,
        updateQuery: (_, { previousData, subscriptionData }) => ({
          boards: appendOnce(previousData?.boards ?? [], subscriptionData.data?.boardCreated),
        }),
        onError: (e) => setNotLive(e.message),
      }),
    [subscribeToMore],
  );
  const [createBoard, created] = useMutation(CREATE_BOARD, {
    update(cache, { data }) {
      cache.updateQuery({ query: BOARDS }, (existing) =>
        existing ? { boards: appendOnce(existing.boards, data?.createBoard) } : undefined,
      );
    },
  });

  if (error) return <p className="error" role="alert">{error.message}</p>;
  const boards = data?.boards ?? [];
  return (
    <main>
      {notLive && <p className="error">New boards from other tabs will not show: {notLive}</p>}
      <TitleForm
        label="New board"
        testId="new-board"
        busy={created.loading}
        error={created.error}
        onSubmit={(title) => createBoard({ variables: { title } })}
      />
      {loading && !data ? (
        <p className="muted">Loading boards…</p>
      ) : boards.length === 0 ? (
        <p className="muted" data-testid="no-boards">
          No boards yet. Create one; it appears in your other tabs at once.
        </p>
      ) : (
        <section className="boards">
          {boards.map((board) => (
            <Board key={board.id} board={board} />
          ))}
        </section>
      )}
    </main>
  );
}

function Board({ board }) {
  const variables = { boardId: board.id };
  const client = useApolloClient();
  const { data, error } = useQuery(CARDS, { variables });
  // The broker may refuse a subscription (it bounds them per connection): then this board
  // still works, but says that it does not follow the other tabs.
  const [notLive, setNotLive] = useState(null);
  useSubscription(CARD_ADDED, {
    variables,
    onData: ({ data: event }) => {
      client.cache.updateQuery({ query: CARDS, variables }, (existing) =>
        existing ? { cards: appendOnce(existing.cards, event.data?.cardAdded) } : undefined,
      );
    },
    // The broker ends a board's subscriptions when the board is deleted, from any tab.
    onComplete: () => forgetBoard(client.cache, board.id),
    onError: (e) => setNotLive(e.message),
  });
  const [addCard, added] = useMutation(ADD_CARD, {
    update(cache, { data }) {
      cache.updateQuery({ query: CARDS, variables }, (existing) =>
        existing ? { cards: appendOnce(existing.cards, data?.addCard) } : undefined,
      );
    },
  });
  const [deleteBoard, deleted] = useMutation(DELETE_BOARD, {
    variables,
    update: (cache) => forgetBoard(cache, board.id),
  });
  const cards = data?.cards ?? [];
  return (
    <article className="board" data-testid="board" data-title={board.title}>
      <div className="board-head">
        <h2>{board.title}</h2>
        <button
          className="quiet small"
          data-testid="delete-board"
          disabled={deleted.loading}
          onClick={() => deleteBoard().catch(() => {})}
        >
          Delete
        </button>
      </div>
      {deleted.error && <p className="error">{deleted.error.message}</p>}
      {error && <p className="error">{error.message}</p>}
      {notLive && <p className="error">Not live: {notLive}</p>}
      <ol className="cards">
        {cards.map((card) => (
          <li key={card.id} className="card" data-testid="card">
            {card.title}
          </li>
        ))}
      </ol>
      <TitleForm
        label="Add a card"
        testId="new-card"
        busy={added.loading}
        error={added.error}
        onSubmit={(title) => addCard({ variables: { boardId: board.id, title } })}
      />
    </article>
  );
}

function TitleForm({ label, testId, busy, error, onSubmit }) {
  const [title, setTitle] = useState("");
  async function submit(event) {
    event.preventDefault();
    const text = title.trim();
    if (!text) return;
    try {
      await onSubmit(text);
      setTitle("");
    } catch {
      // The mutation's error is shown below the form; the text stays to be corrected.
    }
  }
  return (
    <form className="title-form" data-testid={testId} onSubmit={submit}>
      <input
        aria-label={label}
        placeholder={label}
        maxLength={200}
        value={title}
        onChange={(e) => setTitle(e.target.value)}
      />
      <button type="submit" disabled={busy || !title.trim()}>
        Add
      </button>
      {error && <p className="error">{error.message}</p>}
    </form>
  );
}
