/**
 * A Unix-socket-to-TCP relay, run inside a host's namespace (`xmig lab relay`): the lab,
 * in its own namespace, cannot open a TCP connection to the VM's link-local address on
 * a segment inside another namespace, but it can connect to a Unix socket in the run
 * directory. Each connection accepted on `listen` is joined to a fresh TCP connection to
 * `target` (the VM's control port or /metrics, `[fe80::…%brA]:7100`).
 */
import { rmSync } from 'node:fs';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { XmigError, errorMessage } from '../shared/errors.js';
import type { Startable } from '../shared/startable.js';
import { parseSocketAddress } from '../xianet/udp-link.js';

export interface RelayOptions {
  /** The Unix socket to listen on. */
  listen: string;
  /** host:port or [v6%scope]:port. */
  target: string;
  /** Connections relayed at once; more are closed at once. */
  maxConnections?: number;
}

export class SocketRelay implements Startable {
  private server: Server | undefined;
  private readonly sockets = new Set<Socket>();
  readonly stats = { accepted: 0, refused: 0, failed: 0 };
  private readonly target: { host: string; port: number };

  constructor(readonly options: RelayOptions) {
    this.target = parseSocketAddress(options.target);
  }

  async start(): Promise<void> {
    if (this.server) return;
    rmSync(this.options.listen, { force: true });
    const limit = this.options.maxConnections ?? 16;
    // Half-open: a client that has sent all it will say still gets the whole answer.
    const server = createServer({ allowHalfOpen: true }, (client) => {
      if (this.sockets.size >= limit * 2) {
        this.stats.refused++;
        client.destroy();
        return;
      }
      this.stats.accepted++;
      const upstream = connect({ host: this.target.host, port: this.target.port, allowHalfOpen: true });
      for (const socket of [client, upstream]) {
        this.sockets.add(socket);
        socket.on('close', () => this.sockets.delete(socket));
      }
      upstream.on('error', () => {
        this.stats.failed++;
        client.destroy();
      });
      client.on('error', () => upstream.destroy());
      client.on('close', () => upstream.destroy());
      upstream.on('close', () => client.destroy());
      client.pipe(upstream);
      upstream.pipe(client);
    });
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.options.listen, () => {
        server.off('error', reject);
        resolve();
      });
    }).catch((error: unknown) => {
      this.server = undefined;
      throw new XmigError('ERR_CONFIG', `cannot listen on ${this.options.listen}: ${errorMessage(error)}`, { cause: error });
    });
  }

  async stop(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    if (!server) return;
    for (const socket of this.sockets) socket.destroy();
    this.sockets.clear();
    await new Promise<void>((resolve) => server.close(() => resolve()));
    rmSync(this.options.listen, { force: true });
  }
}
