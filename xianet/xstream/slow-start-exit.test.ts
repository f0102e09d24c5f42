import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { HYSTART_MAX_THRESHOLD_MS, HYSTART_MIN_SAMPLES, HYSTART_MIN_THRESHOLD_MS, SlowStartExit } from './slow-start-exit.js';

/** Feeds rounds of `perRound` samples: round r's samples are `rtt(r, i)`; packet numbers as a sender's. Returns the round it said to exit in, or -1. */
function run(exit: SlowStartExit, rounds: number, perRound: number, rtt: (round: number, i: number) => number): number {
  let nextPn = 0;
  for (let r = 0; r < rounds; r++) {
    const first = nextPn;
    nextPn += perRound; // the round's packets are all sent before its first ack
    for (let i = 0; i < perRound; i++) if (exit.sample(rtt(r, i), first + i, nextPn)) return r;
  }
  return -1;
}

describe('slow start exit (HyStart delay increase)', () => {
  it('stays in slow start while the round trip holds, whatever its jitter below the threshold', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 500 }), fc.array(fc.double({ min: 0, max: 0.99, noNaN: true }), { minLength: 64, maxLength: 64 }), (base, jitter) => {
        const threshold = Math.min(Math.max(base / 8, HYSTART_MIN_THRESHOLD_MS), HYSTART_MAX_THRESHOLD_MS);
        // Every round's minimum is `base` (its first sample), the rest above it by less than the threshold.
        expect(run(new SlowStartExit(), 8, 16, (r, i) => (i === 0 ? base : base + jitter[(r * 16 + i) % 64]! * threshold * 8))).toBe(-1);
      }),
    );
  });

  it('leaves it in the first round whose smallest round trip has grown by the threshold, once it has enough samples', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 500 }), fc.integer({ min: 2, max: 6 }), (base, growAt) => {
        const threshold = Math.min(Math.max(base / 8, HYSTART_MIN_THRESHOLD_MS), HYSTART_MAX_THRESHOLD_MS);
        const exit = new SlowStartExit();
        expect(run(exit, 8, 16, (r) => (r >= growAt ? base + threshold : base))).toBe(growAt);
        expect(exit.exits).toBe(1);
      }),
    );
  });

  it('does not judge a round on fewer samples than RFC 9406 asks, and starts over on a new path', () => {
    const exit = new SlowStartExit();
    expect(run(exit, 6, HYSTART_MIN_SAMPLES - 1, (r) => 10 + r * 100)).toBe(-1);
    const fresh = new SlowStartExit();
    expect(run(fresh, 1, 16, () => 10)).toBe(-1);
    fresh.reset();
    // After a reset the first round is a baseline again: a much longer path is no exit.
    let nextPn = 16;
    const first = nextPn;
    nextPn += 16;
    for (let i = 0; i < 16; i++) expect(fresh.sample(300, first + i, nextPn)).toBe(false);
  });
});
