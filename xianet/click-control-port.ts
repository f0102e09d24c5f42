/**
 * The node's control port: Click's ControlSocket protocol with xia-core's element and
 * handler names (click-handlers.ts), replies as Click gives them
 * (click-control-session.ts), so whatever drives an xia-core router's tables drives
 * this node's too.
 *
 * Who may use it:
 *  - a Unix socket (the default): its file's mode (0660) and group decide who can
 *    connect at all; those who can may read and write (unless `readOnly`);
 *  - TCP, only if configured and only on loopback (any local user can reach a
 *    loopback port, so there a connection may only read until it has written the
 *    contents of `tokenFile` to the `auth` handler; without a tokenFile, TCP is
 *    read-only). A non-loopback address is a configuration error.
 *
 * Bounded whatever clients do (refusals counted in xianet_control_refusals_total):
 *  - at most `maxConnections`; a new one past the cap closes the one quiet longest;
 *  - a connection with no complete command for `idleTimeoutMs`, or a command not
 *    complete within `commandTimeoutMs` of its first byte, is closed;
 *  - a line over `maxLineBytes` or data over `maxDataBytes` is skipped, not kept
 *    (a write is answered 521 as Click answers data over LARGEST_HANDLER_WRITE);
 *  - what all connections hold is under `maxBufferedBytes`: past it, the connection
 *    holding the most is closed;
 *  - a client that does not read its replies stops being read (backpressure).
 */
import { randomBytes } from 'node:crypto';
import { chownSync, readFileSync, writeFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { Gauge, type Registry } from 'prom-client';
import { ConfigError, errorMessage } from '../shared/errors.js';
import { Refusals, TokenBucket, type RefusalReason } from '../shared/limits.js';
import { silentLogger, type Logger } from '../shared/logger.js';
import type { Startable } from '../shared/startable.js';
import { ClickCommandReader } from './click-command-reader.js';
import { ClickControlSession, CONTROL_SOCKET_GREETING, LARGEST_HANDLER_WRITE } from './click-control-session.js';
import { ClickNamespace } from './click-handlers.js';
import type { XiaNode } from './node.js';
import { listenUnixSocket, resolveGroup, type SocketFile } from './unix-socket-file.js';

export { ClickStatus, CONTROL_SOCKET_GREETING } from './click-control-session.js';

export const DEFAULT_CONTROL_SOCKET = '/run/xmig/control.sock';

export interface UnixControlListen {
  path: string;
  /** Socket file mode (default 0660; bits for others are refused). */
  mode?: number;
  /** The group that may connect (name or gid; default the daemon's). */
  group?: string | number;
  /** Every write refused (Click's READONLY). */
  readOnly?: boolean;
}

export interface TcpControlListen {
  /** A loopback address (default 127.0.0.1). */
  host?: string;
  port: number;
  /** Writes need this file's contents written to `auth` first; created (0640) if missing. Absent: read-only. */
  tokenFile?: string;
  /** The token file's group, if it is created. */
  group?: string | number;
}

export type ControlListen = UnixControlListen | TcpControlListen;

export interface ControlLimits {
  maxConnections: number;
  idleTimeoutMs: number;
  commandTimeoutMs: number;
  maxLineBytes: number;
  maxDataBytes: number;
  maxBufferedBytes: number;
  maxOutputBytes: number;
}

export const DEFAULT_CONTROL_LIMITS: ControlLimits = {
  maxConnections: 64,
  idleTimeoutMs: 60_000,
  commandTimeoutMs: 10_000,
  maxLineBytes: LARGEST_HANDLER_WRITE + 1024,
  maxDataBytes: LARGEST_HANDLER_WRITE,
  maxBufferedBytes: 4 * 1024 * 1024,
  maxOutputBytes: 1024 * 1024,
};

export interface ClickControlPortOptions {
  limits?: Partial<ControlLimits>;
  logger?: Logger;
  /** Where the port's metrics go (the node's registry). */
  registry?: Registry;
}

const REFUSALS: ReadonlyArray<readonly [string, RefusalReason]> = [
  ['connection', 'cap'],
  ['connection', 'timeout'],
  ['connection', 'budget'],
  ['line', 'budget'],
  ['data', 'budget'],
  ['write', 'forbidden'],
];

/** 127.0.0.0/8, ::1 (and its IPv4-mapped forms), or "localhost". */
export function isLoopbackHost(host: string): boolean {
  if (host === 'localhost') return true;
  const bare = host.replace(/^\[|\]$/g, '');
  if (isIP(bare) === 4) return bare.startsWith('127.');
  if (isIP(bare) === 6) {
    const lower = bare.toLowerCase();
    return lower === '::1' || lower === '0:0:0:0:0:0:0:1' || /^::ffff:127\./.test(lower);
  }
  return false;
}

export function isUnixListen(listen: ControlListen): listen is UnixControlListen {
  return 'path' in listen;
}

/** The token of a TCP control port: read, or made (32 random bytes, hex) if the file is missing. */
export function loadOrCreateToken(file: string, group?: string | number): Buffer {
  try {
    const token = readFileSync(file, 'utf8').trim();
    if (token.length < 16) throw new ConfigError(`control token ${file} is too short (at least 16 characters)`);
    return Buffer.from(token, 'latin1');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') {
      if (error instanceof ConfigError) throw error;
      throw new ConfigError(`cannot read control token ${file}: ${errorMessage(error)}`, { cause: error });
    }
  }
  const token = randomBytes(32).toString('hex');
  try {
    writeFileSync(file, `${token}\n`, { mode: 0o640, flag: 'wx' });
    if (group !== undefined) chownSync(file, -1, resolveGroup(group));
  } catch (error) {
    throw new ConfigError(`cannot create control token ${file}: ${errorMessage(error)}`, { cause: error });
  }
  return Buffer.from(token, 'latin1');
}

