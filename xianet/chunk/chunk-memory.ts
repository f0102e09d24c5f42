/**
 * Chunk-sized memory lent to a node's fetcher to assemble chunks in (ChunkFetcher's
 * `into`), and filled again once the chunk is written and forgotten: by the mover's
 * receiver in the node (XiaRetriever) and by each API session's chunk-get.
 *
 * Why: a chunk held as the datagrams it came in keeps every datagram alive until it is
 * written, long enough to be promoted, and each datagram is an ArrayBuffer of its own;
 * a fresh buffer per chunk is one as well, and new memory costs page faults besides.
 * Either way V8 counts the external memory and runs a full mark-compact every ~40 MB
 * of it: 26 mark-compacts per GiB on host B's 15 MB heap (--trace-gc). Measured
 * (bench/README.md, 2026-12-07), `--via-node` on loopback: B 3.46 / 3.05 -> 2.94 / 2.79
 * CPU-s/GB; at MTU 1500, 7.75 / 8.59 -> 7.08 / 7.10.
 *
 * Bounded: every slot is lent (to at most the fetches in flight and the chunks waiting to
 * be written, which the receiver bounds) or free, and at most `maxFree` wait free.
 */
export class ChunkMemory {
  /** Every slot lent or free, by its memory (a view's `.buffer` finds it). */
  private readonly slots = new Map<ArrayBufferLike, Buffer>();
  private readonly free: Buffer[] = [];
  private slotBytes: number;
  readonly stats = { allocated: 0, reused: 0 };

  constructor(slotBytes: number, private readonly maxFree = 32) {
    this.slotBytes = slotBytes;
  }

  /** A slot for a chunk of `length` bytes. Chunks longer than a slot make every slot that long from now on. */
  lend(length: number): Buffer {
    if (length > this.slotBytes) {
      this.slotBytes = length;
      for (const slot of this.free.splice(0)) this.slots.delete(slot.buffer);
    }
    const reused = this.free.pop();
    if (reused) {
      this.stats.reused++;
      return reused;
    }
    // Its own memory (never Node's shared pool): a view of it names the slot.
    const slot = Buffer.allocUnsafeSlow(this.slotBytes);
    this.slots.set(slot.buffer, slot);
    this.stats.allocated++;
    return slot;
  }

  /**
   * Whether a fetch lent `slot` resolved with it (the fetcher assembled the chunk there),
   * rather than with bytes of its own (a fetch of the same CID was already running).
   */
  static holds(slot: Buffer, data: Buffer | readonly Buffer[]): boolean {
    const only = Buffer.isBuffer(data) ? data : data.length === 1 ? data[0]! : undefined;
    return only !== undefined && only.buffer === slot.buffer;
  }

  /** The slot `view` is part of, if it is one of ours. */
  slotOf(view: Buffer): Buffer | undefined {
    return this.slots.get(view.buffer);
  }

  /** A slot nobody uses any longer: filled again by a later chunk (or let go, past `maxFree` or if too short now). */
  giveBack(slot: Buffer): void {
    if (this.slots.get(slot.buffer) !== slot) return;
    if (slot.length < this.slotBytes || this.free.length >= this.maxFree) {
      this.slots.delete(slot.buffer);
      return;
    }
    if (!this.free.includes(slot)) this.free.push(slot);
  }

  /** Slots lent or free. */
  get size(): number {
    return this.slots.size;
  }

  /** Slots lent and not given back. */
  get lent(): number {
    return this.slots.size - this.free.length;
  }
}
