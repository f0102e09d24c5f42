/**
 * The door of a service that takes STREAMs which open with a frame saying what they are
 * (the disk target's, the libvirt proxy target's). Anyone who can reach the SID can open
 * a STREAM to it, so each must earn its place: it is admitted only from an allowed source
 * (`admit`), must say what it is within `openTimeoutMs`, and at most `maxPending` may be
 * waiting to do so — a newcomer pushes out the oldest, so idle strangers cannot keep the
 * real source out. Every refusal is counted, as `<resource>{forbidden|cap|timeout|malformed}`.
 */
import type { Duplex } from 'node:stream';
import { errorMessage } from '../shared/errors.js';
import { Refusals } from '../shared/limits.js';
import type { Logger } from '../shared/logger.js';

/** A protocol's frame reader: messages out of a byte stream, and the bytes after them. */
export interface FrameReader<M> {
  push(chunk: Buffer, limit?: number): M[];
  rest(): Buffer;
}

export type IntakeRefusal = 'forbidden' | 'cap' | 'timeout' | 'malformed';

export interface StreamIntakeOptions<M, O extends M> {
  /** The refusals' resource label (`disk-stream`). */
  resource: string;
  /** The log event of a refusal (`disk-target.stream-refused`). */
  event: string;
  reader: () => FrameReader<M>;
  /** Whether a stream's first message is one it may open with. */
  isOpening: (message: M) => message is O;
  /** A message's name, for the refusal of a stream that opens with another. */
  nameOf: (message: M) => string;
  /** Why this stream may not reach the service (not an allowed source), or undefined to admit it. */
  admit?: (stream: Duplex) => string | undefined;
  /** A stream must say what it is within this long (default 5 s). */
  openTimeoutMs?: number;
  /** Streams waiting to say it (default 8). */
  maxPending?: number;
  /** A stream said what it is; `rest` is what it sent after its opening frame. */
  onOpen: (opening: O, stream: Duplex, rest: Buffer) => void;
  logger: Logger;
}

export class StreamIntake<M, O extends M> {
  private readonly pending = new Map<Duplex, () => void>();
  private closed = false;
  readonly refusals: Refusals;

  constructor(private readonly options: StreamIntakeOptions<M, O>) {
    this.refusals = new Refusals((['forbidden', 'cap', 'timeout', 'malformed'] as const).map((reason) => [options.resource, reason]));
  }

  private refuse(stream: Duplex, reason: IntakeRefusal, why: string): void {
    this.refusals.refuse(this.options.resource, reason);
    this.options.logger.warn(this.options.event, { reason: why });
    stream.destroy();
  }

  /** Counts a refusal decided after the opening (by the service itself). */
  count(reason: IntakeRefusal): void {
    this.refusals.refuse(this.options.resource, reason);
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
    const reader = this.options.reader();
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
      let messages: M[];
      try {
        messages = reader.push(chunk, 1);
      } catch (error) {
        forget();
        return this.refuse(stream, 'malformed', errorMessage(error));
      }
      const first = messages[0];
      if (first === undefined) return;
      forget();
      stream.pause();
      if (!this.options.isOpening(first)) return this.refuse(stream, 'malformed', `message ${this.options.nameOf(first)} before OPEN`);
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
