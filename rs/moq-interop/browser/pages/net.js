// The @moq/net page: subscribe to a synthetic broadcast and verify every byte, or publish one in
// the exact format `moq watch` verifies. Parameters come from the query string (see run.mjs).
import { params, run, sleep, within } from "./harness.js";
import * as Moq from "@moq/net";
import { frameSizes, makeFrame, nowUs, TrackCheck } from "./media.js";
import { receive } from "./receive.js";

const relay = new URL(params.relay);
const durationMs = Number(params.duration) * 1000;
const timeoutMs = Number(params.timeout ?? 15) * 1000;

let connection;
let check;
let published = null;

function base() {
  return {
    library: "@moq/net",
    library_version: params.libraryVersion,
    mode: params.mode,
    broadcast: params.broadcast,
    track: params.track,
    version: connection?.version ?? null,
    transport: connection?.transport,
  };
}

async function connect() {
  console.log("moq-page: connecting to", relay.href);
  connection = await within(timeoutMs, "connect", Moq.Connection.connect(relay));
  console.log("moq-page: connected", connection.version, "over", connection.transport);
  // A closed session ends the scenario at once, whatever it was waiting for.
  connection.closed.then(
    () => console.warn("moq-page: session closed"),
    (e) => console.error("moq-page: session closed:", e?.message ?? e),
  );
}

/** Rejects when the session closes before the scenario is done. */
function sessionLost() {
  return connection.closed.then(
    () => Promise.reject(new Error("the session closed")),
    (e) => Promise.reject(new Error(`the session closed: ${e?.message ?? e}`)),
  );
}

async function subscribe() {
  await connect();
  const lost = sessionLost();
  lost.catch(() => {});
  const broadcast = connection.consume(Moq.Path.from(params.broadcast));
  const catalogTrack = broadcast.subscribe("catalog", { priority: 255 });
  const catalog = await within(timeoutMs, "catalog", Promise.race([catalogTrack.readJson(), lost]));
  const entry = catalog?.tracks?.find((t) => t.name === params.track);
  if (!entry) throw new Error(`track ${params.track} is not in the catalog ${JSON.stringify(catalog)}`);
  check = new TrackCheck(entry.gop);
  const stopLogging = check.logEvery();
  const track = broadcast.subscribe(params.track, { priority: 2 });
  try {
    await receive(track, check, { durationMs, timeoutMs, lost, payloadOf: (frame) => frame.payload });
  } finally {
    stopLogging();
  }
  track.close();
  catalogTrack.close();
  const summary = check.summary();
  return { ...base(), ok: summary.errors === 0, fps: entry.fps, gop: entry.gop, ...summary, error: summary.error };
}

async function publish() {
  await connect();
  const lost = sessionLost();
  lost.catch(() => {});
  const fps = Number(params.fps ?? 30);
  const gop = Number(params.gop ?? 10);
  const bitrate = Number(params.bitrate ?? 1_000_000);
  const sizes = frameSizes(bitrate, fps, gop, true);
  const broadcast = new Moq.Broadcast.Producer();
  const catalogTrack = broadcast.createTrack("catalog", { priority: 255 });
  const video = broadcast.createTrack(params.track, { priority: 2 });
  const catalog = { tracks: [{ name: params.track, kind: "video", bitrate, fps, gop }] };
  const catalogGroup = catalogTrack.appendGroup();
  catalogGroup.writeJson(catalog);
  catalogGroup.close();
  connection.publish(Moq.Path.from(params.broadcast), broadcast);
  console.log("moq-page: publishing", params.broadcast, JSON.stringify(catalog));
  published = { frames: 0, bytes: 0, groups: 0, fps, gop, bitrate };
  // Frames are due by the wall clock, as in `moq publish`: a group every `gop` frames.
  const start = performance.now();
  let group = null;
  let index = 0;
  while (performance.now() - start < durationMs) {
    const due = Math.floor(((performance.now() - start) / 1000) * fps) + 1;
    while (published.frames < due) {
      if (group === null) {
        group = video.appendGroup();
        published.groups += 1;
        index = 0;
      }
      const frame = makeFrame(group.sequence, index, index === 0 ? sizes.key : sizes.delta, nowUs());
      group.writeFrame({ payload: frame, timestamp: Moq.Time.Timestamp.fromMicros(nowUs()) });
      published.frames += 1;
      published.bytes += frame.byteLength;
      index += 1;
      if (index >= gop) {
        group.close();
        group = null;
      }
    }
    await Promise.race([sleep(5), lost]);
  }
  group?.close();
  // Let the last group reach the relay before closing.
  await Promise.race([sleep(1000), lost]);
  video.close();
  catalogTrack.close();
  broadcast.close();
  return { ...base(), ok: true, ...published };
}

run(
  () => (params.mode === "publish" ? publish() : subscribe()),
  () => ({ ...base(), ...(check?.summary() ?? {}), ...(published ?? {}) }),
).finally(() => connection?.close());
