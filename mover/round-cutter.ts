/**
 * Cuts the migration stream QEMU writes into chunks, and chunks into rounds. A round
 * closes when it holds `roundBytes`, or when the input pauses for `flushMs` — QEMU's
 * last, stop-and-copy round must not wait for more input that will never come — or
 * when the input ends. Chunks are views of what was read (joined only where a chunk
 * straddles two reads).
 */
export interface RoundCutterOptions {
  chunkBytes: number;
  roundBytes: number;
  /** Close the open round when no input came for this long. */
  flushMs: number;
  /** A closed round: its chunks, in order, and their bytes. */
  onRound: (chunks: Buffer[], bytes: number) => void;
}

export class RoundCutter {
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private round: Buffer[] = [];
  private roundBytes = 0;
  private idle: NodeJS.Timeout | undefined;

  constructor(private readonly options: RoundCutterOptions) {}

  /** Bytes read but not yet in a closed round. */
  get buffered(): number {
    return this.pendingBytes + this.roundBytes;
  }

  push(data: Buffer): void {
    this.pending.push(data);
    this.pendingBytes += data.length;
    this.cut(false);
    if (this.idle) clearTimeout(this.idle);
    this.idle = setTimeout(() => {
      this.idle = undefined;
      this.cut(true);
    }, this.options.flushMs);
  }

  /** The input ended (or must be cut now): the remainder becomes the last chunk of a closed round. */
  flush(): void {
    this.stop();
    this.cut(true);
  }

  stop(): void {
    if (this.idle) clearTimeout(this.idle);
    this.idle = undefined;
  }

  private cut(force: boolean): void {
    const { chunkBytes, roundBytes } = this.options;
    // Whole chunks out of what has been read; on a flush, the remainder too.
    while (this.pendingBytes >= chunkBytes || (force && this.pendingBytes > 0)) {
      const all = this.pending.length === 1 ? this.pending[0]! : Buffer.concat(this.pending, this.pendingBytes);
      const size = Math.min(chunkBytes, all.length);
      this.round.push(all.subarray(0, size));
      this.roundBytes += size;
      const rest = all.subarray(size);
      this.pending = rest.length > 0 ? [rest] : [];
      this.pendingBytes = rest.length;
    }
    if (this.round.length > 0 && (force || this.roundBytes >= roundBytes)) {
      const chunks = this.round;
      const bytes = this.roundBytes;
      this.round = [];
      this.roundBytes = 0;
      this.options.onRound(chunks, bytes);
    }
  }
}
