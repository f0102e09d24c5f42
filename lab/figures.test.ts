import { describe, expect, it } from 'vitest';
import { parseIperf3, placeSendTimes, type PingRecord } from './clients.js';
import fc from 'fast-check';
import { agentFigures, badFiles, dbenchCheck, dbenchProgressLines, goldbachGap, iperf3Check, lastWrites, median, mirrorFigures, pingRecovery, xpingDowntime } from './figures.js';

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

  it("reads iperf3's seconds and errors, and whether it carried bytes after the move", () => {
    const text = [
      'Connecting to host 127.0.0.1, port 5201',
      '[  5] local 127.0.0.1 port 43210 connected to 127.0.0.1 port 5201',
      '[ ID] Interval           Transfer     Bitrate         Retr  Cwnd',
      '[  5]   0.00-1.00   sec  1.00 MBytes  8.39 Mbits/sec    0    320 KBytes       ',
      '[  5]   1.00-2.00   sec  0.00 Bytes  0.00 bits/sec    0    320 KBytes       ',
      '[  5]   2.00-3.00   sec  1.12 MBytes  9.44 Mbits/sec    1    320 KBytes       ',
      '[  5]   3.00-4.00   sec   512 KBytes  4.19 Mbits/sec    0    320 KBytes       ',
      '- - - - - - - - - - - - - - - - - - - - - - - - -',
      '[  5]   0.00-4.00   sec  2.62 MBytes  5.50 Mbits/sec    1             sender',
      '[  5]   0.00-4.04   sec  2.62 MBytes  5.45 Mbits/sec                  receiver',
      'iperf3: interrupt - the client has terminated',
      'iperf3: error - unable to read from stream socket: Connection reset by peer',
    ];
    const report = parseIperf3(text.map((t, i) => ({ at: 1000 * i, text: t })));
    expect(report.intervals).toEqual([{ at: 3000, mbps: 8.39 }, { at: 4000, mbps: 0 }, { at: 5000, mbps: 9.44 }, { at: 6000, mbps: 4.19 }]);
    expect(report.errors).toEqual([{ at: 11_000, text: 'iperf3: error - unable to read from stream socket: Connection reset by peer' }]);
    // RESUME at 4.5 s: the report read at 5 s may still count bytes from before; the one at 6 s does not.
    expect(iperf3Check(report, { from: 0, resumedAt: 4500, to: 7000 })).toEqual({ name: 'iperf3', ranOn: true, errors: [], rate: 6.3 });
    expect(iperf3Check(report, { from: 0, resumedAt: 5500, to: 12_000 }).ranOn).toBe(false);
    expect(iperf3Check(report, { from: 7000, resumedAt: 7500, to: 12_000 }).errors).toHaveLength(1);
  });

  it("reads any iperf3 interval line's rate in Mbit/s, and never takes other text for one", () => {
    const units = [['', 1e-6], ['K', 1e-3], ['M', 1], ['G', 1e3]] as const;
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 99_999 }), fc.constantFrom(...units), fc.string(), (hundredths, [unit, scale], noise) => {
        const rate = (hundredths / 100).toFixed(2);
        const line = `[  5]   7.00-8.00   sec  1.00 MBytes  ${rate} ${unit}bits/sec    0    320 KBytes`;
        const { intervals, errors } = parseIperf3([{ at: 1, text: line }, { at: 2, text: noise }]);
        expect(intervals[0]).toEqual({ at: 1, mbps: Number(rate) * scale });
        expect(intervals.length + errors.length).toBeLessThanOrEqual(2);
        expect(parseIperf3([{ at: 1, text: `${line}  sender` }]).intervals).toEqual([]);
      }),
    );
  });
});
