/**
 * Cuts the migration stream QEMU writes into chunks, and chunks into rounds. A round
 * closes when it holds `roundBytes`, or when the input pauses for `flushMs` — QEMU's
 * last, stop-and-copy round must not wait for more input that will never come — or
 * when the input ends. Each byte read is copied once, into a chunk buffer from
 * `take` (a ChunkPool's: memory used before, see chunk-pool.ts); a flushed last chunk
 * is a view of the start of one.
 */
export interface RoundCutterOptions {
  chunkBytes: number;
  roundBytes: number;
  /** Close the open round when no input came for this long. */
  flushMs: number;
  /** A closed round: its chunks, in order, and their bytes. */
  onRound: (chunks: Buffer[], bytes: number) => void;
  /** A buffer of `chunkBytes` for the next chunk (default: a fresh one). */
  take?: () => Buffer;
}

export class RoundCutter {
  /** The chunk being filled, and how much of it is. */
  private current: Buffer | undefined;
  private filled = 0;
  private round: Buffer[] = [];
  private roundBytes = 0;
  private idle: NodeJS.Timeout | undefined;

  constructor(private readonly options: RoundCutterOptions) {}

  /** Bytes read but not yet in a closed round. */
  get buffered(): number {
    return this.filled + this.roundBytes;
  }

  push(data: Buffer): void {
    const { chunkBytes } = this.options;
    for (let at = 0; at < data.length; ) {
      this.current ??= this.options.take?.() ?? Buffer.allocUnsafeSlow(chunkBytes);
      const copied = data.copy(this.current, this.filled, at, Math.min(data.length, at + chunkBytes - this.filled));
      at += copied;
      this.filled += copied;
      if (this.filled === chunkBytes) {
        this.closeChunk();
        // A round closes as soon as it is full, not at the end of this read: one read may
        // hold several rounds' worth (the receiver bounds how far ahead a round may be).
        this.cut(false);
      }
    }
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

  private closeChunk(): void {
    const chunk = this.filled === this.options.chunkBytes ? this.current! : this.current!.subarray(0, this.filled);
    this.round.push(chunk);
    this.roundBytes += chunk.length;
    this.current = undefined;
    this.filled = 0;
  }

  private cut(force: boolean): void {
    const { roundBytes } = this.options;
    // On a flush, the chunk being filled closes too.
    if (force && this.filled > 0) this.closeChunk();
    if (this.round.length > 0 && (force || this.roundBytes >= roundBytes)) {
      const chunks = this.round;
      const bytes = this.roundBytes;
      this.round = [];
      this.roundBytes = 0;
      this.options.onRound(chunks, bytes);
    }
  }
}
