import { describe, expect, it } from 'vitest';
import { placeSendTimes, type PingRecord } from './clients.js';
import { agentFigures, goldbachGap, median, pingRecovery, xpingDowntime } from './figures.js';

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
});
