/**
 * The disk target's door. Anyone who can reach the disk SID can open a STREAM to it,
 * so each must earn its place: it is admitted only from an allowed source (`admit`),
 * must say what it is (OPEN_CONTROL or OPEN_NBD) within `openTimeoutMs`, and at most
 * `maxPending` may be waiting to do so — a newcomer pushes out the oldest, so idle
 * strangers cannot keep the real source out. Every refusal is counted.
 */
import type { Duplex } from 'node:stream';
import { errorMessage } from '../shared/errors.js';
import { Refusals } from '../shared/limits.js';
import type { Logger } from '../shared/logger.js';
import { DiskMessageReader, DiskMessageType, type DiskMessage } from './disk-messages.js';

export type Opening = Extract<DiskMessage, { type: typeof DiskMessageType.OPEN_CONTROL | typeof DiskMessageType.OPEN_NBD }>;

export interface DiskIntakeOptions {
  /** Why this stream may not reach the disk target (not an allowed source), or undefined to admit it. */
  admit?: (stream: Duplex) => string | undefined;
  /** A stream must say what it is within this long (default 5 s). */
  openTimeoutMs?: number;
  /** Streams waiting to say it (default 8). */
  maxPending?: number;
  /** A stream said what it is; `rest` is what it sent after its opening frame. */
  onOpen: (opening: Opening, stream: Duplex, rest: Buffer) => void;
  logger: Logger;
}

export class DiskIntake {
  private readonly pending = new Map<Duplex, () => void>();
  private closed = false;
  readonly refusals = new Refusals([
    ['disk-stream', 'forbidden'],
    ['disk-stream', 'cap'],
    ['disk-stream', 'timeout'],
    ['disk-stream', 'malformed'],
  ]);

  constructor(private readonly options: DiskIntakeOptions) {}

  private refuse(stream: Duplex, reason: 'forbidden' | 'cap' | 'timeout' | 'malformed', why: string): void {
    this.refusals.refuse('disk-stream', reason);
    this.options.logger.warn('disk-target.stream-refused', { reason: why });
    stream.destroy();
  }

  take(stream: Duplex): void {
    stream.on('error', () => undefined);
    if (this.closed) return void stream.destroy();
    const forbidden = this.options.admit?.(stream);
    if (forbidden !== undefined) return this.refuse(stream, 'forbidden', forbidden);
    if (this.pending.size >= (this.options.maxPending ?? 8)) {
      const [oldest, forget] = this.pending.entries().next().value!;
      forget();
      this.refuse(oldest, 'cap', `${this.pending.size + 1} streams had not said what they are: the oldest goes`);
    }
    const reader = new DiskMessageReader();
    const waitMs = this.options.openTimeoutMs ?? 5000;
    const forget = (): void => {
      clearTimeout(timer);
      stream.off('data', onData);
      stream.off('close', forget);
      this.pending.delete(stream);
    };
    const timer = setTimeout(() => {
      forget();
      this.refuse(stream, 'timeout', `nothing said within ${waitMs} ms`);
    }, waitMs);
    const onData = (chunk: Buffer): void => {
      let messages: DiskMessage[];
      try {
        messages = reader.push(chunk, 1);
      } catch (error) {
        forget();
        return this.refuse(stream, 'malformed', errorMessage(error));
      }
      const first = messages[0];
      if (!first) return;
      forget();
      stream.pause();
      if (first.type !== DiskMessageType.OPEN_CONTROL && first.type !== DiskMessageType.OPEN_NBD) {
        return this.refuse(stream, 'malformed', `message ${first.type} before OPEN`);
      }
      this.options.onOpen(first, stream, reader.rest());
    };
    this.pending.set(stream, forget);
    stream.on('data', onData);
    stream.once('close', forget);
  }

  /** Takes no more streams; those still to say what they are are dropped. */
  close(): void {
    this.closed = true;
    for (const [stream, forget] of [...this.pending]) {
      forget();
      stream.destroy();
    }
  }
}
