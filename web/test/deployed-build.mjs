// A build made for a deployed stack (BROKER_HTTP_URL and BROKER_WS_URL set at build time), in
// headless Chromium: it offers no development sign-in, takes a pasted token, and works against
// the URLs it was built with.
//
//   node test/deployed-build.mjs --url http://HOST/ --token JWT --chromium /usr/bin/chromium
//
// Prints one JSON line: {"ok":true,…} (exit 0) or {"ok":false,"error":…} (exit 1).
import { parseArgs } from "node:util";

import puppeteer from "puppeteer-core";

const { values: args } = parseArgs({
  options: {
    url: { type: "string" },
    token: { type: "string" },
    chromium: { type: "string", default: "/usr/bin/chromium" },
  },
});
const PATIENCE_MS = 20_000;

const errors = [];
const browser = await puppeteer.launch({
  executablePath: args.chromium,
  headless: true,
  args: ["--no-sandbox", "--disable-dev-shm-usage"],
});
try {
  const page = await browser.newPage();
  page.on("pageerror", (e) => errors.push(e.message));
  await page.goto(args.url, { waitUntil: "load" });
  await page.waitForSelector("#token", { timeout: PATIENCE_MS });
  const result = { nameSignIn: (await page.$("#user")) !== null };
  await page.type("#token", args.token);
  await page.click('form[aria-label="sign in with a token"] button');
  await page.waitForSelector('[data-testid="connection"][data-state="live"]', { timeout: PATIENCE_MS });
  result.user = await page.$eval('[data-testid="user"]', (e) => e.textContent);
  await page.type('[data-testid="new-board"] input', "Deployed");
  await page.click('[data-testid="new-board"] button');
  await page.waitForSelector('[data-testid="board"][data-title="Deployed"]', { timeout: PATIENCE_MS });
  result.boards = await page.$$eval('[data-testid="board"]', (boards) => boards.map((b) => b.dataset.title));
  if (errors.length) throw new Error(`errors in the page: ${errors.join("; ")}`);
  console.log(JSON.stringify({ ok: true, ...result }));
} catch (e) {
  console.log(JSON.stringify({ ok: false, error: String(e?.message ?? e), pageErrors: errors }));
  process.exitCode = 1;
} finally {
  await browser.close();
}
