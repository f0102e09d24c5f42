import fc from 'fast-check';
import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { KeyedRateLimiter, LruMap, Refusals, TokenBucket } from './limits.js';

function fakeClock(): { now: () => number; monotonic: () => number; advance: (ms: number) => void } {
  let t = 0;
  return { now: () => t, monotonic: () => t, advance: (ms) => (t += ms) };
}

describe('LruMap', () => {
  it('never holds more than its entry cap or byte budget, whatever is set', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 20 }),
        fc.integer({ min: 1, max: 500 }),
        fc.array(fc.tuple(fc.integer({ min: 0, max: 40 }), fc.integer({ min: 0, max: 100 })), { maxLength: 200 }),
        (maxEntries, maxBytes, writes) => {
          const evicted: number[] = [];
          const map = new LruMap<number, number>({ maxEntries, maxBytes, sizeOf: (v) => v, onEvict: (k) => evicted.push(k) });
          for (const [key, size] of writes) {
            map.set(key, size);
            expect(map.size).toBeLessThanOrEqual(maxEntries);
            expect(map.bytes).toBeLessThanOrEqual(maxBytes);
            expect(map.bytes).toBe([...map.values()].reduce((a, b) => a + b, 0));
          }
        },
      ),
    );
  });

  it('evicts the least recently used entry first; get refreshes, peek does not', () => {
    const map = new LruMap<string, number>({ maxEntries: 2 });
    map.set('a', 1);
    map.set('b', 2);
    map.get('a');
    map.set('c', 3);
    expect([...map.keys()]).toEqual(['a', 'c']);
    map.peek('a');
    map.set('d', 4);
    expect([...map.keys()]).toEqual(['c', 'd']);
  });

  it('refuses a single value larger than the whole budget instead of emptying itself', () => {
    const map = new LruMap<string, Buffer>({ maxEntries: 10, maxBytes: 100, sizeOf: (b) => b.length });
    map.set('small', Buffer.alloc(10));
    expect(map.set('huge', Buffer.alloc(101))).toBe(false);
    expect(map.has('small')).toBe(true);
  });
});

describe('TokenBucket and KeyedRateLimiter', () => {
  it('gives the burst at once, then the rate', () => {
    const clock = fakeClock();
    const bucket = new TokenBucket(10, 5, clock);
    let taken = 0;
    for (let i = 0; i < 20; i++) if (bucket.take()) taken++;
    expect(taken).toBe(5);
    clock.advance(1000);
    taken = 0;
    for (let i = 0; i < 20; i++) if (bucket.take()) taken++;
    expect(taken).toBe(5); // refilled to the burst, not beyond
  });

  it('limits each key on its own and bounds the number of keys', () => {
    const clock = fakeClock();
    const limiter = new KeyedRateLimiter<string>(1, 2, 3, clock);
    expect([limiter.take('a'), limiter.take('a'), limiter.take('a')]).toEqual([true, true, false]);
    expect(limiter.take('b')).toBe(true);
    for (const key of ['c', 'd', 'e', 'f']) limiter.take(key);
    expect(limiter.keys).toBe(3);
  });
});

describe('Refusals', () => {
  it('exports every declared series at 0, then counts', async () => {
    const refusals = new Refusals([
      ['api-frame', 'budget'],
      ['api-connection', 'cap'],
    ]);
    const registry = new Registry();
    refusals.register(registry, 'xianet_refusals_total', 'Requests refused', { node: 'A' });
    expect(await registry.metrics()).toContain('xianet_refusals_total{node="A",resource="api-connection",reason="cap"} 0');
    refusals.refuse('api-frame', 'budget', 2);
    expect(refusals.count('api-frame')).toBe(2);
    expect(await registry.metrics()).toContain('xianet_refusals_total{node="A",resource="api-frame",reason="budget"} 2');
  });
});
