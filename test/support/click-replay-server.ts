/**
 * A control-port server that knows nothing but a recorded transcript of a real
 * xia-core Click router (click-fixtures.ts): each connection gets the recorded
 * greeting, then for the recorded requests, in their order and byte for byte, the
 * recorded replies (closing where the router closed). Anything else it was sent is a
 * mismatch: recorded in `mismatches` and the connection is dropped. A client that
 * works against it works against the bytes a real router says.
 *
 * Replies may be written in small pieces (`pieces`), so a client's parser meets a
 * reply split at any byte, as TCP may deliver it.
 */
import { createServer, type Server, type Socket } from 'node:net';
import type { Exchange, Transcript } from './click-fixtures.js';

export interface ReplayServerOptions {
  /** Write each reply in pieces of 1..pieces bytes (default: whole). */
  pieces?: number;
  /** Deterministic piece sizes. */
  seed?: number;
}

export class ClickReplayServer {
  readonly mismatches: string[] = [];
  /** Exchanges answered, over all connections. */
  answered = 0;
  private server: Server | undefined;
  private readonly sockets = new Set<Socket>();
  private random: number;

  constructor(
    readonly transcript: { banner: Buffer; exchanges: Exchange[] },
    private readonly options: ReplayServerOptions = {},
  ) {
    this.random = options.seed ?? 1;
  }

  /** A transcript without the exchanges `drop` names (by title). */
  static without(transcript: Transcript, drop: (exchange: Exchange) => boolean): { banner: Buffer; exchanges: Exchange[] } {
    return { banner: transcript.banner, exchanges: transcript.exchanges.filter((e) => !drop(e)) };
  }

  async listen(path: string): Promise<void> {
    const server = createServer((socket) => this.serve(socket));
    await new Promise<void>((resolve) => server.listen(path, resolve));
    this.server = server;
  }

  async close(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    const server = this.server;
    this.server = undefined;
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  private nextPiece(): number {
    // xorshift32: the same pieces every run for a seed.
    let x = this.random;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    this.random = x >>> 0;
    return 1 + (this.random % (this.options.pieces ?? 1));
  }

  private async write(socket: Socket, bytes: Buffer): Promise<void> {
    if (!this.options.pieces) {
      socket.write(bytes);
      return;
    }
    for (let at = 0; at < bytes.length; ) {
      const size = this.nextPiece();
      socket.write(bytes.subarray(at, at + size));
      at += size;
      await new Promise((resolve) => setImmediate(resolve));
    }
  }

  private serve(socket: Socket): void {
    this.sockets.add(socket);
    socket.on('close', () => this.sockets.delete(socket));
    socket.on('error', () => undefined);
    const { banner, exchanges } = this.transcript;
    let step = 0;
    let received = Buffer.alloc(0);
    let writing: Promise<void> = this.write(socket, banner);
    socket.on('data', (chunk: Buffer) => {
      received = Buffer.concat([received, chunk]);
      for (;;) {
        const exchange = exchanges[step];
        if (!exchange) {
          this.mismatches.push(`after the last recorded exchange, sent ${JSON.stringify(received.toString('latin1'))}`);
          socket.destroy();
          return;
        }
        const expected = exchange.request;
        const prefix = received.subarray(0, expected.length);
        if (!expected.subarray(0, prefix.length).equals(prefix)) {
          this.mismatches.push(
            `${exchange.title}: expected ${JSON.stringify(expected.toString('latin1'))}, sent ${JSON.stringify(received.toString('latin1'))}`,
          );
          socket.destroy();
          return;
        }
        if (received.length < expected.length) return;
        received = received.subarray(expected.length);
        step++;
        this.answered++;
        writing = writing.then(async () => {
          await this.write(socket, exchange.reply);
          if (exchange.closed) socket.end();
        });
        if (exchange.closed) return;
      }
    });
  }
}