interface Connection {
  readonly socket: Socket;
  readonly reader: ClickCommandReader;
  readonly session: ClickControlSession;
  /** When the last command completed (or the connection opened), monotonic ms. */
  lastActive: number;
  /** When the request now in progress started, if one is. */
  requestSince: number | undefined;
  /** Bytes this connection's reader held at the last count. */
  counted: number;
  ended: boolean;
  quitting: boolean;
  /** Paused until the client reads what it was sent. */
  draining: boolean;
}

const now = (): number => performance.now();

export class ClickControlPort implements Startable {
  readonly limits: ControlLimits;
  readonly refusals = new Refusals(REFUSALS);
  private readonly logger: Logger;
  private readonly namespace: ClickNamespace;
  private server: Server | undefined;
  private socketFile: SocketFile | undefined;
  private token: Buffer | undefined;
  private listenAddress: string | undefined;
  private readonly connections = new Set<Connection>();
  private buffered = 0;
  private sweeper: NodeJS.Timeout | undefined;
  private starting: Promise<void> | undefined;
  private readonly warnings = new TokenBucket(1, 5);
  private readonly listen: ControlListen;

  constructor(node: XiaNode, listen: ControlListen, options: ClickControlPortOptions = {}) {
    if (!isUnixListen(listen)) {
      const host = listen.host ?? '127.0.0.1';
      if (!isLoopbackHost(host)) {
        throw new ConfigError(
          `control port host "${host}" is not a loopback address: on TCP the control port listens on loopback only ` +
            '(127.0.0.1, ::1); to let other users in, give a Unix socket a group',
        );
      }
      if (!Number.isInteger(listen.port) || listen.port < 0 || listen.port > 65535) throw new ConfigError(`control port ${listen.port} is not a TCP port`);
    }
    this.listen = listen;
    this.limits = { ...DEFAULT_CONTROL_LIMITS, ...options.limits };
    this.logger = (options.logger ?? silentLogger()).child({ component: 'control' });
    this.namespace = new ClickNamespace(node);
    if (options.registry) this.registerMetrics(options.registry);
  }

  /** "host:port" or the socket path, once started. */
  get address(): string | undefined {
    return this.listenAddress;
  }

  /** The TCP port, once started on TCP. */
  get tcpPort(): number | undefined {
    return this.server && !isUnixListen(this.listen) ? (this.server.address() as AddressInfo).port : undefined;
  }

  /** Open connections now. */
  get connectionCount(): number {
    return this.connections.size;
  }

  /** Bytes all connections hold for requests not yet complete. */
  get bufferedBytes(): number {
    return this.buffered;
  }

