/**
 * A disk control stream: disk messages in and out over a Duplex (a STREAM), taken
 * one at a time by whoever waits for the next (`next`) or handed to a listener as
 * they come, and a clear end with its reason when the connection goes.
 */
import type { Duplex } from 'node:stream';
import { XmigError, errorMessage } from '../shared/errors.js';
import { DiskMessageReader, encodeDiskMessage, diskMessageName, type DiskMessage } from './disk-messages.js';

/** Most messages held for a `next()` nobody has called yet: a peer cannot make us buffer more. */
const MAX_QUEUED = 16;

export class DiskChannel {
  private readonly reader = new DiskMessageReader();
  private readonly queue: DiskMessage[] = [];
  private waiter: { resolve: (m: DiskMessage) => void; reject: (e: Error) => void } | undefined;
  private listener: ((message: DiskMessage) => void) | undefined;
  private closedWith: string | undefined;
  private readonly closeListeners = new Set<(reason: string) => void>();

  /** `rest`: bytes already read from `stream` behind its opening frame. */
  constructor(
    readonly stream: Duplex,
    rest?: Buffer,
  ) {
    stream.on('data', (chunk: Buffer) => this.onData(chunk));
    stream.on('error', (error) => this.close(error.message));
    stream.on('close', () => this.close('connection closed'));
    stream.on('end', () => this.close('connection ended by the peer'));
    // A stream the intake paused after its opening frame flows again from here.
    stream.resume();
    if (rest?.length) queueMicrotask(() => this.onData(rest));
  }

  private onData(chunk: Buffer): void {
    if (this.closedWith) return;
    let messages: DiskMessage[];
    try {
      messages = this.reader.push(chunk);
    } catch (error) {
      this.close(`protocol error: ${errorMessage(error)}`);
      return;
    }
    for (const message of messages) {
      if (this.closedWith) return;
      if (this.listener) this.listener(message);
      else if (this.waiter) {
        const waiter = this.waiter;
        this.waiter = undefined;
        waiter.resolve(message);
      } else if (this.queue.length < MAX_QUEUED) this.queue.push(message);
      else this.close(`more than ${MAX_QUEUED} disk messages unread`);
    }
  }

  get closed(): boolean {
    return this.closedWith !== undefined;
  }

  get closeReason(): string | undefined {
    return this.closedWith;
  }

  /** Every message from now on goes to `listener` (those queued first). */
  onMessage(listener: (message: DiskMessage) => void): void {
    this.listener = listener;
    for (const message of this.queue.splice(0)) listener(message);
  }

  onClose(listener: (reason: string) => void): void {
    if (this.closedWith) listener(this.closedWith);
    else this.closeListeners.add(listener);
  }

  /** The next message, within `timeoutMs`; rejects if the connection goes first. */
  next(timeoutMs: number, what: string): Promise<DiskMessage> {
    const queued = this.queue.shift();
    if (queued) return Promise.resolve(queued);
    if (this.closedWith) return Promise.reject(new XmigError('ERR_CONNECTION', `disk control connection closed while waiting for ${what}: ${this.closedWith}`));
    return new Promise<DiskMessage>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiter = undefined;
        reject(new XmigError('ERR_TIMEOUT', `no ${what} from the disk target within ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiter = {
        resolve: (m) => {
          clearTimeout(timer);
          resolve(m);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      };
    });
  }

  /** Resolves once the message is handed to the stream. */
  send(message: DiskMessage): Promise<void> {
    if (this.closedWith) return Promise.reject(new XmigError('ERR_CONNECTION', `disk control connection closed (${this.closedWith}): cannot send ${diskMessageName(message.type)}`));
    return new Promise<void>((resolve, reject) => {
      this.stream.write(encodeDiskMessage(message), (error) => (error ? reject(error) : resolve()));
    });
  }

  close(reason: string): void {
    if (this.closedWith) return;
    this.closedWith = reason;
    this.stream.destroy();
    const waiter = this.waiter;
    this.waiter = undefined;
    waiter?.reject(new XmigError('ERR_CONNECTION', `disk control connection closed: ${reason}`));
    for (const listener of this.closeListeners) listener(reason);
    this.closeListeners.clear();
  }

  /** Ends gracefully, after what was written has gone out. */
  async end(): Promise<void> {
    if (this.closedWith) return;
    await new Promise<void>((resolve) => this.stream.end(resolve));
  }
}
