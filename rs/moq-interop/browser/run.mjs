#!/usr/bin/env node
// Runs one real-browser scenario against a relay: bundles the page for the chosen library with
// esbuild, serves it from http://127.0.0.1:<free port> (a secure context, so WebTransport and
// WebCodecs exist), drives headless Chromium with playwright-core, and prints ONE JSON line with
// the page's result. A failed scenario also prints the page's console on stderr and exits 1.
//
//   node run.mjs --relay http://127.0.0.1:4443/ --broadcast demo/bbb [--library net|lite]
//       [--mode subscribe|publish] [--track video] [--transport auto|websocket]
//       [--duration 12] [--timeout 15] [--fps 30 --gop 10 --bitrate 1000000] (publish) [--verbose]
//
// Chromium needs no special flag for WebTransport to the relay's self-signed certificate: the
// libraries fetch http://RELAY/certificate.sha256 and pin it with `serverCertificateHashes`, which
// Chromium accepts for an ECDSA certificate valid at most 14 days (what `--tls-generate` makes)
// from a secure context (the page is served from http://127.0.0.1). `--enable-quic` is the
// default, stated anyway; `--origin-to-force-quic-on` and `--ignore-certificate-errors` are not
// needed. `--no-sandbox` only when running as root (CI containers), which Chromium requires.
//
// --transport websocket hides WebTransport from the page (as Safari is treated), so the library
// falls back to its WebSocket (qmux) transport. The packages come from the cache that
// scripts/install-test-deps.sh fills: ~/.cache/moq-browser/<sha256 of package-lock.json>/node_modules
// (MOQ_BROWSER_CACHE changes the root, MOQ_BROWSER_MODULES names a node_modules directly);
// a node_modules next to this file (a plain `npm ci` here) is used when present.
import { createHash } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { createServer } from "node:http";
import { createRequire } from "node:module";
import { homedir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

const here = dirname(fileURLToPath(import.meta.url));

const LIBRARIES = { net: "@moq/net", lite: "@moq/lite" };

const { values: args } = parseArgs({
  options: {
    relay: { type: "string" },
    broadcast: { type: "string" },
    track: { type: "string", default: "video" },
    library: { type: "string", default: "net" },
    mode: { type: "string", default: "subscribe" },
    transport: { type: "string", default: "auto" },
    duration: { type: "string", default: "12" },
    timeout: { type: "string", default: "15" },
    fps: { type: "string", default: "30" },
    gop: { type: "string", default: "10" },
    bitrate: { type: "string", default: "1000000" },
    chromium: { type: "string", default: process.env.CHROMIUM ?? "/usr/bin/chromium" },
    // Print the page's console on stderr even when the scenario passes.
    verbose: { type: "boolean", default: false },
  },
});

function usage(message) {
  console.error(`run.mjs: ${message}`);
  process.exit(2);
}
if (!args.relay) usage("--relay URL is required");
if (!args.broadcast) usage("--broadcast NAME is required");
if (!LIBRARIES[args.library]) usage(`--library must be one of ${Object.keys(LIBRARIES).join(", ")}`);
if (!["subscribe", "publish"].includes(args.mode)) usage("--mode must be subscribe or publish");
if (args.mode === "publish" && args.library !== "net") usage("--mode publish needs --library net");
if (!["auto", "websocket"].includes(args.transport)) usage("--transport must be auto or websocket");

function modules() {
  if (process.env.MOQ_BROWSER_MODULES) return process.env.MOQ_BROWSER_MODULES;
  const local = join(here, "node_modules");
  if (existsSync(local)) return local;
  const lock = createHash("sha256").update(readFileSync(join(here, "package-lock.json"))).digest("hex");
  const root = process.env.MOQ_BROWSER_CACHE ?? join(homedir(), ".cache", "moq-browser");
  return join(root, lock, "node_modules");
}

const nodeModules = modules();
if (!existsSync(join(nodeModules, "playwright-core"))) {
  usage(`${nodeModules} has no packages: run scripts/install-test-deps.sh (just deps)`);
}
const require = createRequire(join(nodeModules, "noop.js"));
const esbuild = require("esbuild");
const { chromium } = require("playwright-core");
const library = LIBRARIES[args.library];
const libraryVersion = JSON.parse(readFileSync(join(nodeModules, library, "package.json"), "utf8")).version;

// Every line the page logged, for the failure report.
const consoleLines = [];
const started = Date.now();
function log(kind, text) {
  consoleLines.push(`[${((Date.now() - started) / 1000).toFixed(2)}s ${kind}] ${text}`);
}

let browser;
let server;
let finished = false;

function finish(result) {
  if (finished) return;
  finished = true;
  const ok = result.ok === true;
  result = { ok, runner_ms: Date.now() - started, ...result, ok };
  process.stdout.write(`${JSON.stringify(result)}\n`);
  if (!ok) {
    process.stderr.write(`run.mjs: the scenario failed: ${result.error ?? "(no error given)"}\n`);
  }
  if (!ok || args.verbose) process.stderr.write(`page console:\n${consoleLines.join("\n")}\n`);
  const exit = () => process.exit(ok ? 0 : 1);
  Promise.race([
    Promise.allSettled([browser?.close(), new Promise((resolve) => (server ? server.close(resolve) : resolve()))]),
    new Promise((resolve) => setTimeout(resolve, 3000)),
  ]).then(exit, exit);
}

function fail(error, extra = {}) {
  finish({ library, library_version: libraryVersion, mode: args.mode, ...extra, ok: false, error: String(error) });
}

// The whole run is bounded: connect + duration + slack, whatever the page does.
const budgetMs = (Number(args.timeout) + Number(args.duration) + 20) * 1000;
setTimeout(() => fail(`no result within ${budgetMs / 1000} s`), budgetMs).unref();
process.on("SIGTERM", () => fail("terminated (SIGTERM)"));
process.on("SIGINT", () => fail("interrupted (SIGINT)"));

async function bundle() {
  const out = await esbuild.build({
    entryPoints: [join(here, "pages", `${args.library}.js`)],
    bundle: true,
    format: "esm",
    target: "chrome120",
    write: false,
    nodePaths: [nodeModules],
    logLevel: "silent",
    sourcemap: "inline",
  });
  return out.outputFiles[0].contents;
}

function serve(script) {
  const html = `<!doctype html><meta charset="utf-8"><title>moq ${args.library} ${args.mode}</title>
<script type="module" src="/page.js"></script>`;
  return new Promise((resolve, reject) => {
    const srv = createServer((req, res) => {
      const path = new URL(req.url, "http://127.0.0.1").pathname;
      if (path === "/") {
        res.writeHead(200, { "content-type": "text/html; charset=utf-8" }).end(html);
      } else if (path === "/favicon.ico") {
        res.writeHead(204).end();
      } else if (path === "/page.js") {
        res.writeHead(200, { "content-type": "text/javascript; charset=utf-8" }).end(script);
      } else {
        res.writeHead(404).end();
      }
    });
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => resolve(srv));
  });
}

