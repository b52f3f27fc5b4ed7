import { ApolloClient, ApolloLink, HttpLink, InMemoryCache, split } from "@apollo/client";
import { GraphQLWsLink } from "@apollo/client/link/subscriptions";
import { getMainDefinition } from "@apollo/client/utilities";
import { createClient } from "graphql-ws";
import { tap } from "rxjs";

// One Apollo Client per signed-in tab: queries and mutations over HTTP with the token as a
// bearer, subscriptions over one WebSocket (graphql-transport-ws) with the token in
// `connection_init`, never in the URL, so it stays out of access logs.
//
// `onState` hears the socket's state for the badge: "connecting", "live", "reconnecting",
// "offline" (retrying) or "refused" (the server closed with a code the client does not
// retry, such as 4401 for an expired token).
export function createApollo({ endpoints, token, onState }) {
  const http = new HttpLink({
    uri: endpoints.http,
    headers: { authorization: `Bearer ${token}` },
  });

  // Set once the socket has been acknowledged: every later acknowledgement is a reconnect,
  // whatever the close before it was (graphql-ws reports a 1000 close's retry as a first try).
  let connectedBefore = false;
  const socket = createClient({
    url: endpoints.ws,
    connectionParams: () => ({ token }),
    // Connect at once so the badge tells the truth before the first subscription.
    lazy: false,
    // A page left open should come back after a server restart or a network change: retry
    // for as long as the tab lives, with graphql-ws's randomised exponential backoff.
    retryAttempts: Infinity,
    shouldRetry: () => true,
    // Pings keep an idle socket under API Gateway's 10-minute idle timeout.
    keepAlive: 60_000,
    on: {
      connecting: () => onState(connectedBefore ? "reconnecting" : "connecting"),
      connected: () => {
        onState("live");
        // graphql-ws renews the subscriptions itself, each with the last event id it saw
        // (see `resume` below). Reading the queries again as well covers a server that
        // cannot replay that far back, and boards created while the socket was down.
        if (connectedBefore) void client.refetchQueries({ include: "active" });
        connectedBefore = true;
      },
      closed: (event) => onState(isFatal(event) ? "refused" : "offline"),
    },
  });

  const link = split(
    ({ query }) => {
      const definition = getMainDefinition(query);
      return definition.kind === "OperationDefinition" && definition.operation === "subscription";
    },
    resume.concat(new GraphQLWsLink(socket)),
    http,
  );

  const client = new ApolloClient({ link, cache: new InMemoryCache() });
  return {
    client,
    dispose() {
      client.stop();
      void socket.dispose();
    },
  };
}

// Lossless reconnects: every message the broker delivers carries `extensions.eventId`; a
// subscription that names the last one it saw as `extensions.resumeFrom` gets what it missed
// first. graphql-ws keeps each subscription's payload and sends it again, as it is by then,
// when it renews the subscription after a reconnect; so this link gives each subscription its
// own `extensions` object and keeps `resumeFrom` in it up to date. The first subscribe has
// none: the query that goes with it reads the state.
const resume = new ApolloLink((operation, forward) => {
  const extensions = { ...operation.extensions };
  operation.extensions = extensions;
  return forward(operation).pipe(
    tap((result) => {
      const eventId = result?.extensions?.eventId;
      if (typeof eventId === "string") extensions.resumeFrom = eventId;
    }),
  );
});

// Close codes graphql-ws 6 does not retry whatever `shouldRetry` says: the connection was
// refused for good (4401 is an expired or wrong token). 4403 and timeouts are retried.
function isFatal(event) {
  const code = event?.code;
  if ([4005, 4400, 4401, 4406, 4409, 4429, 4500].includes(code)) return true;
  const transient = [1000, 1001, 1005, 1006, 1012, 1013, 1014];
  return code >= 1000 && code <= 1999 && !transient.includes(code);
}
