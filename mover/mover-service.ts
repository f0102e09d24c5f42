/**
 * The mover inside a host's node: `xmig send --via-node` and `xmig recv --via-node`
 * hand the migration stream to it on a Unix socket beside the API's (mode 0600, like
 * the API's), and it runs the migration on the node's stack directly
 * (node-migration.ts), so a chunk's bytes never cross the application API in framed
 * messages and the two commands only pipe bytes. The wire: mover-socket-protocol.ts.
 *
 * Bounded like every door to the node: at most `maxConnections` connections at once
 * (migrations and requests still being read; more are refused), a request line must
 * come within `requestTimeoutMs` and pass its schema. Every refusal is counted in
 * `xmig_mover_service_refusals_total`; migrations by outcome in
 * `xmig_mover_service_migrations_total`, those running in `xmig_mover_service_running`.
 *
 * stop() ends every migration still running (both clients hear of it: QEMU on the
 * source fails the migration and the VM runs on there), waits for each to let go of
 * what it held, and closes the socket.
 */
import { createServer, type Server, type Socket } from 'node:net';
import { Counter, Gauge, type Registry } from 'prom-client';
import { errorMessage, XmigError } from '../shared/errors.js';
import { Refusals, type RefusalReason } from '../shared/limits.js';
import { silentLogger, type Logger } from '../shared/logger.js';
import type { Startable } from '../shared/startable.js';
import type { NodeApi } from '../xianet/api/node-api.js';
import { listenUnixSocket, type SocketFile } from '../xianet/unix-socket-file.js';
import { parseMoverRequest } from './mover-request.js';
import { MAX_REQUEST_BYTES, statusFrame, type MoverRequest } from './mover-socket-protocol.js';
import { recvInNode, sendInNode, type NodeMigration } from './node-migration.js';

export interface MoverServiceOptions {
  api: NodeApi;
  /** The Unix socket to listen on. */
  path: string;
  logger?: Logger;
  /** Where its metrics go (the node's registry). */
  registry?: Registry;
  /** Connections at once, migrations included (default 8); more are refused. */
  maxConnections?: number;
  /** A connection must send its request line within this long (default 5 s). */
  requestTimeoutMs?: number;
  /** How long stop() waits for migrations to let go before it closes their sockets anyway (default 5 s). */
  stopTimeoutMs?: number;
}

const OPS = ['send', 'recv'] as const;

export class MoverService implements Startable {
  private server: Server | undefined;
  private file: SocketFile | undefined;
  private readonly sockets = new Set<Socket>();
  private readonly migrations = new Set<NodeMigration>();
  private readonly logger: Logger;
  private readonly maxConnections: number;
  private readonly requestTimeoutMs: number;
  private readonly outcomes = new Map<string, number>();
  readonly refusals = new Refusals([
    ['mover-connection', 'cap'],
    ['mover-request', 'malformed'],
    ['mover-request', 'timeout'],
  ]);

  constructor(private readonly options: MoverServiceOptions) {
    this.logger = (options.logger ?? silentLogger()).child({ component: 'mover', via: 'node' });
    this.maxConnections = options.maxConnections ?? 8;
    this.requestTimeoutMs = options.requestTimeoutMs ?? 5000;
    for (const op of OPS) for (const result of ['ok', 'failed']) this.outcomes.set(`${op}/${result}`, 0);
    if (options.registry) this.register(options.registry);
  }

  get path(): string {
    return this.options.path;
  }

  /** Connections open now and migrations running. */
  get load(): { connections: number; migrations: number } {
    return { connections: this.sockets.size, migrations: this.migrations.size };
  }

  async start(): Promise<void> {
    if (this.server) return;
    // Half-open: a send client ends its side when QEMU's stream ends and still waits for the result.
    const server = createServer({ allowHalfOpen: true }, (socket) => this.accept(socket));
    this.file = await listenUnixSocket(server, this.options.path, { mode: 0o600 });
    this.server = server;
    this.logger.info('mover.listening', { path: this.options.path });
  }

