// The synthetic media format of `moq publish` / `moq watch` (rs/moq-cli/src/media.rs), in the
// browser: a 24-byte big-endian header (capture time in µs since the Unix epoch, group sequence,
// frame index within the group, frame length) followed by filler regenerated from (group, index)
// with a 64-bit xorshift, so a receiver checks every byte without a checksum on the wire.

export const HEADER_SIZE = 24;
const MASK = (1n << 64n) - 1n;
const GOLDEN = 0x9e3779b97f4a7c15n;

/** The xorshift filler of frame (group, index): `len` bytes, little-endian per 64-bit word. */
export function filler(group, index, len) {
  const out = new Uint8Array(Math.ceil(len / 8) * 8);
  const view = new DataView(out.buffer);
  let state = ((BigInt(group) * GOLDEN) & MASK) ^ (BigInt(index) << 1n) ^ 1n;
  for (let offset = 0; offset < len; offset += 8) {
    state ^= (state << 13n) & MASK;
    state ^= state >> 7n;
    state ^= (state << 17n) & MASK;
    view.setBigUint64(offset, state, true);
  }
  return out.subarray(0, len);
}

/** One frame of exactly `size` bytes (at least the header), as `make_frame` builds it. */
export function makeFrame(group, index, size, captureUs) {
  size = Math.max(size, HEADER_SIZE);
  const frame = new Uint8Array(size);
  const view = new DataView(frame.buffer);
  view.setBigUint64(0, BigInt(captureUs));
  view.setBigUint64(8, BigInt(group));
  view.setUint32(16, index);
  view.setUint32(20, size);
  frame.set(filler(group, index, size - HEADER_SIZE), HEADER_SIZE);
  return frame;
}

/** The current wall clock in µs since the Unix epoch (what `now_us` gives the Rust side). */
export function nowUs() {
  return Math.round((performance.timeOrigin + performance.now()) * 1000);
}

/**
 * Parses and verifies a frame byte for byte. Returns `{ captureUs, group, index, size }`, or
 * throws an Error naming the first difference.
 */
export function verifyFrame(payload) {
  if (!(payload instanceof Uint8Array)) throw new Error(`frame is not bytes: ${typeof payload}`);
  if (payload.byteLength < HEADER_SIZE) throw new Error(`frame of ${payload.byteLength} bytes is shorter than the header`);
  const view = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
  const captureUs = Number(view.getBigUint64(0));
  const group = Number(view.getBigUint64(8));
  const index = view.getUint32(16);
  const size = view.getUint32(20);
  if (size !== payload.byteLength) {
    throw new Error(`frame ${group}/${index}: header says ${size} bytes, received ${payload.byteLength}`);
  }
  const expected = filler(group, index, size - HEADER_SIZE);
  for (let i = 0; i < expected.length; i++) {
    if (payload[HEADER_SIZE + i] !== expected[i]) {
      throw new Error(
        `frame ${group}/${index}: byte ${HEADER_SIZE + i} of ${size} is ${payload[HEADER_SIZE + i]}, expected ${expected[i]}`,
      );
    }
  }
  return { captureUs, group, index, size };
}

/** Fails unless the verifier accepts a good frame and rejects a flipped byte and a short frame. */
export function selfTest() {
  const good = makeFrame(3, 7, 1000, 42);
  const info = verifyFrame(good);
  if (info.group !== 3 || info.index !== 7 || info.captureUs !== 42) throw new Error("verifier self-test: header misread");
  const flipped = good.slice();
  flipped[500] ^= 1;
  for (const bad of [flipped, good.subarray(0, 999)]) {
    let rejected = false;
    try {
      verifyFrame(bad);
    } catch {
      rejected = true;
    }
    if (!rejected) throw new Error("verifier self-test: a corrupt frame passed");
  }
}

/** Frame sizes `moq publish` uses for a track: a key frame 4x the average, deltas sharing the rest. */
export function frameSizes(bitrate, fps, gop, keyFrames) {
  const avg = Math.max(Math.floor(bitrate / 8 / fps), HEADER_SIZE);
  const keyed = keyFrames && gop > 1;
  const key = keyed ? avg * 4 : avg;
  const delta = keyed ? Math.max(Math.floor(Math.max(avg * gop - key, 0) / (gop - 1)), HEADER_SIZE) : avg;
  return { key, delta };
}

/**
 * Checks what a subscriber receives on one track: every frame verified, groups consecutive from
 * the first one received, frames 0, 1, 2, ... within each group, and each finished group holding
 * exactly `gop` frames. The first problem is kept in `error` (and counted in `errors`).
 */
export class TrackCheck {
  constructor(gop) {
    selfTest();
    this.gop = gop;
    this.frames = 0;
    this.bytes = 0;
    this.groups = 0;
    this.groupsComplete = 0;
    this.firstGroup = null;
    this.lastGroup = null;
    this.errors = 0;
    this.error = null;
    this.latencyUs = [];
    this.firstFrameAt = null;
    this.lastFrameAt = null;
  }

  fail(message) {
    this.errors += 1;
    if (!this.error) this.error = message;
  }

  /** Logs progress every second (in the page's console, shown when a run fails). */
  logEvery(ms = 1000) {
    const timer = setInterval(() => {
      console.log(
        `moq-page: progress frames=${this.frames} groups=${this.groups} complete=${this.groupsComplete} at=${this.lastGroup}/${this.nextIndex} errors=${this.errors}`,
      );
    }, ms);
    return () => clearInterval(timer);
  }

  /** A group starts: its sequence must follow the previous group's. */
  startGroup(sequence) {
    if (this.lastGroup !== null && sequence !== this.lastGroup + 1) {
      this.fail(`group ${sequence} follows group ${this.lastGroup}`);
    }
    if (this.firstGroup === null) this.firstGroup = sequence;
    this.lastGroup = sequence;
    this.groups += 1;
    this.nextIndex = 0;
  }

  /** A frame of the current group. */
  frame(sequence, payload) {
    let info;
    try {
      info = verifyFrame(payload);
    } catch (e) {
      this.fail(e.message);
      return;
    }
    if (info.group !== sequence) this.fail(`frame ${info.group}/${info.index} arrived in group ${sequence}`);
    if (info.index !== this.nextIndex) {
      this.fail(`group ${sequence}: frame ${info.index} where frame ${this.nextIndex} was due`);
    }
    this.nextIndex = info.index + 1;
    this.frames += 1;
    this.bytes += payload.byteLength;
    const now = performance.timeOrigin + performance.now();
    this.firstFrameAt ??= now;
    this.lastFrameAt = now;
    this.latencyUs.push(nowUs() - info.captureUs);
  }

  /** The current group ended cleanly: it must hold every frame of the GOP. */
  endGroup(sequence) {
    if (this.nextIndex !== this.gop) {
      this.fail(`group ${sequence} ended after ${this.nextIndex} of ${this.gop} frames`);
    } else {
      this.groupsComplete += 1;
    }
  }

  summary() {
    const sorted = [...this.latencyUs].sort((a, b) => a - b);
    const pct = (p) => (sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] / 1000 : 0);
    return {
      frames: this.frames,
      bytes: this.bytes,
      groups: this.groups,
      groups_complete: this.groupsComplete,
      first_group: this.firstGroup,
      last_group: this.lastGroup,
      span_ms: this.firstFrameAt === null ? 0 : Math.round(this.lastFrameAt - this.firstFrameAt),
      latency_ms_p50: pct(50),
      latency_ms_max: pct(100),
      errors: this.errors,
      error: this.error,
    };
  }
}