async function main() {
  const script = await bundle();
  server = await serve(script);
  const { port } = server.address();
  const flags = [
    // QUIC is on by default; say so in case a policy or an older build turned it off.
    "--enable-quic",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--no-default-browser-check",
  ];
  // Chromium refuses to run as root (CI containers) with its sandbox on.
  if (process.getuid?.() === 0) flags.push("--no-sandbox");
  browser = await chromium.launch({ executablePath: args.chromium, headless: true, args: flags });
  const context = await browser.newContext();
  const page = await context.newPage();
  page.on("console", (msg) => log(msg.type(), msg.text()));
  page.on("pageerror", (err) => log("pageerror", err.stack ?? err.message));
  page.on("crash", () => fail("the page crashed"));
  page.on("requestfailed", (req) => log("requestfailed", `${req.url()}: ${req.failure()?.errorText}`));
  if (args.transport === "websocket") {
    // What Safari gets from the libraries: no WebTransport, so the WebSocket (qmux) fallback.
    await page.addInitScript(() => {
      delete globalThis.WebTransport;
      if (globalThis.WebTransport) globalThis.WebTransport = undefined;
    });
  }
  let resolve;
  const result = new Promise((r) => (resolve = r));
  await page.exposeBinding("__moqReport", (_source, json) => resolve(JSON.parse(json)));
  const query = new URLSearchParams({
    relay: args.relay,
    broadcast: args.broadcast,
    track: args.track,
    mode: args.mode,
    duration: args.duration,
    timeout: args.timeout,
    fps: args.fps,
    gop: args.gop,
    bitrate: args.bitrate,
    libraryVersion,
  });
  await page.goto(`http://127.0.0.1:${port}/?${query}`);
  const outcome = await result;
  finish({
    ...outcome,
    requested_transport: args.transport,
    chromium: browser.version(),
    page_url: `http://127.0.0.1:${port}/`,
  });
}

main().catch((e) => fail(e?.stack ?? e));
