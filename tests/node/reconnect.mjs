// Shared by the reconnect scripts: a subscription that lives through forced
// disconnects while this script publishes cards over HTTP, and the one JSON
// line the Rust test reads back.
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';

const TIMEOUT_MS = 40_000;

export const SUBSCRIPTION = `subscription CardAdded($boardId: ID!) {
  cardAdded(boardId: $boardId) { id title }
}`;

const MUTATION = `mutation AddCard($boardId: ID!, $title: String!) {
  addCard(boardId: $boardId, title: $title) { id }
}`;

export function args() {
  const { values } = parseArgs({
    options: {
      url: { type: 'string' },
      http: { type: 'string' },
      token: { type: 'string' },
      board: { type: 'string' },
      count: { type: 'string' },
      // After this many cards, ask for a restart of the server (a line
      // `{"restart":true}`), wait for a line on stdin saying it is done, and go on.
      'restart-after': { type: 'string' },
    },
  });
  for (const name of ['url', 'http', 'token', 'board', 'count']) {
    if (!values[name]) finish({ ok: false, error: `missing --${name}` });
  }
  const restartAfter = values['restart-after'];
  return { ...values, count: Number(values.count), restartAfter: restartAfter && Number(restartAfter) };
}

export function finish(result) {
  process.stdout.write(JSON.stringify(result) + '\n');
  process.exit(result.ok ? 0 : 1);
}

// Resolves at the next line on stdin.
function restarted() {
  const lines = createInterface({ input: process.stdin });
  return new Promise((resolve) => lines.once('line', () => { lines.close(); resolve(); }));
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// The socket settings of a long-lived page: retry for ever (quickly, for the
// test), ping so an idle socket stays open.
export function socketOptions({ url, token, onConnected }) {
  return {
    url,
    connectionParams: { token },
    lazy: false,
    retryAttempts: Infinity,
    shouldRetry: () => true,
    retryWait: () => sleep(100),
    keepAlive: 200,
    on: { connected: onConnected },
  };
}

// Publishes warm-up cards until the subscription delivers one (it receives only
// what is published after it was stored), then `count` numbered cards, and
// waits for all of them. `received` is filled by the client under test with
// each card it passes on to the application: `{ title, eventId }`.
export async function exercise({ http, token, board, count, restartAfter }, received, stats) {
  const timer = setTimeout(
    () => finish({ ok: false, error: `timed out after ${TIMEOUT_MS} ms`, received, ...stats }),
    TIMEOUT_MS,
  );
  const addCard = async (title) => {
    const response = await fetch(http, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ query: MUTATION, variables: { boardId: board, title } }),
    });
    const body = await response.json();
    if (body.errors?.length) throw new Error(JSON.stringify(body.errors));
  };
  for (let i = 0; received.length === 0; i++) {
    await addCard(`warm-up-${i}`);
    await sleep(100);
  }
  const answers = async () => {
    try {
      const response = await fetch(http, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        body: JSON.stringify({ query: '{ boards { id } }' }),
      });
      return response.ok;
    } catch {
      return false;
    }
  };
  for (let i = 0; i < count; i++) {
    if (i === restartAfter) {
      process.stdout.write(JSON.stringify({ restart: true }) + '\n');
      await restarted();
      while (!(await answers())) await sleep(100);
      stats.restarted = true;
    }
    await addCard(`card-${i}`);
    await sleep(40);
  }
  while (!received.some((card) => card.title === `card-${count - 1}`)) await sleep(50);
  // Anything more (a repeat) would come within a resume's settling time.
  await sleep(1500);
  clearTimeout(timer);
  finish({ ok: true, received, ...stats });
}
