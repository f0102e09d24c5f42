/**
 * The Goldbach service over plain TCP/IP: the same line protocol as over STREAM
 * (goldbach-protocol.ts), for the TCP/IP row of the paper's Table 1, where a TCP client
 * holds a connection to the VM across a migration and the question is whether it
 * survives. Not XIA: a TCP connection is bound to the VM's IP address, which is the point.
 */
import { connect, createServer, type Server, type Socket } from 'node:net';
import { XmigError, errorMessage } from '../../shared/errors.js';
import type { Logger } from '../../shared/logger.js';
import type { Startable } from '../../shared/startable.js';
import { askGoldbach, serveGoldbachConnection, type AskOptions, type AskReport } from './goldbach-protocol.js';

export interface GoldbachTcpOptions {
  host: string;
  port: number;
  logger?: Logger;
  /** Connections served at once; more are refused (closed at once) and counted. */
  maxConnections?: number;
}

export class GoldbachTcpServer implements Startable {
  private server: Server | undefined;
  private readonly sockets = new Set<Socket>();
  readonly stats = { connections: 0, answers: 0, refused: 0 };

  constructor(private readonly options: GoldbachTcpOptions) {}

  /** "host:port" it listens on, once started. */
  get address(): string | undefined {
    const address = this.server?.address();
    if (!address || typeof address === 'string') return address ?? undefined;
    return address.family === 'IPv6' ? `[${address.address}]:${address.port}` : `${address.address}:${address.port}`;
  }

  async start(): Promise<void> {
    if (this.server) return;
    const limit = this.options.maxConnections ?? 256;
    const server = createServer((socket) => {
      if (this.sockets.size >= limit) {
        this.stats.refused++;
        socket.destroy();
        return;
      }
      this.sockets.add(socket);
      this.stats.connections++;
      socket.setNoDelay(true);
      socket.on('error', () => undefined); // a client resetting is the end of its loop, never a crash
      this.options.logger?.info('goldbach.tcp-connection', { remote: `${socket.remoteAddress}:${socket.remotePort}` });
      void serveGoldbachConnection(socket).then((answered) => {
        this.stats.answers += answered;
        this.sockets.delete(socket);
        this.options.logger?.info('goldbach.tcp-closed', { answered });
      });
    });
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.options.port, this.options.host, () => {
        server.off('error', reject);
        resolve();
      });
    }).catch((error: unknown) => {
      this.server = undefined;
      throw new XmigError('ERR_CONFIG', `cannot listen on ${this.options.host}:${this.options.port} for Goldbach over TCP: ${errorMessage(error)}`, { cause: error });
    });
    server.on('error', (error) => this.options.logger?.warn('goldbach.tcp-error', { reason: errorMessage(error) }));
    this.options.logger?.info('goldbach.tcp-listening', { address: this.address });
  }

  async stop(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    if (!server) return;
    for (const socket of this.sockets) socket.destroy();
    this.sockets.clear();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}

/** Connects over TCP and asks until told to stop, the count is reached, or the connection breaks. */
export async function askGoldbachTcp(host: string, port: number, options: AskOptions & { connectTimeoutMs?: number } = {}): Promise<AskReport> {
  const socket = await new Promise<Socket>((resolve, reject) => {
    const s = connect({ host, port, noDelay: true, timeout: options.connectTimeoutMs ?? 10_000 });
    const fail = (error: Error): void => {
      s.destroy();
      reject(new XmigError('ERR_UNREACHABLE', `cannot connect to Goldbach at ${host}:${port}: ${error.message}`, { cause: error }));
    };
    s.once('error', fail);
    s.once('timeout', () => fail(new Error('timed out')));
    s.once('connect', () => {
      s.off('error', fail);
      s.setTimeout(0);
      resolve(s);
    });
  });
  return askGoldbach(socket, options);
}