  /** Reply bytes waiting to be taken by their clients, all connections. */
  get pendingOutputBytes(): number {
    let bytes = 0;
    for (const connection of this.connections) bytes += connection.socket.writableLength;
    return bytes;
  }

  start(): Promise<void> {
    if (this.server) return Promise.resolve();
    this.starting ??= this.open().finally(() => (this.starting = undefined));
    return this.starting;
  }

  private async open(): Promise<void> {
    // A socket's write buffer is "full" (write() says wait) at maxOutputBytes: then it is not read until it drains.
    const server = createServer({ allowHalfOpen: true, highWaterMark: this.limits.maxOutputBytes }, (socket) => this.accept(socket));
    server.on('error', (error) => this.logger.error('control.server-error', { reason: error.message }));
    const listen = this.listen;
    let access: string;
    if (isUnixListen(listen)) {
      this.socketFile = await listenUnixSocket(server, listen.path, { mode: listen.mode, group: listen.group });
      this.listenAddress = listen.path;
      access = listen.readOnly ? 'read-only' : 'read-write';
    } else {
      this.token = listen.tokenFile ? loadOrCreateToken(listen.tokenFile, listen.group) : undefined;
      await new Promise<void>((resolve, reject) => {
        const failed = (error: Error): void => reject(new ConfigError(`cannot listen on ${listen.host ?? '127.0.0.1'}:${listen.port}: ${error.message}`));
        server.once('error', failed);
        server.listen(listen.port, listen.host ?? '127.0.0.1', () => {
          server.off('error', failed);
          resolve();
        });
      });
      const address = server.address() as AddressInfo;
      this.listenAddress = address.family === 'IPv6' ? `[${address.address}]:${address.port}` : `${address.address}:${address.port}`;
      access = this.token ? 'read, write after auth' : 'read-only';
    }
    this.server = server;
    this.logger.info('control.listening', { address: this.listenAddress, access, maxConnections: this.limits.maxConnections });
  }

  async stop(): Promise<void> {
    await this.starting?.catch(() => undefined);
    const server = this.server;
    this.server = undefined;
    for (const connection of [...this.connections]) this.drop(connection);
    this.stopSweeping();
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
    this.socketFile?.remove();
    this.socketFile = undefined;
  }

  private registerMetrics(registry: Registry): void {
    // A daemon restarted in one process makes a new port on the same registry: the new one's series replace the old.
    for (const name of ['xianet_control_refusals_total', 'xianet_control_connections', 'xianet_control_buffered_bytes']) registry.removeSingleMetric(name);
    this.refusals.register(registry, 'xianet_control_refusals_total', 'Control-port connections and requests refused or shed, by resource and reason');
    const connections = (): number => this.connections.size;
    const buffered = (): number => this.buffered;
    new Gauge({
      name: 'xianet_control_connections',
      help: 'Open control-port connections',
      registers: [registry],
      collect() {
        this.set(connections());
      },
    });
    new Gauge({
      name: 'xianet_control_buffered_bytes',
      help: 'Bytes the control port holds for requests not yet complete, all connections',
      registers: [registry],
      collect() {
        this.set(buffered());
      },
    });
  }

  private refuse(resource: string, reason: RefusalReason, detail: Record<string, unknown> = {}): void {
    this.refusals.refuse(resource, reason);
    // Counted always; logged at most about once a second, so a flood does not flood the journal.
    if (this.warnings.take()) this.logger.warn('control.refused', { resource, reason, ...detail });
  }

