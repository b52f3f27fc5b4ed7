// Apollo Client's `GraphQLWsLink` through forced disconnects: graphql-ws
// reconnects and renews the subscription; the link from the README keeps
// `extensions.resumeFrom` at the last event id and drops repeats.
import { ApolloClient, ApolloLink, InMemoryCache, gql } from '@apollo/client';
import { GraphQLWsLink } from '@apollo/client/link/subscriptions';
import { createClient } from 'graphql-ws';
import { filter } from 'rxjs';
import WebSocket from 'ws';
import { args, exercise, finish, socketOptions, SUBSCRIPTION } from './reconnect.mjs';

const options = args();
const stats = { connections: 0 };
const socket = createClient({
  ...socketOptions({ ...options, onConnected: () => stats.connections++ }),
  webSocketImpl: WebSocket,
});

// From the README:
const resume = new ApolloLink((operation, forward) => {
  const extensions = { ...operation.extensions };    // this subscription's own, sent again
  operation.extensions = extensions;                  // as it is by then on every renewal
  const seen = new Set();
  return forward(operation).pipe(
    filter((result) => {
      const id = result?.extensions?.eventId;
      if (typeof id !== 'string') return true;
      if (seen.has(id)) return false;                 // a repeat from a resume
      seen.add(id);
      extensions.resumeFrom = id;
      return true;
    }),
  );
});
const client = new ApolloClient({
  link: resume.concat(new GraphQLWsLink(socket)),
  cache: new InMemoryCache(),
});

const received = [];
client
  .subscribe({ query: gql(SUBSCRIPTION), variables: { boardId: options.board } })
  .subscribe({
    next: (result) => {
      if (result.error) finish({ ok: false, error: String(result.error), received });
      received.push({ title: result.data.cardAdded.title });
    },
    error: (e) => finish({ ok: false, error: String(e?.message ?? e), received }),
    complete: () => finish({ ok: false, error: 'the subscription completed', received }),
  });

await exercise(options, received, stats);
