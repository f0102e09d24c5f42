/** Wall-clock and monotonic time, handed in so tests can control it. */
export interface Clock {
  /** Milliseconds since the epoch (wall time: for timestamps on the wire). */
  now(): number;
  /** Monotonic milliseconds (for intervals and timeouts). */
  monotonic(): number;
}

export const systemClock: Clock = {
  now: () => Date.now(),
  monotonic: () => performance.now(),
};
