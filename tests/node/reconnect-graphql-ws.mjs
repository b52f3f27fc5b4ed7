// The stock `graphql-ws` client through forced disconnects: it reconnects and
// subscribes again by itself; the lines from the README pass the last event id
// as `extensions.resumeFrom` and drop repeats.
import { createClient } from 'graphql-ws';
import WebSocket from 'ws';
import { args, exercise, finish, socketOptions, SUBSCRIPTION } from './reconnect.mjs';

const options = args();
const stats = { connections: 0 };
const client = createClient({
  ...socketOptions({ ...options, onConnected: () => stats.connections++ }),
  webSocketImpl: WebSocket,
});
const received = [];
const onCard = (data, eventId) => received.push({ title: data.cardAdded.title, eventId });
const query = SUBSCRIPTION;
const variables = { boardId: options.board };
const error = (e) => finish({ ok: false, error: String(e?.message ?? e?.code ?? e), received });
const complete = () => finish({ ok: false, error: 'the subscription completed', received });

// From the README:
let last;                                     // the last event id seen
const seen = new Set();                       // ids seen: a resume may repeat a few
client.subscribe(
  { query, variables, get extensions() { return last ? { resumeFrom: last } : undefined; } },
  {
    next: (msg) => {
      const id = msg.extensions?.eventId;
      if (id && seen.has(id)) return;
      if (id) { seen.add(id); last = id; }
      onCard(msg.data, id);
    },
    error,
    complete,
  },
);

await exercise(options, received, stats);
