// Same flow as graphql-ws-client.mjs with the legacy protocol (`graphql-ws`
// subprotocol) through Apollo's `subscriptions-transport-ws` client.
import { SubscriptionClient } from 'subscriptions-transport-ws';
import WebSocket from 'ws';
import { args, dataOf, run, MUTATION, SUBSCRIPTION } from './common.mjs';

const { url, token, board, title } = args();

const client = new SubscriptionClient(
  url,
  { connectionParams: { token }, reconnect: false, lazy: true },
  WebSocket,
  'graphql-ws',
);

// Connection-level failures (refused socket, connection_error) surface here
// rather than on an operation.
const connectionFailed = new Promise((_, reject) => {
  client.onError((error) => reject(error));
  client.onDisconnected(() => reject(new Error('socket closed before the event arrived')));
});

function first(request) {
  return new Promise((resolve, reject) => {
    let result;
    const subscription = client.request(request).subscribe({
      next: (value) => {
        result = value;
        resolve(value);
        subscription.unsubscribe();
      },
      error: reject,
      complete: () => {
        if (!result) reject(new Error('operation completed without a result'));
      },
    });
  });
}

await run(async () => {
  // `start` for the subscription is queued before the mutation's `start`,
  // and both follow `connection_init` on the same socket.
  const event = first({ query: SUBSCRIPTION, variables: { boardId: board } });
  const mutation = first({ query: MUTATION, variables: { boardId: board, title } });
  const [m, s] = await Promise.race([Promise.all([mutation, event]), connectionFailed]);
  client.close();
  return [dataOf(m, 'mutation'), dataOf(s, 'subscription')];
});
