/**
 * A router's chunk cache: bounded by bytes, O(1) lookup, insertion and eviction.
 *
 * Least-recently-used order is kept by a Map's insertion order (a hit re-inserts),
 * so eviction takes the first key: no scan, unlike the paper's cache whose search
 * cost half its slowdown. Chunks larger than a fraction of the cache are not
 * admitted: one huge chunk must not flush everything else.
 */
export interface ChunkCacheStats {
  hits: number;
  misses: number;
  insertions: number;
  evictions: number;
  rejected: number;
  bytes: number;
  entries: number;
}

export class ChunkCache {
  private readonly entries = new Map<string, Buffer>();
  private bytesUsed = 0;
  private readonly counters = { hits: 0, misses: 0, insertions: 0, evictions: 0, rejected: 0 };
  /** Called with the key of every chunk that leaves the cache (to drop its CID route). */
  onEvict: ((key: string) => void) | undefined;

  constructor(
    readonly capacityBytes: number,
    /** Largest chunk admitted, as a fraction of the capacity (default 1/8). */
    private readonly admitFraction = 1 / 8,
  ) {}

  get(key: string): Buffer | undefined {
    const data = this.entries.get(key);
    if (data === undefined) {
      this.counters.misses++;
      return undefined;
    }
    this.counters.hits++;
    this.entries.delete(key);
    this.entries.set(key, data);
    return data;
  }

  has(key: string): boolean {
    return this.entries.has(key);
  }

  /** Adds a chunk (already verified by the caller); returns false if not admitted. */
  put(key: string, data: Buffer): boolean {
    if (data.length > this.capacityBytes * this.admitFraction) {
      this.counters.rejected++;
      return false;
    }
    const previous = this.entries.get(key);
    if (previous) {
      this.entries.delete(key);
      this.bytesUsed -= previous.length;
    }
    while (this.bytesUsed + data.length > this.capacityBytes && this.entries.size > 0) {
      const oldest = this.entries.keys().next().value!;
      this.bytesUsed -= this.entries.get(oldest)!.length;
      this.entries.delete(oldest);
      this.counters.evictions++;
      this.onEvict?.(oldest);
    }
    this.entries.set(key, data);
    this.bytesUsed += data.length;
    this.counters.insertions++;
    return true;
  }

  delete(key: string): boolean {
    const data = this.entries.get(key);
    if (!data) return false;
    this.entries.delete(key);
    this.bytesUsed -= data.length;
    return true;
  }

  get stats(): ChunkCacheStats {
    return { ...this.counters, bytes: this.bytesUsed, entries: this.entries.size };
  }
}
