import { describe, expect, it } from 'vitest';
import { placeSendTimes, type PingRecord } from './clients.js';
import fc from 'fast-check';
import { agentFigures, badFiles, dbenchCheck, dbenchProgressLines, goldbachGap, lastWrites, median, mirrorFigures, pingRecovery, xpingDowntime } from './figures.js';

/** Echoes every 10 ms from t=0; `lost` says which sequence numbers never came back. */
function pings(count: number, lost: (seq: number) => boolean): PingRecord[] {
  return Array.from({ length: count }, (_, seq) => (lost(seq) ? { seq, sentAt: Number.NaN, failure: 'lost' } : { seq, sentAt: seq * 10, rttMs: 2 }));
}

describe('lab figures', () => {
  it('places lost echoes between their answered neighbours', () => {
    const records = pings(10, (s) => s >= 3 && s <= 5);
    placeSendTimes(records, 10);
    expect(records.map((r) => r.sentAt)).toEqual([0, 10, 20, 30, 40, 50, 60, 70, 80, 90]);
  });

  it("counts xping's downtime as the lost run across the switchover, and pre-copy losses apart", () => {
    // Lost: 20-24 during the pre-copy (congestion), 50-61 across STOP (500) -> RESUME (560).
    const records = pings(100, (s) => (s >= 20 && s <= 24) || (s >= 50 && s <= 61));
    placeSendTimes(records, 10);
    const down = xpingDowntime(records, { requestedAt: 100, stoppedAt: 500, resumedAt: 560 }, 10);
    expect(down).toEqual({ lost: 12, ms: 120, precopyLost: 5, precopySent: 40 });
    expect(pingRecovery(records, 560)).toBe(60);
    // Nothing lost while stopped: no downtime seen by xping.
    expect(xpingDowntime(pings(100, () => false), { requestedAt: 0, stoppedAt: 500, resumedAt: 505 }, 10).lost).toBe(0);
  });

  it('finds the longest Goldbach gap in a window, and medians of what is known', () => {
    const answers = [0, 10, 20, 400, 410, 900].map((at, n) => ({ n, at }));
    expect(goldbachGap(answers, 0, 500)).toBe(380);
    expect(goldbachGap(answers, 405, 1000)).toBe(490);
    expect(median([3, null, 1, 2, undefined])).toBe(2);
    expect(median([])).toBeNull();
  });

  it("reads the agent's figures for a move from the VM's event log", () => {
    const events = [
      { event: 'move.resume-perceived', component: 'agent', ts: '2026-01-01T00:00:00.000Z' },
      { event: 'move.perceived', component: 'agent', kind: 'inter-ad', ts: '2026-01-01T00:00:00.120Z' },
      { event: 'move.cleaned', component: 'agent', ms: 30 },
      { event: 'move.notified', component: 'agent', ms: 45.5 },
      { event: 'move.registered', component: 'agent', ms: 80 },
    ];
    expect(agentFigures(events)).toEqual({ resumeToPerceivedMs: 120, noticeAckedMs: 45.5, registeredMs: 80, cleanedMs: 30, kind: 'inter-ad' });
    expect(agentFigures([])).toEqual({ resumeToPerceivedMs: null, noticeAckedMs: null, registeredMs: null, cleanedMs: null });
  });

  it("keeps the SHA-1 each file had when last written, across the event logs of every QEMU, in order", () => {
    const wrote = (file: string, sha1: string, seq: number) => ({ event: 'guest.file-wrote', file, sha1, seq });
    const written = lastWrites([wrote('f00', 'a'.repeat(40), 1), wrote('f01', 'b'.repeat(40), 2), { event: 'guest.file-wrote', file: 3 }]);
    lastWrites([wrote('f00', 'c'.repeat(40), 3), { event: 'move.perceived' }], written);
    expect([...written]).toEqual([['f00', 'c'.repeat(40)], ['f01', 'b'.repeat(40)]]);
    expect(badFiles(written, { f00: 'c'.repeat(40), f01: 'b'.repeat(40), f02: 'd'.repeat(40) })).toEqual([]);
    expect(badFiles(written, { f00: 'a'.repeat(40) })).toEqual([`f00: wrote ${'c'.repeat(12)}, read ${'a'.repeat(12)}`, `f01: wrote ${'b'.repeat(12)}, read nothing`]);
  });

  it('finds a file read back wrong whatever the writes were', () => {
    const sha = fc.stringMatching(/^[0-9a-f]{40}$/);
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.constantFrom('f0', 'f1', 'f2'), sha), { maxLength: 20 }), fc.constantFrom('f0', 'f1', 'f2'), (writes, victim) => {
        const written = lastWrites(writes.map(([file, sha1]) => ({ event: 'guest.file-wrote', file, sha1 })));
        const readBack = Object.fromEntries(written);
        expect(badFiles(written, readBack)).toEqual([]);
        if (written.has(victim)) {
          readBack[victim] = written.get(victim) === '0'.repeat(40) ? '1'.repeat(40) : '0'.repeat(40);
          expect(badFiles(written, readBack)).toHaveLength(1);
        }
      }),
    );
  });

  it("reads dbench's own lines: progress after the move, its rate, and real errors (not 4.0's semaphore complaint)", () => {
    const progress = (mb: number, sec: number) => `   1      1234   ${mb.toFixed(2)} MB/sec  execute ${sec} sec  latency 12.345 ms`;
    const lines = ['failed to create barrier semaphore', progress(10, 1), progress(14, 2), progress(12, 3).replace('execute', 'warmup')];
    expect(dbenchProgressLines(lines)).toBe(3);
    expect(dbenchCheck(lines)).toEqual({ name: 'dbench', ranOn: true, errors: [], rate: 12 });
    expect(dbenchCheck(['[12] write failed on handle 10003 (No space left on device)'])).toEqual({ name: 'dbench', ranOn: false, errors: ['[12] write failed on handle 10003 (No space left on device)'], rate: null });
  });

  it("takes the mirror's figures from xmig migrate's disk report", () => {
    expect(mirrorFigures(undefined)).toEqual({ mirroredBytes: null, wireBytes: null, syncMs: null });
    const report = { mirroredBytes: 5e8, wire: { toTarget: 5.1e8, fromTarget: 1e5, connections: 1 }, phases: [{ phase: 'mirror-sync', startMs: 10, endMs: 4210 }, { phase: 'ready', startMs: 4210 }] };
    expect(mirrorFigures(report as never)).toEqual({ mirroredBytes: 5e8, wireBytes: 5.1e8, syncMs: 4200 });
  });
});
