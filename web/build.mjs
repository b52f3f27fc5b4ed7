// Builds the app into dist/ (or the folder given as `--outdir DIR`): index.html, app.js,
// app.css. Run by scripts/build-web (and so by scripts/test-deps); `node build.mjs` does the
// same.
//
// BROKER_HTTP_URL, BROKER_WS_URL and BROKER_TOKEN_URL, when set, point the app at a deployed
// stack (see src/config.js); unset, it talks to whatever serves it.
import { copyFile, mkdir, rm } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

import * as esbuild from "esbuild";

const here = dirname(fileURLToPath(import.meta.url));
const { values: args } = parseArgs({ options: { outdir: { type: "string" } } });
const out = args.outdir ? resolve(args.outdir) : join(here, "dist");

const setting = (name) => JSON.stringify(process.env[name] ?? "");

await rm(out, { recursive: true, force: true });
await mkdir(out, { recursive: true });
await esbuild.build({
  entryPoints: { app: join(here, "src/main.jsx") },
  outdir: out,
  bundle: true,
  format: "esm",
  target: ["es2022"],
  jsx: "automatic",
  minify: true,
  sourcemap: "linked",
  legalComments: "linked",
  logLevel: "warning",
  define: {
    "process.env.NODE_ENV": '"production"',
    "process.env.BROKER_HTTP_URL": setting("BROKER_HTTP_URL"),
    "process.env.BROKER_WS_URL": setting("BROKER_WS_URL"),
    "process.env.BROKER_TOKEN_URL": setting("BROKER_TOKEN_URL"),
  },
});
await copyFile(join(here, "src/index.html"), join(out, "index.html"));
