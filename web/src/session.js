// Signing in: a user name traded for a development token (local mode only), or a token
// pasted as it is. The token lives in this tab's sessionStorage, so two tabs can be two
// different users, and a reload keeps the tab signed in.

const KEY = "broker-web.session";

export function loadSession() {
  try {
    const saved = JSON.parse(window.sessionStorage.getItem(KEY) ?? "null");
    if (saved && typeof saved.token === "string" && typeof saved.user === "string") {
      return saved;
    }
  } catch {
    // A damaged entry is as good as none.
  }
  return null;
}

export function saveSession(session) {
  if (session) {
    window.sessionStorage.setItem(KEY, JSON.stringify(session));
  } else {
    window.sessionStorage.removeItem(KEY);
  }
}

// Asks the local mode for a development token. The endpoint exists only in `broker-local`
// and anyone who can reach it may sign in as anyone: that is the point of a local tool, and
// why a deployed stack never has it.
export async function mintDevelopmentToken(tokenUrl, user) {
  const response = await fetch(tokenUrl, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ user }),
  });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    throw new Error(body.error ?? `the token endpoint answered ${response.status}`);
  }
  return { user, token: body.token };
}

// The user a pasted token names (its `sub` claim), for the header. The server checks the
// signature; this only reads.
export function userOfToken(token) {
  try {
    const payload = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const claims = JSON.parse(atob(payload));
    return typeof claims.sub === "string" ? claims.sub : null;
  } catch {
    return null;
  }
}
