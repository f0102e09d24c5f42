import { afterEach, describe, expect, it } from 'vitest';
import { BadRequestError } from '../shared/errors.js';
import { activeResources, leftBehind } from '../shared/startable.js';
import { InProcessNetwork, INTER_AD } from './topology.js';
import { maxEchoSize, ping, summarize, XPing } from './xping.js';

let network: InProcessNetwork | undefined;
afterEach(async () => {
  await network?.stop();
  network = undefined;
});

async function build(options: { mtu?: number } = {}): Promise<InProcessNetwork> {
  network = new InProcessNetwork(INTER_AD, { beaconIntervalMs: 50, helloIntervalMs: 200, ...options });
  await network.start();
  await network.ready();
  return network;
}

describe('xping', () => {
  it('refuses bad options with a typed error naming the option, before any timer starts', async () => {
    const net = await build({ mtu: 1500 });
    const c = net.stack('C').node;
    const dst = net.stack('B').node.address();
    const max = maxEchoSize(c, dst);
    expect(max).toBeLessThan(1500);
    const before = activeResources();
    const cases: Array<[object, string]> = [
      [{ size: max + 1 }, 'size'],
      [{ size: 70_000 }, 'size'],
      [{ size: 'x' }, 'size'],
      [{ size: 1e9 }, 'size'],
      [{ intervalMs: 0.5 }, 'intervalMs'],
      [{ intervalMs: NaN }, 'intervalMs'],
      [{ count: -1 }, 'count'],
      [{ timeoutMs: Infinity }, 'timeoutMs'],
    ];
    for (const [options, field] of cases) {
      const error = await ping(c, dst, { count: 3, intervalMs: 1, ...options }).catch((e: unknown) => e);
      expect(error, JSON.stringify(options)).toBeInstanceOf(BadRequestError);
      expect((error as BadRequestError).field).toBe(field);
    }
    expect(await ping(c, {} as never).catch((e: unknown) => (e as BadRequestError).field)).toBe('dst');
    expect(c.refusals.count('ping', 'malformed')).toBe(cases.length + 1);
    expect(leftBehind(before, activeResources())).toEqual({});
    // The largest size that fits goes through.
    expect((await ping(c, dst, { count: 2, intervalMs: 5, size: max, timeoutMs: 30_000 })).received).toBe(2);
  });

  it('stops at once and leaves no timer or listener behind', async () => {
    const net = await build();
    const c = net.stack('C').node;
    const before = activeResources();
    const run = new XPing(c, net.stack('B').node.address(), { intervalMs: 5, timeoutMs: 30_000 });
    await run.start();
    await run.start(); // idempotent
    await new Promise((r) => setTimeout(r, 50));
    await run.stop();
    await run.stop();
    const summary = await run.done;
    expect(summary.sent).toBeGreaterThan(0);
    expect(summary.received).toBe(summary.sent);
    // (The memory segments schedule their deliveries with setImmediate: network, not ping.)
    const { Immediate: _network, ...left } = leftBehind(before, activeResources());
    expect(left).toEqual({});
  });

  it('counts the longest gap in the order sent, whatever order the outcomes came in', () => {
    const reply = (seq: number, rtt?: number): { seq: number; rtt: number | undefined; sentAt: number } => ({ seq, rtt, sentAt: seq });
    const summary = summarize('x', 10, [reply(0, 1), reply(1), reply(2), reply(3, 2), reply(4), reply(5, 3)]);
    expect(summary).toMatchObject({ sent: 6, received: 3, longestGapCount: 2, longestGapMs: 20, rttMinMs: 1, rttMaxMs: 3, rttAvgMs: 2, lossPct: 50 });
  });
});
