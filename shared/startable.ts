/**
 * The one lifecycle every component has (libp2p's `Startable`): `start()` brings it up,
 * `stop()` takes it down and leaves nothing behind — no timer, socket, listener or child
 * process. A daemon starts its parts in order and stops them in reverse; whoever starts a
 * part stops it (a component never stops what it was handed).
 *
 * Both may be called again: `start()` on a started component and `stop()` on a stopped
 * one do nothing. Tests check the "nothing behind" part with `activeResources()`.
 */
export interface Startable {
  start(): Promise<void>;
  stop(): Promise<void>;
}

/** Starts `parts` in order; if one fails, stops those already started (in reverse) and rethrows. */
export async function startAll(parts: readonly Startable[]): Promise<void> {
  const started: Startable[] = [];
  try {
    for (const part of parts) {
      await part.start();
      started.push(part);
    }
  } catch (error) {
    await stopAll(started);
    throw error;
  }
}

/** Stops `parts` in reverse order; every part is stopped even if one fails (the first failure is rethrown). */
export async function stopAll(parts: readonly Startable[]): Promise<void> {
  let failure: unknown;
  for (const part of [...parts].reverse()) {
    try {
      await part.stop();
    } catch (error) {
      failure ??= error;
    }
  }
  if (failure !== undefined) throw failure;
}

/**
 * What keeps the event loop alive right now, by kind ("Timeout", "UDPWRAP", "TCPWRAP",
 * "PipeWrap", "ProcessWrap", ...), for tests that check a component stopped cleanly.
 * Compare a snapshot taken before start with one taken after stop.
 */
export function activeResources(): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const kind of process.getActiveResourcesInfo()) counts[kind] = (counts[kind] ?? 0) + 1;
  return counts;
}

/**
 * Kinds that cannot be left behind: an Immediate runs on the event loop's next turn,
 * whoever queued it. Counting them made a check flaky wherever something else was still
 * running (an in-process network delivering frames by setImmediate, at load 19).
 */
const TRANSIENT_KINDS = new Set(['Immediate']);

/** The kinds of which `after` holds more than `before`: what a component left behind. */
export function leftBehind(before: Record<string, number>, after: Record<string, number>): Record<string, number> {
  const left: Record<string, number> = {};
  for (const [kind, count] of Object.entries(after)) {
    if (TRANSIENT_KINDS.has(kind)) continue;
    const extra = count - (before[kind] ?? 0);
    if (extra > 0) left[kind] = extra;
  }
  return left;
}
