import { describe, expect, it } from 'vitest';
import { activeResources, leftBehind } from '../shared/startable.js';
import { impairmentSchema, LinkImpairment, type ImpairmentConfig } from './link-impairment.js';

function run(config: ImpairmentConfig, count: number, bytes = 1000): { impairment: LinkImpairment<number>; out: number[]; done: Promise<void> } {
  const out: number[] = [];
  const impairment = new LinkImpairment<number>(config, 'test-link', (n) => out.push(n));
  for (let i = 0; i < count; i++) impairment.submit(i, bytes);
  const done = new Promise<void>((resolve) => {
    const check = (): void => (impairment.held === 0 ? resolve() : void setTimeout(check, 5));
    check();
  });
  return { impairment, out, done };
}

describe('LinkImpairment', () => {
  it('loses about the configured share, the same datagrams for the same seed, and counts them', async () => {
    const a = run({ lossRate: 0.05, seed: 42 }, 20_000);
    const b = run({ lossRate: 0.05, seed: 42 }, 20_000);
    const c = run({ lossRate: 0.05, seed: 43 }, 20_000);
    await Promise.all([a.done, b.done, c.done]);
    expect(a.out).toEqual(b.out);
    expect(a.out).not.toEqual(c.out);
    expect(a.impairment.counters.lost).toBe(20_000 - a.out.length);
    expect(a.impairment.counters.lost / 20_000).toBeGreaterThan(0.04);
    expect(a.impairment.counters.lost / 20_000).toBeLessThan(0.06);
    expect(a.impairment.counters.sent).toBe(a.out.length);
  });

  it('holds every datagram for at least the delay, in order without jitter', async () => {
    const started = performance.now();
    const arrivals: number[] = [];
    const impairment = new LinkImpairment<number>({ delayMs: 30 }, 'delay', () => arrivals.push(performance.now() - started));
    const order: number[] = [];
    const ordered = new LinkImpairment<number>({ delayMs: 30 }, 'delay2', (n) => order.push(n));
    for (let i = 0; i < 100; i++) {
      impairment.submit(i, 100);
      ordered.submit(i, 100);
    }
    expect(arrivals).toEqual([]);
    await new Promise<void>((resolve) => {
      const check = (): void => (order.length === 100 ? resolve() : void setTimeout(check, 5));
      check();
    });
    // Timers fire on whole milliseconds, up to half a millisecond early by design.
    expect(Math.min(...arrivals)).toBeGreaterThanOrEqual(29);
    expect(order).toEqual([...Array(100).keys()]);
    expect(impairment.counters.delayed).toBe(100);
  });

  it('reorders, duplicates and jitters as configured, deterministically', async () => {
    const a = run({ reorderRate: 0.2, reorderDelayMs: 5, duplicateRate: 0.1, seed: 7 }, 2000);
    const b = run({ reorderRate: 0.2, reorderDelayMs: 5, duplicateRate: 0.1, seed: 7 }, 2000);
    await Promise.all([a.done, b.done]);
    // The same decisions for the same seed (which datagrams are held back or doubled); the
    // exact order out also depends on when timers fire, so only the multiset is compared.
    expect(a.impairment.counters).toEqual(b.impairment.counters);
    expect([...a.out].sort((x, y) => x - y)).toEqual([...b.out].sort((x, y) => x - y));
    const { reordered, duplicated } = a.impairment.counters;
    expect(reordered).toBeGreaterThan(300);
    expect(duplicated).toBeGreaterThan(150);
    expect(a.out.length).toBe(2000 + duplicated);
    const inversions = a.out.filter((n, i) => i > 0 && n < a.out[i - 1]!).length;
    expect(inversions).toBeGreaterThan(0);
    const jittered = run({ delayMs: 5, jitterMs: 5, seed: 1 }, 500);
    await jittered.done;
    expect(jittered.out.filter((n, i) => i > 0 && n < jittered.out[i - 1]!).length).toBeGreaterThan(0);
    expect([...jittered.out].sort((x, y) => x - y)).toEqual([...Array(500).keys()]);
  });

  it('serialises at the configured rate and drops what overflows its queue', async () => {
    // 8 Mbit/s = 1000 bytes per ms; a 20 ms queue holds 20 datagrams of 1000 bytes waiting
    // behind the one on the wire. The clock stands still while the burst is offered: on a
    // loaded machine the offering loop itself takes milliseconds, in which the queue drains.
    let burst = true;
    const origin = performance.now();
    const clock = (): number => (burst ? 0 : performance.now() - origin);
    const out: number[] = [];
    const arrivals: number[] = [];
    const impairment = new LinkImpairment<number>({ rateMbps: 8, queueMs: 20 }, 'rate', (n) => {
      out.push(n);
      arrivals.push(clock());
    }, clock);
    for (let i = 0; i < 100; i++) impairment.submit(i, 1000);
    burst = false;
    await new Promise<void>((resolve) => {
      const check = (): void => (impairment.held === 0 ? resolve() : void setTimeout(check, 5));
      check();
    });
    expect(impairment.counters.queueDropped).toBe(79);
    expect(out).toEqual([...Array(21).keys()]);
    // The k-th leaves once k + 1 datagrams' worth of time has passed (timers fire up to half a
    // millisecond early by design, and late on a loaded machine, never earlier).
    arrivals.forEach((at, k) => expect(at).toBeGreaterThanOrEqual(k + 0.5));
  });

  it('passes datagrams straight through with nothing configured, and leaves no timer after stop', () => {
    const before = activeResources();
    const { impairment, out } = run({}, 10);
    expect(impairment.active).toBe(false);
    expect(out.length).toBe(10);
    const held = new LinkImpairment<number>({ delayMs: 10_000 }, 'held', () => undefined);
    held.submit(1, 10);
    expect(held.held).toBe(1);
    held.stop();
    held.submit(2, 10);
    expect(held.held).toBe(0);
    expect(leftBehind(before, activeResources())).toEqual({});
  });

  it('rejects nonsense in its config', () => {
    expect(impairmentSchema.safeParse({ lossRate: 1.5 }).success).toBe(false);
    expect(impairmentSchema.safeParse({ delayMs: -1 }).success).toBe(false);
    expect(impairmentSchema.safeParse({ lossRatio: 0.1 }).success).toBe(false);
    expect(impairmentSchema.safeParse({ mtu: 100 }).success).toBe(false);
    expect(impairmentSchema.parse({ lossRate: 0.01 })).toMatchObject({ lossRate: 0.01, delayMs: 0, queueMs: 100 });
  });
});
