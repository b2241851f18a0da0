// The @moq/lite 0.2.2 page (the client still deployed in older pages): subscribe to a synthetic
// broadcast and verify every byte. Its frames are bare Uint8Arrays (@moq/net wraps them as
// `{ payload, timestamp }`), and it exposes no transport, so the harness records that.
import { params, run, within } from "./harness.js";
import * as Moq from "@moq/lite";
import { TrackCheck } from "./media.js";
import { receive } from "./receive.js";

const relay = new URL(params.relay);
const durationMs = Number(params.duration) * 1000;
const timeoutMs = Number(params.timeout ?? 15) * 1000;

let connection;
let check;

function base() {
  return {
    library: "@moq/lite",
    library_version: params.libraryVersion,
    mode: params.mode,
    broadcast: params.broadcast,
    track: params.track,
    version: connection?.version ?? null,
  };
}

function sessionLost() {
  return connection.closed.then(
    () => Promise.reject(new Error("the session closed")),
    (e) => Promise.reject(new Error(`the session closed: ${e?.message ?? e}`)),
  );
}

async function subscribe() {
  console.log("moq-page: connecting to", relay.href);
  connection = await within(timeoutMs, "connect", Moq.Connection.connect(relay));
  console.log("moq-page: connected", connection.version);
  const lost = sessionLost();
  lost.catch((e) => console.error("moq-page:", e.message));
  const broadcast = connection.consume(Moq.Path.from(params.broadcast));
  const catalogTrack = broadcast.subscribe("catalog", 255);
  const catalog = await within(timeoutMs, "catalog", Promise.race([catalogTrack.readJson(), lost]));
  const entry = catalog?.tracks?.find((t) => t.name === params.track);
  if (!entry) throw new Error(`track ${params.track} is not in the catalog ${JSON.stringify(catalog)}`);
  check = new TrackCheck(entry.gop);
  const stopLogging = check.logEvery();
  const track = broadcast.subscribe(params.track, 2);
  try {
    await receive(track, check, { durationMs, timeoutMs, lost, payloadOf: (frame) => frame });
  } finally {
    stopLogging();
  }
  track.close();
  catalogTrack.close();
  const summary = check.summary();
  return { ...base(), ok: summary.errors === 0, fps: entry.fps, gop: entry.gop, ...summary, error: summary.error };
}

run(subscribe, () => ({ ...base(), ...(check?.summary() ?? {}) })).finally(() => connection?.close());
