/**
 * Serves a node's application API on a Unix socket (mode 0600: only the node's own
 * user and root talk to the stack). The first frame of a connection decides what it
 * is: `attach` makes it the data socket of a STREAM connection (api-stream-sockets.ts),
 * anything else a control session (api-session.ts) that owns what it opens.
 *
 * What clients can make the node hold is bounded (api-limits.ts): connections,
 * frames being received (size, bytes, time), requests in flight, bytes queued toward
 * a slow client, STREAM connections waiting to be attached. Every refusal is counted
 * in the node's `xianet_refusals_total`.
 */
import { chmodSync, rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import type { Refusals } from '../../shared/limits.js';
import type { Logger } from '../../shared/logger.js';
import { silentLogger } from '../../shared/logger.js';
import type { Startable } from '../../shared/startable.js';
import { createNodeRefusals } from '../node-metrics.js';
import { FrameReader, PartialFrameBudget, type Refusal } from './api-frame-reader.js';
import { FrameDecoder } from './api-frames.js';
import { DEFAULT_API_LIMITS, type ApiLimits } from './api-limits.js';
import { ApiSession, sayRefusedAndClose } from './api-session.js';
import { PendingStreams, splice } from './api-stream-sockets.js';
import type { NodeApi } from './node-api.js';

export interface ApiServerOptions {
  logger?: Logger;
  /** Where refusals are counted (the node's, so they reach its /metrics); a private set if absent. */
  refusals?: Refusals;
  limits?: Partial<ApiLimits>;
  /** Monotonic ms (tests may drive the deadlines). */
  now?: () => number;
}

export class ApiServer implements Startable {
  readonly limits: ApiLimits;
  readonly refusals: Refusals;
  private server: Server | undefined;
  private readonly sessions = new Set<ApiSession>();
  private readonly streams: PendingStreams;
  /** Every accepted socket: undecided, control or data (the connection cap counts them all). */
  private readonly sockets = new Set<Socket>();
  private readonly readers = new Set<FrameReader>();
  private readonly budget: PartialFrameBudget;
  private readonly logger: Logger;
  private readonly now: () => number;
  private sweeper: NodeJS.Timeout | undefined;

  constructor(
    private readonly api: NodeApi,
    readonly path: string,
    options: ApiServerOptions = {},
  ) {
    this.logger = options.logger ?? silentLogger();
    this.refusals = options.refusals ?? createNodeRefusals();
    this.limits = { ...DEFAULT_API_LIMITS, ...options.limits };
    this.now = options.now ?? (() => performance.now());
    this.budget = new PartialFrameBudget(this.limits.partialBytesTotal);
    this.streams = new PendingStreams(this.limits, this.refusals);
  }

  /** Connections open now, and bytes of frames being received over all of them. */
  get load(): { connections: number; sessions: number; partialBytes: number; pendingStreams: number } {
    return { connections: this.sockets.size, sessions: this.sessions.size, partialBytes: this.budget.bytes, pendingStreams: this.streams.size };
  }

  async start(): Promise<void> {
    if (this.server) return;
    rmSync(this.path, { force: true });
    // Half-open: a STREAM data socket whose writer ended may still carry the reply.
    const server = createServer({ allowHalfOpen: true }, (socket) => this.accept(socket));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.path, () => {
        server.off('error', reject);
        resolve();
      });
    });
    chmodSync(this.path, 0o600);
    this.server = server;
    const { frameIdleMs, frameCompletionMs } = this.limits;
    const every = Math.min(1000, Math.max(5, Math.min(frameIdleMs, frameCompletionMs) / 4));
    let last = this.now();
    this.sweeper = setInterval(() => {
      const t = this.now();
      const late = t - last > Math.max(2 * every, 1000);
      last = t;
      // A late sweep means this process stalled (GC, a busy loop, CPU starvation): the
      // bytes clients sent meanwhile are still unread, so no frame is judged this round.
      if (late) return;
      for (const reader of this.readers) reader.check(t);
    }, every);
  }

  private accept(socket: Socket): void {
    socket.on('error', () => socket.destroy());
    if (this.sockets.size >= this.limits.maxConnections) {
      this.refusals.refuse('api-connection', 'cap');
      this.logger.warn('api.connection-refused', { reason: 'cap', connections: this.sockets.size });
      sayRefusedAndClose(socket, `the node serves at most ${this.limits.maxConnections} API connections at once`);
      return;
    }
    this.sockets.add(socket);
    const decoder = new FrameDecoder(this.limits.maxFrameBytes);
    let session: ApiSession | undefined;
    const onRefused = (refusal: Refusal): void => {
      if (session) {
        session.refuse(refusal);
        return;
      }
      this.refusals.refuse(refusal.resource, refusal.reason);
      this.logger.warn('api.client-refused', { resource: refusal.resource, reason: refusal.reason, detail: refusal.message });
      sayRefusedAndClose(socket, refusal.message);
    };
    const reader = new FrameReader(decoder, this.budget, this.limits, this.now, onRefused);
    this.readers.add(reader);
    socket.once('close', () => {
      this.sockets.delete(socket);
      reader.release();
      this.readers.delete(reader);
    });
    // Half-open sockets do not close by themselves: a client that ends before its first frame is done.
    const onEnd = (): void => void socket.destroy();
    socket.once('end', onEnd);
    const onFirst = (chunk: Buffer): void => {
      // Only the first frame: on a data socket, raw stream bytes may follow it.
      const result = reader.push(chunk, 1);
      if (!result) return;
      for (let i = 0; i < result.malformed.length; i++) this.refusals.refuse('api-frame', 'malformed');
      const first = result.frames[0];
      if (!first) return;
      socket.off('data', onFirst);
      socket.off('end', onEnd);
      if (first.header['op'] === 'attach') {
        reader.release();
        this.readers.delete(reader);
        const connection = this.streams.take(first.header['streamId'], first.header['token']);
        if (!connection) {
          // Told why, as every refusal is: a client that sent `attach` first by mistake
          // (its connection is a data socket, not a session) must not see a bare close.
          this.refusals.refuse('api-stream-token', 'forbidden');
          sayRefusedAndClose(socket, 'attach: no STREAM connection waits for that streamId and token (a connection whose first frame is attach is a data socket)');
          return;
        }
        splice(socket, connection, decoder.rest());
        return;
      }
      const opened = new ApiSession(socket, this.api, reader, this.streams, this.limits, this.refusals, this.logger);
      session = opened;
      this.sessions.add(opened);
      socket.once('close', () => this.sessions.delete(opened));
      opened.take(result);
      opened.take(reader.push(Buffer.alloc(0)));
    };
    socket.on('data', onFirst);
  }

  async stop(): Promise<void> {
    const server = this.server;
    if (!server) return;
    this.server = undefined;
    if (this.sweeper) clearInterval(this.sweeper);
    this.sweeper = undefined;
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    this.streams.clear();
    for (const session of [...this.sessions]) await session.close();
    this.sessions.clear();
    for (const socket of this.sockets) socket.destroy();
    this.sockets.clear();
    for (const reader of this.readers) reader.release();
    this.readers.clear();
    await closed;
    rmSync(this.path, { force: true });
  }
}