  async stop(): Promise<void> {
    const server = this.server;
    if (!server) return;
    this.server = undefined;
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    const running = [...this.migrations];
    for (const migration of running) migration.abort(new XmigError('ERR_MIGRATION', 'the node is stopping'));
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([Promise.all(running.map((m) => m.done)), new Promise((resolve) => (timer = setTimeout(resolve, this.options.stopTimeoutMs ?? 5000)))]);
    clearTimeout(timer);
    for (const socket of this.sockets) socket.destroy();
    await closed;
    this.file?.remove();
    this.file = undefined;
  }

  private accept(socket: Socket): void {
    socket.on('error', () => socket.destroy());
    if (!this.server || this.sockets.size >= this.maxConnections) {
      this.refuse(socket, 'mover-connection', 'cap', `${this.sockets.size} connections already (at most ${this.maxConnections})`);
      return;
    }
    this.sockets.add(socket);
    socket.once('close', () => this.sockets.delete(socket));
    const timer = setTimeout(() => {
      socket.off('data', onData);
      this.refuse(socket, 'mover-request', 'timeout', `no request line within ${this.requestTimeoutMs} ms`);
    }, this.requestTimeoutMs);
    socket.once('close', () => clearTimeout(timer));
    const pieces: Buffer[] = [];
    let have = 0;
    const onData = (data: Buffer): void => {
      const newline = data.indexOf(0x0a);
      if (newline < 0) {
        pieces.push(data);
        have += data.length;
        if (have > MAX_REQUEST_BYTES) {
          clearTimeout(timer);
          socket.off('data', onData);
          this.refuse(socket, 'mover-request', 'malformed', `request line longer than ${MAX_REQUEST_BYTES} bytes`);
        }
        return;
      }
      clearTimeout(timer);
      socket.off('data', onData);
      socket.pause();
      pieces.push(data.subarray(0, newline));
      let request: MoverRequest;
      try {
        request = parseMoverRequest(Buffer.concat(pieces));
      } catch (error) {
        this.refuse(socket, 'mover-request', 'malformed', errorMessage(error));
        return;
      }
      this.run(socket, request, data.subarray(newline + 1));
    };
    socket.on('data', onData);
  }

  private run(socket: Socket, request: MoverRequest, rest: Buffer): void {
    const context = { api: this.options.api, logger: this.logger };
    const migration = request.op === 'send' ? sendInNode(socket, request, rest, context) : recvInNode(socket, request, rest, context);
    this.migrations.add(migration);
    this.logger.info('mover.started', { op: request.op });
    void migration.done.then((outcome) => {
      this.migrations.delete(migration);
      const key = `${request.op}/${outcome.ok ? 'ok' : 'failed'}`;
      this.outcomes.set(key, (this.outcomes.get(key) ?? 0) + 1);
      if (outcome.ok) this.logger.info('mover.finished', { op: request.op, bytes: outcome.bytes });
      else this.logger.warn('mover.failed', { op: request.op, bytes: outcome.bytes, reason: outcome.error ?? 'unknown' });
    });
  }

  private refuse(socket: Socket, resource: string, reason: RefusalReason, message: string): void {
    this.refusals.refuse(resource, reason);
    this.logger.warn('mover.refused', { resource, reason, detail: message });
    if (!socket.destroyed) socket.end(statusFrame({ ok: false, error: message }));
    socket.destroySoon();
  }

  private register(registry: Registry): void {
    this.refusals.register(registry, 'xmig_mover_service_refusals_total', "Connections and requests the node's mover socket refused, by resource and reason");
    const outcomes = this.outcomes;
    // Every op/result series is in `outcomes` from the start (at 0).
    new Counter({
      name: 'xmig_mover_service_migrations_total',
      help: 'Migrations the node ran for xmig send|recv --via-node, by op and result',
      labelNames: ['op', 'result'] as const,
      registers: [registry],
      collect() {
        this.reset();
        for (const [key, value] of outcomes) {
          const [op, result] = key.split('/') as [string, string];
          this.inc({ op, result }, value);
        }
      },
    });
    const running = this.migrations;
    new Gauge({
      name: 'xmig_mover_service_running',
      help: 'Migrations running in the node now, by op',
      labelNames: ['op'] as const,
      registers: [registry],
      collect() {
        for (const op of OPS) this.set({ op }, [...running].filter((m) => m.op === op).length);
      },
    });
  }
}
