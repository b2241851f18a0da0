// The subscriber loop both libraries share (their track and group handles both offer
// `recvGroup()`, `sequence` and `readFrame()`): every group read to its end, every frame checked.
import { next, within } from "./harness.js";

/**
 * Reads `track` into `check` (a TrackCheck) for `durationMs` after its first group arrives (which
 * must come within `timeoutMs`). `payloadOf` turns the library's frame into its bytes. Rejects if
 * `lost` does, if the track ends, or if it stalls (see harness.next).
 */
export async function receive(track, check, { durationMs, timeoutMs, lost, payloadOf }) {
  const first = await within(timeoutMs, "the first group", Promise.race([track.recvGroup(), lost]));
  const deadline = performance.now() + durationMs;
  let group = first;
  for (;;) {
    if (group === undefined) throw new Error(`the track ended after ${check.frames} frames`);
    check.startGroup(group.sequence);
    for (;;) {
      const frame = await next(group.readFrame(), deadline, lost, () => `frame ${group.sequence}/${check.nextIndex}`);
      if (frame === "deadline") return;
      if (frame === undefined) break;
      check.frame(group.sequence, payloadOf(frame));
    }
    check.endGroup(group.sequence);
    group = await next(track.recvGroup(), deadline, lost, () => `group ${group.sequence + 1}`);
    if (group === "deadline") return;
  }
}
