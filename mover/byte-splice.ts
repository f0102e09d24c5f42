/**
 * Two byte streams joined both ways, as a tunnel joins a local socket and a STREAM:
 * each side's bytes go to the other untouched, with backpressure (a side that
 * cannot take more pauses the one that feeds it), counted. An end travels through
 * (half-close); an error, or a side that goes without ending, takes the other down
 * too, so neither is left waiting on a peer that is gone.
 */
import type { Duplex } from 'node:stream';

export interface SpliceCounts {
  /** Bytes from `a` to `b`. */
  aToB: number;
  /** Bytes from `b` to `a`. */
  bToA: number;
}

export interface Splice {
  readonly counts: SpliceCounts;
  /** Resolves when both sides are closed: with why, if it was not a clean end. */
  readonly closed: Promise<string | undefined>;
  /** Takes both sides down now. */
  destroy(reason?: string): void;
}

export function splice(a: Duplex, b: Duplex, onBytes?: (direction: 'aToB' | 'bToA', bytes: number) => void): Splice {
  const counts: SpliceCounts = { aToB: 0, bToA: 0 };
  let failure: string | undefined;
  const ended = new Set<Duplex>();
  const destroy = (reason?: string): void => {
    failure ??= reason;
    a.destroy();
    b.destroy();
  };
  const forward = (from: Duplex, to: Duplex, direction: 'aToB' | 'bToA'): void => {
    from.on('data', (chunk: Buffer) => {
      counts[direction] += chunk.length;
      onBytes?.(direction, chunk.length);
      if (!to.write(chunk)) {
        from.pause();
        to.once('drain', () => from.resume());
      }
    });
    from.on('end', () => {
      ended.add(from);
      to.end();
    });
    from.on('error', (error) => destroy(error.message));
    // Gone without an end (reset, killed): the other side cannot be finished cleanly.
    from.on('close', () => {
      if (!ended.has(from)) destroy(failure ?? 'connection closed');
    });
  };
  forward(a, b, 'aToB');
  forward(b, a, 'bToA');
  a.resume();
  b.resume();
  const whenClosed = (stream: Duplex): Promise<void> => (stream.destroyed && stream.closed ? Promise.resolve() : new Promise((resolve) => stream.once('close', () => resolve())));
  const closed = Promise.all([whenClosed(a), whenClosed(b)]).then(() => failure);
  return { counts, closed, destroy };
}
