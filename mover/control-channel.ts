/**
 * One control connection of a migration: messages in, messages out, with the
 * stream's backpressure honoured, and a clear end when the connection goes.
 * Once `keepAlive()` is called, a KEEPALIVE goes out whenever nothing else has for
 * the interval: an idle connection is never taken for a dead one (the sender's
 * STREAM gives up after 3 s of silence; a round can take longer than that to fetch
 * over a lossy WAN). KEEPALIVEs that arrive are swallowed here.
 */
import type { Duplex } from 'node:stream';
import { errorMessage } from '../shared/errors.js';
import { encodeMessageParts, MessageReader, MessageType, type ControlMessage } from './control-messages.js';

/** Default KEEPALIVE interval: six inside the sender's 3 s give-up. */
export const KEEPALIVE_MS = 500;

export class ControlChannel {
  private readonly reader = new MessageReader();
  private closedWith: string | undefined;
  private readonly closeListeners = new Set<(reason: string) => void>();
  private draining: Promise<void> | undefined;
  private lastSentAt = performance.now();
  private keepAliveTimer: NodeJS.Timeout | undefined;

  constructor(
    readonly stream: Duplex,
    onMessage: (message: ControlMessage) => void,
  ) {
    stream.on('data', (chunk: Buffer) => {
      let messages: ControlMessage[];
      try {
        messages = this.reader.push(chunk);
      } catch (error) {
        this.close(`protocol error: ${errorMessage(error)}`);
        return;
      }
      for (const message of messages) {
        if (this.closedWith) return;
        if (message.type !== MessageType.KEEPALIVE) onMessage(message);
      }
    });
    stream.on('error', (error) => this.close(error.message));
    stream.on('close', () => this.close('connection closed'));
    stream.on('end', () => this.close('connection ended by the peer'));
  }

  get closed(): boolean {
    return this.closedWith !== undefined;
  }

  onClose(listener: (reason: string) => void): void {
    if (this.closedWith) listener(this.closedWith);
    else this.closeListeners.add(listener);
  }

  /** Sends KEEPALIVE whenever nothing has gone out for `intervalMs`, until closed. */
  keepAlive(intervalMs = KEEPALIVE_MS): void {
    if (this.keepAliveTimer || this.closedWith) return;
    this.keepAliveTimer = setInterval(() => {
      if (performance.now() - this.lastSentAt < intervalMs * 0.9) return;
      // A connection too backed up to take it is not idle: nothing is lost by skipping one.
      if (this.stream.writableNeedDrain) return;
      this.send({ type: MessageType.KEEPALIVE }).catch(() => undefined);
    }, intervalMs);
  }

  /** Sends a message; resolves when the stream can take more (backpressure). */
  async send(message: ControlMessage): Promise<void> {
    if (this.closedWith) throw new Error(`control connection closed: ${this.closedWith}`);
    this.lastSentAt = performance.now();
    const parts = encodeMessageParts(message);
    let writable = true;
    if (parts.length === 1) writable = this.stream.write(parts[0]);
    else {
      // One writev for the header and the chunk behind it.
      this.stream.cork();
      for (const part of parts) writable = this.stream.write(part);
      process.nextTick(() => this.stream.uncork());
    }
    if (!writable) await this.drained();
  }

  /** One wait for 'drain' shared by every sender blocked on it (no listener per message). */
  private drained(): Promise<void> {
    this.draining ??= new Promise<void>((resolve) => {
      const done = (): void => {
        this.stream.off('drain', done);
        this.stream.off('close', done);
        this.draining = undefined;
        resolve();
      };
      this.stream.once('drain', done);
      this.stream.once('close', done);
    });
    return this.draining;
  }

  close(reason: string): void {
    if (this.closedWith) return;
    this.closedWith = reason;
    if (this.keepAliveTimer) clearInterval(this.keepAliveTimer);
    this.keepAliveTimer = undefined;
    this.stream.destroy();
    for (const listener of this.closeListeners) listener(reason);
    this.closeListeners.clear();
  }

  /** Ends gracefully (after everything written has gone out). */
  async end(): Promise<void> {
    if (this.closedWith) return;
    if (this.keepAliveTimer) clearInterval(this.keepAliveTimer);
    this.keepAliveTimer = undefined;
    await new Promise<void>((resolve) => this.stream.end(resolve));
  }
}
