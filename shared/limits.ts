/**
 * Bounds for state that outside input creates. XIA's self-certifying IDs are free to
 * mint, so anything keyed by an identity, a size or a connection from outside has a cap,
 * and every refusal is counted (never silent): an operator sees on /metrics what was
 * shed and why, while good traffic keeps flowing.
 *
 *  - `Refusals`: one counter set per component, by resource and reason, exported as one
 *    Prometheus family with every known series present from the start (at 0).
 *  - `LruMap`: a Map with an entry cap and an optional byte budget; the least recently
 *    used entries go first, and each eviction is reported.
 *  - `TokenBucket` / `KeyedRateLimiter`: rates per link, per key, per peer.
 */
import { Counter, type Registry } from 'prom-client';
import { systemClock, type Clock } from './clock.js';

/** Why something from outside was not taken. */
export type RefusalReason = 'cap' | 'budget' | 'rate' | 'timeout' | 'malformed' | 'forbidden' | 'stale';

export class Refusals {
  private readonly counts = new Map<string, number>();
  private readonly known = new Set<string>();

  /**
   * `declared`: the resource/reason pairs this component can refuse, so their series exist
   * (at 0) before the first refusal — a rate() over a series that appears late is wrong.
   */
  constructor(declared: ReadonlyArray<readonly [resource: string, reason: RefusalReason]> = []) {
    for (const [resource, reason] of declared) this.declare(resource, reason);
  }

  declare(resource: string, reason: RefusalReason): void {
    const key = `${resource}\u0000${reason}`;
    this.known.add(key);
    if (!this.counts.has(key)) this.counts.set(key, 0);
  }

  /** Counts one refusal (or `n`) of `resource` for `reason`. */
  refuse(resource: string, reason: RefusalReason, n = 1): void {
    const key = `${resource}\u0000${reason}`;
    this.counts.set(key, (this.counts.get(key) ?? 0) + n);
  }

  /** How many `resource` refusals (for `reason`, or all reasons). */
  count(resource: string, reason?: RefusalReason): number {
    let total = 0;
    for (const [key, value] of this.counts) {
      const [r, why] = key.split('\u0000');
      if (r === resource && (reason === undefined || why === reason)) total += value;
    }
    return total;
  }

  /** Every counter, as `{ "resource/reason": n }`. */
  snapshot(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const [key, value] of this.counts) out[key.replace('\u0000', '/')] = value;
    return out;
  }

  /** Exposes the counters as `<name>{...labels, resource, reason}` (a counter family). */
  register(registry: Registry, name: string, help: string, labels: Record<string, string> = {}): void {
    const counts = this.counts;
    new Counter({
      name,
      help,
      labelNames: [...Object.keys(labels), 'resource', 'reason'],
      registers: [registry],
      collect() {
        this.reset();
        for (const [key, value] of counts) {
          const [resource, reason] = key.split('\u0000') as [string, string];
          this.inc({ ...labels, resource, reason }, value);
        }
      },
    });
  }
}

export interface LruMapOptions<K, V> {
  /** Most entries held. */
  maxEntries: number;
  /** Most bytes held (with `sizeOf`); unlimited if absent. */
  maxBytes?: number;
  sizeOf?: (value: V, key: K) => number;
  /** Called for each entry pushed out to make room (not for delete()). */
  onEvict?: (key: K, value: V) => void;
}

/**
 * A Map bounded by entries and bytes, least recently used first out. `get` refreshes an
 * entry; `peek` does not. A single value larger than the byte budget is not stored
 * (`set` returns false) rather than emptying the whole map for it.
 */
export class LruMap<K, V> {
  private readonly map = new Map<K, { value: V; size: number }>();
  private totalBytes = 0;

  constructor(private readonly options: LruMapOptions<K, V>) {
    if (!(options.maxEntries >= 1)) throw new RangeError('LruMap needs maxEntries >= 1');
  }

  get size(): number {
    return this.map.size;
  }

  get bytes(): number {
    return this.totalBytes;
  }

  get maxEntries(): number {
    return this.options.maxEntries;
  }

  has(key: K): boolean {
    return this.map.has(key);
  }

  get(key: K): V | undefined {
    const entry = this.map.get(key);
    if (!entry) return undefined;
    this.map.delete(key);
    this.map.set(key, entry);
    return entry.value;
  }

  peek(key: K): V | undefined {
    return this.map.get(key)?.value;
  }

  /** Stores `value`, evicting the oldest entries as needed; false if it alone exceeds the byte budget. */
  set(key: K, value: V): boolean {
    const size = this.options.sizeOf?.(value, key) ?? 0;
    if (this.options.maxBytes !== undefined && size > this.options.maxBytes) return false;
    this.delete(key);
    this.map.set(key, { value, size });
    this.totalBytes += size;
    while (this.map.size > this.options.maxEntries || (this.options.maxBytes !== undefined && this.totalBytes > this.options.maxBytes)) {
      const [oldestKey, oldest] = this.map.entries().next().value!;
      this.map.delete(oldestKey);
      this.totalBytes -= oldest.size;
      this.options.onEvict?.(oldestKey, oldest.value);
    }
    return true;
  }

  /** Would `set` of a new entry of `size` bytes have to evict something? */
  full(size = 0): boolean {
    return this.map.size >= this.options.maxEntries || (this.options.maxBytes !== undefined && this.totalBytes + size > this.options.maxBytes);
  }

  delete(key: K): boolean {
    const entry = this.map.get(key);
    if (!entry) return false;
    this.map.delete(key);
    this.totalBytes -= entry.size;
    return true;
  }

  clear(): void {
    this.map.clear();
    this.totalBytes = 0;
  }

  keys(): IterableIterator<K> {
    return this.map.keys();
  }

  *entries(): IterableIterator<[K, V]> {
    for (const [key, entry] of this.map) yield [key, entry.value];
  }

  *values(): IterableIterator<V> {
    for (const entry of this.map.values()) yield entry.value;
  }
}

/** A token bucket: `rate` tokens a second, holding at most `burst`. */
export class TokenBucket {
  private tokens: number;
  private refilledAt: number;

  constructor(
    private readonly rate: number,
    private readonly burst: number = rate,
    private readonly clock: Clock = systemClock,
  ) {
    this.tokens = burst;
    this.refilledAt = clock.monotonic();
  }

  /** Takes `n` tokens if there are that many; false (and nothing taken) otherwise. */
  take(n = 1): boolean {
    const now = this.clock.monotonic();
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.refilledAt) / 1000) * this.rate);
    this.refilledAt = now;
    if (this.tokens < n) return false;
    this.tokens -= n;
    return true;
  }
}

/**
 * A token bucket per key (a link, a HID, a peer address), the keys themselves bounded:
 * the least recently seen key's bucket is forgotten first (it comes back full, which is
 * the lenient side for a key that has been quiet).
 */
export class KeyedRateLimiter<K> {
  private readonly buckets: LruMap<K, TokenBucket>;

  constructor(
    private readonly rate: number,
    private readonly burst: number = rate,
    maxKeys = 4096,
    private readonly clock: Clock = systemClock,
  ) {
    this.buckets = new LruMap({ maxEntries: maxKeys });
  }

  take(key: K, n = 1): boolean {
    let bucket = this.buckets.get(key);
    if (!bucket) {
      bucket = new TokenBucket(this.rate, this.burst, this.clock);
      this.buckets.set(key, bucket);
    }
    return bucket.take(n);
  }

  get keys(): number {
    return this.buckets.size;
  }
}
