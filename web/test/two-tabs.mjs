// The boards app in a real browser, as a person would use it: two tabs signed in as alice
// and one as bob, in headless Chromium (Debian's package, driven through puppeteer-core; no
// browser is downloaded).
//
//   node test/two-tabs.mjs --url http://127.0.0.1:PORT/ --chromium /usr/bin/chromium \
//     [--screenshot two-tabs.png]
//
// Prints one JSON line: {"ok":true,…} and exits 0, or {"ok":false,"error":…} and exits 1.
// Before that, it asks whoever runs it to act on the server: a line {"ask":"disconnect alice"}
// on stdout is answered by closing alice's sockets on the server, then a line on stdin.
// The Rust test `web_app` starts the local mode and runs this (see tests/tests/web_app.rs).
import { createInterface } from "node:readline";
import { parseArgs } from "node:util";

import puppeteer from "puppeteer-core";

const { values: args } = parseArgs({
  options: {
    url: { type: "string" },
    chromium: { type: "string", default: "/usr/bin/chromium" },
    screenshot: { type: "string" },
  },
});
if (!args.url) {
  console.log(JSON.stringify({ ok: false, error: "--url is required" }));
  process.exit(1);
}

// Generous, for a shared machine; never a performance bound.
const PATIENCE_MS = 20_000;
const BOARD = "Launch plan";
const CARDS = ["Write the README", "Record a demo", "Ship it"];
const BOBS_BOARD = "Bob's errands";
const TAB = { width: 560, height: 400 };

// What a tab shows: its boards in order, each with its cards in order.
function shown(page) {
  return page.evaluate(() =>
    [...document.querySelectorAll('[data-testid="board"]')].map((board) => ({
      title: board.dataset.title,
      cards: [...board.querySelectorAll('[data-testid="card"]')].map((c) => c.textContent),
    })),
  );
}

// Waits until the tab shows exactly `expected` (boards and cards, in order).
async function until(page, expected, what) {
  try {
    await page.waitForFunction(
      (want) => {
        const boards = [...document.querySelectorAll('[data-testid="board"]')].map((board) => ({
          title: board.dataset.title,
          cards: [...board.querySelectorAll('[data-testid="card"]')].map((c) => c.textContent),
        }));
        return JSON.stringify(boards) === want;
      },
      { timeout: PATIENCE_MS, polling: 50 },
      JSON.stringify(expected),
    );
  } catch {
    throw new Error(
      `${what}: expected ${JSON.stringify(expected)}, the tab shows ${JSON.stringify(await shown(page))}`,
    );
  }
}

const answers = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
async function ask(what) {
  console.log(JSON.stringify({ ask: what }));
  const answer = await answers.next();
  if (answer.done) throw new Error(`no answer to ${what}`);
}

function connection(page) {
  return page.$eval('[data-testid="connection"]', (badge) => badge.dataset.state);
}

async function untilConnection(page, states, what) {
  try {
    await page.waitForFunction(
      (want) => want.includes(document.querySelector('[data-testid="connection"]')?.dataset.state),
      { timeout: PATIENCE_MS, polling: 50 },
      states,
    );
  } catch {
    throw new Error(`${what}: expected ${states.join(" or ")}, the badge says ${await connection(page)}`);
  }
}

async function openTab(browser, user) {
  const page = await browser.newPage();
  await page.setViewport(TAB);
  page.on("pageerror", (e) => errors.push(`${user}: ${e.message}`));
  await page.goto(args.url, { waitUntil: "load" });
  await page.type("#user", user);
  await page.click('form[aria-label="sign in with a user name"] button');
  await page.waitForSelector('[data-testid="connection"][data-state="live"]', { timeout: PATIENCE_MS });
  await page.waitForSelector('[data-testid="no-boards"], [data-testid="board"]', { timeout: PATIENCE_MS });
  return page;
}

// Typing goes to the tab in front, as it does for a person.
async function submit(page, form, text) {
  await page.bringToFront();
  await page.type(`${form} input`, text);
  await page.click(`${form} button`);
}

