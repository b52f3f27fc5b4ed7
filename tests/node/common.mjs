// Shared plumbing for the two client scripts: arguments, the documents they
// send, and the single JSON line a Rust test reads back from stdout.
import { parseArgs } from 'node:util';

export const TIMEOUT_MS = 10_000;

export const SUBSCRIPTION = `subscription CardAdded($boardId: ID!) {
  cardAdded(boardId: $boardId) { id boardId title name: title }
}`;

export const MUTATION = `mutation AddCard($boardId: ID!, $title: String!) {
  addCard(boardId: $boardId, title: $title) { id boardId title }
}`;

export function args() {
  const { values } = parseArgs({
    options: {
      url: { type: 'string' },
      token: { type: 'string' },
      board: { type: 'string' },
      title: { type: 'string' },
    },
  });
  for (const name of ['url', 'token', 'board', 'title']) {
    if (!values[name]) fail(`missing --${name}`);
  }
  return values;
}

// An execution result carrying errors is a failure for these checks: the
// tests expect clean data on both legs.
export function dataOf(result, what) {
  if (result?.errors?.length) {
    throw new Error(`${what}: ${JSON.stringify(result.errors)}`);
  }
  if (!result?.data) throw new Error(`${what}: no data in ${JSON.stringify(result)}`);
  return result.data;
}

export function succeed(mutation, subscription) {
  process.stdout.write(JSON.stringify({ ok: true, mutation, subscription }) + '\n');
  process.exit(0);
}

export function fail(error) {
  const message = typeof error === 'string' ? error : describe(error);
  process.stdout.write(JSON.stringify({ ok: false, error: message }) + '\n');
  process.exit(1);
}

// Clients reject with Errors, socket error or close events (whose fields are
// prototype getters, lost by JSON.stringify) and arrays of GraphQL errors.
function describe(error) {
  if (error instanceof Error) return error.message;
  if (error?.error instanceof Error) return error.error.message;
  if (typeof error?.message === 'string' && error.message) return error.message;
  if (typeof error?.code === 'number') {
    return `socket closed: ${error.code} ${error.reason ?? ''}`.trim();
  }
  try {
    return JSON.stringify(error);
  } catch {
    return String(error);
  }
}

// Runs `flow` and fails the process if it has not finished in time.
export async function run(flow) {
  const timer = setTimeout(() => fail(`timed out after ${TIMEOUT_MS} ms`), TIMEOUT_MS);
  try {
    const [mutation, subscription] = await flow();
    clearTimeout(timer);
    succeed(mutation, subscription);
  } catch (error) {
    fail(error);
  }
}