  private accept(socket: Socket): void {
    if (!this.server) {
      socket.destroy();
      return;
    }
    if (this.connections.size >= this.limits.maxConnections) {
      let quietest: Connection | undefined;
      for (const connection of this.connections) if (!quietest || connection.lastActive < quietest.lastActive) quietest = connection;
      if (quietest) {
        this.refuse('connection', 'cap', { connections: this.connections.size });
        this.drop(quietest);
      }
    }
    const unix = isUnixListen(this.listen);
    const connection: Connection = {
      socket,
      reader: new ClickCommandReader({ maxLineBytes: this.limits.maxLineBytes, maxDataBytes: this.limits.maxDataBytes }),
      session: new ClickControlSession(this.namespace, {
        writable: unix && !(this.listen as UnixControlListen).readOnly,
        token: this.token,
        maxDataBytes: this.limits.maxDataBytes,
        onWrite: (handler, data) => this.logger.debug('control.write', { handler, argument: data.slice(0, 200) }),
        onRefusal: (resource, reason) => this.refuse(resource, reason),
      }),
      lastActive: now(),
      requestSince: undefined,
      counted: 0,
      ended: false,
      quitting: false,
      draining: false,
    };
    this.connections.add(connection);
    this.startSweeping();
    socket.setNoDelay(true);
    socket.on('error', () => this.drop(connection));
    socket.on('close', () => this.drop(connection));
    socket.on('data', (chunk: Buffer) => {
      if (connection.quitting) return;
      connection.reader.push(chunk);
      this.pump(connection);
      this.account(connection);
    });
    socket.on('end', () => {
      if (connection.quitting) return;
      connection.ended = true;
      connection.reader.end();
      this.pump(connection);
      this.account(connection);
    });
    socket.write(`${CONTROL_SOCKET_GREETING}\r\n`);
  }

  /** Runs the complete requests a connection has, as long as its client reads the replies. */
  private pump(connection: Connection): void {
    const { socket, reader } = connection;
    while (!connection.quitting && this.connections.has(connection)) {
      if (socket.writableNeedDrain) {
        if (!connection.draining) {
          connection.draining = true;
          socket.pause();
          socket.once('drain', () => {
            connection.draining = false;
            socket.resume();
            this.pump(connection);
            this.account(connection);
          });
        }
        return;
      }
      const request = reader.next();
      if (!request) break;
      connection.lastActive = now();
      connection.requestSince = undefined;
      const reply = connection.session.execute(request);
      if (reply.text) socket.write(reply.text, 'latin1');
      if (reply.quit) {
        this.finish(connection);
        return;
      }
    }
    if (connection.ended && !connection.quitting && this.connections.has(connection)) {
      this.finish(connection);
      return;
    }
    connection.requestSince = reader.inRequest ? (connection.requestSince ?? now()) : undefined;
  }

  /**
   * After QUIT, or once the client's input is over: the replies go out, then the
   * connection closes, as Click closes it after flushing. What the client still sends
   * is read and dropped meanwhile, so nothing is left unread when it closes.
   */
  private finish(connection: Connection): void {
    connection.quitting = true;
    connection.reader.discard();
    const { socket } = connection;
    if (socket.isPaused()) socket.resume();
    socket.end(() => this.drop(connection));
  }

  /** Keeps the total of held bytes, and sheds the largest holder when it passes the budget. */
  private account(connection: Connection): void {
    if (this.connections.has(connection)) {
      this.buffered += connection.reader.buffered - connection.counted;
      connection.counted = connection.reader.buffered;
    }
    while (this.buffered > this.limits.maxBufferedBytes) {
      let largest: Connection | undefined;
      for (const c of this.connections) if (!largest || c.counted > largest.counted) largest = c;
      if (!largest) break;
      this.refuse('connection', 'budget', { bytes: largest.counted, total: this.buffered });
      this.drop(largest);
    }
  }

  private drop(connection: Connection): void {
    if (!this.connections.delete(connection)) return;
    this.buffered -= connection.counted;
    connection.counted = 0;
    connection.socket.destroy();
    if (this.connections.size === 0) this.stopSweeping();
  }

  private startSweeping(): void {
    if (this.sweeper) return;
    const every = Math.max(5, Math.min(this.limits.idleTimeoutMs, this.limits.commandTimeoutMs) / 4);
    this.sweeper = setInterval(() => this.sweep(), every);
  }

  private stopSweeping(): void {
    clearInterval(this.sweeper);
    this.sweeper = undefined;
  }

  /** Closes connections idle too long, or whose request has not completed in time. */
  private sweep(): void {
    const time = now();
    for (const connection of [...this.connections]) {
      const since = connection.requestSince;
      if (since !== undefined ? time - since > this.limits.commandTimeoutMs : time - connection.lastActive > this.limits.idleTimeoutMs) {
        this.refuse('connection', 'timeout', { request: since !== undefined });
        this.drop(connection);
      }
    }
  }
}