const errors = [];
const browser = await puppeteer.launch({
  executablePath: args.chromium,
  headless: true,
  // Root in a container has no user namespaces for Chromium's sandbox.
  args: ["--no-sandbox", "--disable-dev-shm-usage"],
});
try {
  const result = {};
  const alice1 = await openTab(browser, "alice");
  const alice2 = await openTab(browser, "alice");
  const bob = await openTab(browser, "bob");
  await until(alice2, [], "alice starts with no boards");

  // A board and three cards from the first tab, one after the other as a person types them.
  await submit(alice1, '[data-testid="new-board"]', BOARD);
  await until(alice2, [{ title: BOARD, cards: [] }], "the board reaches alice's other tab");
  const cardForm = `[data-testid="board"][data-title="${BOARD}"] [data-testid="new-card"]`;
  for (let i = 0; i < CARDS.length; i++) {
    await submit(alice1, cardForm, CARDS[i]);
    await until(alice1, [{ title: BOARD, cards: CARDS.slice(0, i + 1) }], "the card is added");
  }
  const alices = [{ title: BOARD, cards: CARDS }];
  await until(alice2, alices, "the cards reach alice's other tab in order");
  result.alice = await shown(alice2);

  // Bob's own board reaches bob: his socket is live, yet none of alice's changes came.
  await submit(bob, '[data-testid="new-board"]', BOBS_BOARD);
  await until(bob, [{ title: BOBS_BOARD, cards: [] }], "bob sees his board and nothing of alice's");
  await until(alice2, alices, "alice sees nothing of bob's");
  result.bob = await shown(bob);

  if (args.screenshot) {
    const tabs = [
      [alice1, "Tab 1 · alice"],
      [alice2, "Tab 2 · alice"],
      [bob, "Tab 3 · bob"],
    ];
    await sideBySide(browser, tabs, args.screenshot);
  }

  // Closing a tab and opening a new one recovers the current state, then stays live.
  await alice2.close();
  const reopened = await openTab(browser, "alice");
  await until(reopened, alices, "a reopened tab shows the current state");
  await submit(alice1, cardForm, "Celebrate");
  const after = [{ title: BOARD, cards: [...CARDS, "Celebrate"] }];
  await until(reopened, after, "the reopened tab is live");
  result.reopened = await shown(reopened);

  // A dropped connection. The server closes alice's sockets while the reopened tab is
  // offline, so that tab cannot reconnect; tab 1 reconnects and adds a card meanwhile. Back
  // online, the reopened tab reconnects and shows the card it missed.
  await reopened.setOfflineMode(true);
  await ask("disconnect alice");
  await untilConnection(reopened, ["reconnecting", "offline"], "the badge shows the lost connection");
  await untilConnection(alice1, ["live"], "tab 1 reconnects");
  await submit(alice1, cardForm, "Missed while offline");
  const missed = [{ title: BOARD, cards: [...CARDS, "Celebrate", "Missed while offline"] }];
  await until(alice1, missed, "tab 1 adds a card after reconnecting");
  result.whileOffline = { shown: await shown(reopened), connection: await connection(reopened) };
  await reopened.setOfflineMode(false);
  await untilConnection(reopened, ["live"], "the reopened tab reconnects");
  await until(reopened, missed, "the reopened tab recovers what it missed");
  await submit(alice1, cardForm, "Live again");
  const last = [{ title: BOARD, cards: [...CARDS, "Celebrate", "Missed while offline", "Live again"] }];
  await until(reopened, last, "the reopened tab is live again");
  result.recovered = await shown(reopened);
  await until(bob, [{ title: BOBS_BOARD, cards: [] }], "bob still sees nothing of alice's");

  // Deleting the board in tab 1: the broker ends its subscriptions, and the other tab lets
  // it go. Bob's board stays.
  await alice1.bringToFront();
  await alice1.click(`[data-testid="board"][data-title="${BOARD}"] [data-testid="delete-board"]`);
  await until(alice1, [], "the deleted board leaves tab 1");
  await until(reopened, [], "the deleted board leaves alice's other tab");
  result.afterDelete = await shown(reopened);
  await until(bob, [{ title: BOBS_BOARD, cards: [] }], "bob's board stays");

  if (errors.length) throw new Error(`errors in the page: ${errors.join("; ")}`);
  console.log(JSON.stringify({ ok: true, ...result }));
} catch (e) {
  console.log(JSON.stringify({ ok: false, error: String(e?.message ?? e), pageErrors: errors }));
  process.exitCode = 1;
} finally {
  await browser.close();
  answers.return?.();
  process.stdin.destroy();
}

// One picture of the tabs side by side: each tab's screenshot, laid out in another page.
async function sideBySide(browser, tabs, path) {
  const frames = [];
  for (const [page, caption] of tabs) {
    // Only the tab in front paints.
    await page.bringToFront();
    const shot = await page.screenshot({ encoding: "base64" });
    frames.push(`
      <figure>
        <figcaption>${caption}</figcaption>
        <img src="data:image/png;base64,${shot}">
      </figure>`);
  }
  const canvas = await browser.newPage();
  await canvas.setViewport({ width: 14 + tabs.length * (TAB.width + 16), height: TAB.height + 60 });
  await canvas.setContent(`<!doctype html>
    <style>
      body { margin: 0; padding: 14px; background: #c9cfdb; display: flex; gap: 16px;
             font: 13px system-ui, sans-serif; color: #39404d; }
      figure { margin: 0; }
      figcaption { margin-bottom: 6px; font-weight: 600; }
      img { display: block; border-radius: 8px; box-shadow: 0 2px 8px rgba(0,0,0,.25); }
    </style>
    ${frames.join("")}`);
  await canvas.screenshot({ path });
  await canvas.close();
}
