/**
 * A client of the node's API socket that sends whatever it is told, frames or raw
 * bytes, and collects what comes back: for tests of what a hostile or broken
 * application can do. (The real client, NodeClient, cannot send malformed requests.)
 */
import { connect, type Socket } from 'node:net';
import { encodeFrame, FrameDecoder, type Frame, type Header } from '../../xianet/api/api-frames.js';

export class RawApiClient {
  readonly frames: Frame[] = [];
  private readonly decoder = new FrameDecoder();
  private readonly waiters = new Set<() => void>();
  closed = false;

  private constructor(readonly socket: Socket) {
    socket.on('data', (chunk: Buffer) => {
      this.frames.push(...this.decoder.push(chunk).frames);
      for (const waiter of this.waiters) waiter();
    });
    socket.on('error', () => undefined);
    socket.on('close', () => {
      this.closed = true;
      for (const waiter of this.waiters) waiter();
    });
  }

  static async connect(path: string, options: { read?: boolean } = {}): Promise<RawApiClient> {
    const socket = connect(path);
    const client = new RawApiClient(socket);
    if (options.read === false) socket.pause();
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', () => resolve());
      socket.once('error', reject);
    });
    return client;
  }

  send(header: Header, body?: Uint8Array): boolean {
    return this.socket.write(encodeFrame(header, body));
  }

  write(bytes: Buffer): boolean {
    return this.socket.write(bytes);
  }

  /** Resolves when `condition` holds (checked at each frame and at close); rejects after `timeoutMs`. */
  until(condition: () => boolean, timeoutMs: number, what: string): Promise<void> {
    return new Promise((resolve, reject) => {
      const check = (): void => {
        if (!condition()) return;
        cleanup();
        resolve();
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`));
      }, timeoutMs);
      const cleanup = (): void => {
        clearTimeout(timer);
        this.waiters.delete(check);
      };
      this.waiters.add(check);
      check();
    });
  }

  reply(id: number): Header | undefined {
    return this.frames.find((f) => f.header['id'] === id)?.header;
  }

  /** Sends a request and waits for its answer (ok or not). */
  async ask(header: Header, timeoutMs = 10_000): Promise<Header> {
    const id = header['id'] as number;
    this.send(header);
    await this.until(() => this.reply(id) !== undefined || this.closed, timeoutMs, `the answer to request ${id} (${String(header['op'])})`);
    const reply = this.reply(id);
    if (!reply) throw new Error(`the node closed the connection instead of answering request ${id}`);
    return reply;
  }

  close(): void {
    this.socket.destroy();
  }
}
