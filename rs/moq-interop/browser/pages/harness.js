// What every page shares: its parameters, a record of the transports the library opened (by
// wrapping the WebTransport and WebSocket constructors, so it works whatever the library exposes),
// and the one result it reports to run.mjs.

export const params = Object.fromEntries(new URLSearchParams(location.search));

/** Every WebTransport / WebSocket the page opened, in order, and what each negotiated. */
export const transports = [];

function track(kind, url, offered, ready, protocol) {
  const entry = { kind, url: String(url), offered, state: "connecting", protocol: null };
  transports.push(entry);
  ready.then(
    (value) => {
      entry.state = "open";
      entry.protocol = protocol(value) || null;
    },
    (e) => {
      entry.state = `failed: ${e?.message ?? e}`;
    },
  );
  return entry;
}

if (typeof globalThis.WebTransport === "function") {
  const Native = globalThis.WebTransport;
  globalThis.WebTransport = class extends Native {
    constructor(url, options) {
      super(url, options);
      // Chromium exposes the sub-protocol the server chose (wt-protocol) as `protocol`.
      track("webtransport", url, options?.protocols ?? [], this.ready, () => this.protocol);
    }
  };
}

if (typeof globalThis.WebSocket === "function") {
  const Native = globalThis.WebSocket;
  const Tracked = class extends Native {
    constructor(url, protocols) {
      super(url, protocols);
      const ready = new Promise((resolve, reject) => {
        this.addEventListener("open", resolve, { once: true });
        this.addEventListener("error", () => reject(new Error("websocket error")), { once: true });
      });
      track("websocket", url, protocols === undefined ? [] : [].concat(protocols), ready, () => this.protocol);
    }
  };
  globalThis.WebSocket = Tracked;
}

// Chromium has a native WebSocketStream, which the qmux fallback prefers to WebSocket.
if (typeof globalThis.WebSocketStream === "function") {
  const Native = globalThis.WebSocketStream;
  globalThis.WebSocketStream = class extends Native {
    constructor(url, options) {
      super(url, options);
      track("websocket", url, options?.protocols ?? [], this.opened, (opened) => opened?.protocol);
    }
  };
}

/** The transport the session runs over: the one open transport, as far as the page can tell. */
export function usedTransport() {
  const open = transports.filter((t) => t.state === "open");
  return open.length ? open[open.length - 1] : null;
}

export function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Resolves with `promise`, or rejects after `ms` saying what was awaited. */
export function within(ms, what, promise) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: nothing within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** A live track that delivers nothing for this long has stalled: the scenario fails. */
export const STALL_MS = 3000;

/**
 * Resolves with `promise`, or with "deadline" once `deadline` (a performance.now() time) passes;
 * rejects if `lost` does or nothing comes within STALL_MS (`what` says what was awaited).
 */
export async function next(promise, deadline, lost, what) {
  const left = deadline - performance.now();
  if (left <= 0) return "deadline";
  const wait = Math.min(left, STALL_MS);
  let timer;
  const timeout = new Promise((resolve) => {
    timer = setTimeout(() => resolve(wait === left ? "deadline" : "stall"), wait);
  });
  const value = await Promise.race([promise, timeout, lost]).finally(() => clearTimeout(timer));
  if (value === "stall") throw new Error(`stalled: nothing for ${STALL_MS} ms while waiting for ${what()}`);
  return value;
}

let reported = false;

/** Hands the scenario's result to run.mjs (once). */
export function report(result) {
  if (reported) return;
  reported = true;
  const used = usedTransport();
  const full = { ...result, transports };
  full.transport ??= used?.kind ?? null;
  full.transport_protocol ??= used?.protocol ?? null;
  console.log("moq-page: done", JSON.stringify({ ok: full.ok, error: full.error ?? null }));
  globalThis.__moqReport(JSON.stringify(full));
}

/** Runs `scenario`, reporting its result, or its error with what it had gathered so far. */
export async function run(scenario, partial) {
  try {
    report(await scenario());
  } catch (e) {
    console.error("moq-page: failed:", e?.stack ?? e);
    // Promise.any (the libraries' transport race) rejects with every transport's reason.
    const reasons = e instanceof AggregateError ? `: ${e.errors.map((r) => r?.message ?? String(r)).join("; ")}` : "";
    report({ ...partial(), ok: false, error: `${e?.message ?? e}${reasons}` });
  }
}

window.addEventListener("unhandledrejection", (e) => console.error("moq-page: unhandled rejection:", e.reason?.stack ?? e.reason));
window.addEventListener("error", (e) => console.error("moq-page: error:", e.message));
