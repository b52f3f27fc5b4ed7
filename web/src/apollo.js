import { ApolloClient, HttpLink, InMemoryCache, split } from "@apollo/client";
import { GraphQLWsLink } from "@apollo/client/link/subscriptions";
import { getMainDefinition } from "@apollo/client/utilities";
import { createClient } from "graphql-ws";

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
      connecting: (isRetry) => onState(isRetry ? "reconnecting" : "connecting"),
      connected: (_socket, _payload, wasRetry) => {
        onState("live");
        // Events published while the socket was down are gone for this connection: read the
        // current state again. Subscriptions are renewed by graphql-ws itself.
        if (wasRetry) void client.refetchQueries({ include: "active" });
      },
      closed: (event) => onState(isFatal(event) ? "refused" : "offline"),
    },
  });

  const link = split(
    ({ query }) => {
      const definition = getMainDefinition(query);
      return definition.kind === "OperationDefinition" && definition.operation === "subscription";
    },
    new GraphQLWsLink(socket),
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

// Close codes graphql-ws 6 does not retry whatever `shouldRetry` says: the connection was
// refused for good (4401 is an expired or wrong token). 4403 and timeouts are retried.
function isFatal(event) {
  const code = event?.code;
  if ([4005, 4400, 4401, 4406, 4409, 4429, 4500].includes(code)) return true;
  const transient = [1000, 1001, 1005, 1006, 1012, 1013, 1014];
  return code >= 1000 && code <= 1999 && !transient.includes(code);
}
