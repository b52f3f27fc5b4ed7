// Subscribes with the unmodified `graphql-ws` client (graphql-transport-ws
// protocol), adds a card on the same socket, and waits for the event.
import { createClient } from 'graphql-ws';
import WebSocket from 'ws';
import { args, dataOf, run, MUTATION, SUBSCRIPTION } from './common.mjs';

const { url, token, board, title } = args();

const client = createClient({
  url,
  webSocketImpl: WebSocket,
  connectionParams: { token },
  retryAttempts: 0,
  lazy: true,
});

// Resolves with the result of the first `next` of an operation; rejects on
// error or when the operation completes without one.
function first(payload) {
  return new Promise((resolve, reject) => {
    let result;
    const dispose = client.subscribe(payload, {
      next: (value) => {
        result = value;
        resolve(value);
        dispose();
      },
      error: reject,
      complete: () => {
        if (!result) reject(new Error('operation completed without a result'));
      },
    });
  });
}

await run(async () => {
  // Both operations go out on one socket, subscription first: the server
  // handles a connection's messages in order, so the subscription is stored
  // before the mutation publishes.
  const event = first({ query: SUBSCRIPTION, variables: { boardId: board } });
  const mutation = first({ query: MUTATION, variables: { boardId: board, title } });
  const [m, s] = await Promise.all([mutation, event]);
  await client.dispose();
  return [dataOf(m, 'mutation'), dataOf(s, 'subscription')];
});
