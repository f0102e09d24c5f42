/**
 * One control connection of a migration: messages in, messages out, with the
 * stream's backpressure honoured, and a clear end when the connection goes.
 */
import type { Duplex } from 'node:stream';
import { errorMessage } from '../shared/errors.js';
import { encodeMessageParts, MessageReader, type ControlMessage } from './control-messages.js';

export class ControlChannel {
  private readonly reader = new MessageReader();
  private closedWith: string | undefined;
  private readonly closeListeners = new Set<(reason: string) => void>();
  private draining: Promise<void> | undefined;

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
        onMessage(message);
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

  /** Sends a message; resolves when the stream can take more (backpressure). */
  async send(message: ControlMessage): Promise<void> {
    if (this.closedWith) throw new Error(`control connection closed: ${this.closedWith}`);
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
    this.stream.destroy();
    for (const listener of this.closeListeners) listener(reason);
    this.closeListeners.clear();
  }

  /** Ends gracefully (after everything written has gone out). */
  async end(): Promise<void> {
    if (this.closedWith) return;
    await new Promise<void>((resolve) => this.stream.end(resolve));
  }
}
