// Where the app finds the broker. A build for the local mode leaves everything empty: the
// app then talks to the server that serves it (`/graphql` over HTTP and WebSocket) and signs
// in through the local mode's development token endpoint. A build for a deployed stack takes
// the template's outputs (see web/README.md):
//   BROKER_HTTP_URL   the `HttpGraphqlUrl` output (https://…/graphql)
//   BROKER_WS_URL     the `WebSocketUrl` output (wss://…/<stage>)
//   BROKER_TOKEN_URL  an endpoint that mints tokens; a deployed stack has none, so the
//                     sign-in form asks for a token issued by your backend instead.
// esbuild replaces these `process.env.*` reads with the values given at build time.

const built = {
  http: process.env.BROKER_HTTP_URL,
  ws: process.env.BROKER_WS_URL,
  token: process.env.BROKER_TOKEN_URL,
};

function sameOrigin(path, protocol) {
  const url = new URL(path, window.location.href);
  if (protocol) url.protocol = protocol;
  return url.toString();
}

export function endpoints() {
  const local = !built.http && !built.ws;
  const secure = window.location.protocol === "https:";
  return {
    http: built.http || sameOrigin("/graphql"),
    ws: built.ws || sameOrigin("/graphql", secure ? "wss:" : "ws:"),
    // Only a local-mode build assumes the development token endpoint exists.
    token: built.token || (local ? sameOrigin("/dev/token") : ""),
  };
}
