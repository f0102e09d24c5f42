/**
 * The source end of a tunnel: a local socket on this host whose every connection is
 * carried as one XIA STREAM to a far end on another host, which joins it to a socket
 * there. The tunnel does not look into what it carries: the bytes go through untouched,
 * with backpressure both ways (byte-splice.ts).
 *
 * Where it listens: at a Unix socket `path`, bound with its mode and group already set
 * (xianet/unix-socket-file.ts), for clients that know where to connect (libvirt); on a
 * `tcp` address, for TCP clients (`xmig tunnel connect`: iperf3, ssh, anything); or, with
 * neither, in a 0700 directory of its own, for a client this process starts itself
 * (QEMU's NBD client in a disk migration).
 *
 * Each STREAM first says what it is for (`open`: an opening frame, and the far end's
 * answer if it gives one); a connection whose STREAM cannot be opened, is refused, or
 * breaks is dropped at both ends, so the client sees its server gone, and `onLost` says why.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import { errorMessage } from '../shared/errors.js';
import { silentLogger, type Logger } from '../shared/logger.js';
import type { Startable } from '../shared/startable.js';
import { formatSocketAddress, type SocketAddress } from '../xianet/udp-link.js';
import { listenUnixSocket, type SocketFile } from '../xianet/unix-socket-file.js';
import { splice, type Splice } from './byte-splice.js';

export interface LocalTunnelOptions {
  /** Listen at this Unix socket; without it (and `tcp`), in a private directory of the tunnel's own (see `path`). */
  path?: string;
  /** Listen on TCP here instead (port 0: any free one, see `address`). */
  tcp?: SocketAddress;
  /** The socket file's mode (default 0600) and group, with `path`. */
  mode?: number;
  group?: string | number;
  /** The file's name in the private directory, without `path` (default tunnel.sock). */
  privateName?: string;
  /** Opens a STREAM to the far end. */
  connect: () => Promise<Duplex>;
  /**
   * Says on a fresh STREAM what it is for, and waits for the far end's answer if the
   * protocol has one. Resolves with the bytes the far end sent after its answer (they
   * belong to the client); rejects if the far end refused.
   */
  open?: (remote: Duplex) => Promise<Buffer>;
  /** Connections at once; more are refused (default 4). */
  maxConnections?: number;
  /** For messages: what the tunnel is ("NBD tunnel") and what it reaches ("the disk target"). */
  name?: string;
  peer?: string;
  logger?: Logger;
}

export interface LocalTunnelCounts {
  /** Bytes from the local clients to the far end. */
  toRemote: number;
  /** Bytes back. */
  fromRemote: number;
  connections: number;
  refused: number;
  /** Connections that could not be opened, or broke on the way. */
  lost: number;
}

export class LocalTunnel implements Startable {
  private server: Server | undefined;
  private file: SocketFile | undefined;
  private dir: string | undefined;
  private readonly live = new Set<Splice>();
  private readonly pending = new Set<Socket>();
  private readonly lostListeners = new Set<(reason: string) => void>();
  private readonly logger: Logger;
  private readonly totals: LocalTunnelCounts = { toRemote: 0, fromRemote: 0, connections: 0, refused: 0, lost: 0 };
  private readonly name: string;
  private stopping = false;

  constructor(private readonly options: LocalTunnelOptions) {
    this.name = options.name ?? 'tunnel';
    this.logger = (options.logger ?? silentLogger()).child({ component: 'mover', role: this.name.toLowerCase().replace(/ /g, '-') });
  }

  /** The Unix socket clients connect to (set once started, or given). */
  get path(): string {
    if (this.options.tcp) throw new Error(`the ${this.name} listens on TCP: see address`);
    if (this.options.path) return this.options.path;
    if (!this.dir) throw new Error(`the ${this.name} is not started`);
    return join(this.dir, this.options.privateName ?? 'tunnel.sock');
  }

  /** Where clients connect: host:port with `tcp` (the port bound, once started), else the Unix socket's path. */
  get address(): string {
    if (!this.options.tcp) return this.path;
    const bound = this.server?.address();
    if (bound === null || bound === undefined || typeof bound === 'string') throw new Error(`the ${this.name} is not started`);
    return formatSocketAddress(bound.address, bound.port);
  }

  get counts(): LocalTunnelCounts {
    return { ...this.totals };
  }

  /** Connections open now. */
  get open(): number {
    return this.live.size + this.pending.size;
  }

  /** A connection ended other than cleanly (its STREAM failed, was refused, or could not be opened). */
  onLost(listener: (reason: string) => void): () => void {
    this.lostListeners.add(listener);
    return () => this.lostListeners.delete(listener);
  }

  async start(): Promise<void> {
    if (this.server) return;
    this.stopping = false;
    // Half-open: a client that ends its side (a FIN) still reads the far end's answer.
    const server = createServer({ allowHalfOpen: true }, (socket) => this.onConnection(socket));
    server.on('error', (error) => this.logger.warn('tunnel.error', { error: error.message }));
    const listening = (): Promise<void> =>
      new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.once('listening', () => {
          server.off('error', reject);
          resolve();
        });
      });
    if (this.options.tcp) {
      const done = listening();
      server.listen(this.options.tcp.port, this.options.tcp.host);
      await done;
    } else if (this.options.path) {
      this.file = await listenUnixSocket(server, this.options.path, { mode: this.options.mode ?? 0o600, group: this.options.group });
    } else {
      this.dir = mkdtempSync(join(tmpdir(), 'xmig-tunnel-'));
      const done = listening();
      server.listen(this.path);
      await done;
    }
    this.server = server;
  }

  private lost(reason: string): void {
    if (this.stopping) return;
    this.totals.lost++;
    this.logger.warn('tunnel.lost', { reason });
    for (const listener of this.lostListeners) listener(reason);
  }

  private onConnection(local: Socket): void {
    local.on('error', () => undefined);
    if (this.options.tcp) local.setNoDelay(true);
    if (this.live.size + this.pending.size >= (this.options.maxConnections ?? 4)) {
      this.totals.refused++;
      this.logger.warn('tunnel.refused', { reason: 'cap', connections: this.live.size + this.pending.size });
      local.destroy();
      return;
    }
    // Nothing is read from the client until the STREAM is there to take it.
    local.pause();
    this.pending.add(local);
    let remote: Duplex | undefined;
    const opening = async (): Promise<Buffer> => {
      remote = await this.options.connect();
      remote.on('error', () => undefined);
      return this.options.open ? this.options.open(remote) : Buffer.alloc(0);
    };
    opening()
      .then((early) => {
        this.pending.delete(local);
        if (local.destroyed || this.stopping) {
          remote!.destroy();
          return;
        }
        this.totals.connections++;
        this.totals.fromRemote += early.length;
        if (early.length) local.write(early);
        const joined = splice(local, remote!, (direction, bytes) => {
          if (direction === 'aToB') this.totals.toRemote += bytes;
          else this.totals.fromRemote += bytes;
        });
        this.live.add(joined);
        local.resume();
        this.logger.info('tunnel.connected', { connection: this.totals.connections });
        void joined.closed.then((failure) => {
          this.live.delete(joined);
          this.logger.info('tunnel.closed', { bytes: joined.counts.aToB + joined.counts.bToA, ...(failure ? { reason: failure } : {}) });
          if (failure) this.lost(`${this.name} connection lost: ${failure}`);
        });
      })
      .catch((error: unknown) => {
        this.pending.delete(local);
        remote?.destroy();
        local.destroy();
        this.lost(`cannot open the ${this.name} to ${this.options.peer ?? 'the far end'}: ${errorMessage(error)}`);
      });
  }

  /** From now on connections are expected to close: none is reported lost. */
  quiesce(): void {
    this.stopping = true;
  }

  async stop(): Promise<void> {
    this.stopping = true;
    const server = this.server;
    this.server = undefined;
    for (const socket of this.pending) socket.destroy();
    this.pending.clear();
    const closing = [...this.live].map((s) => {
      s.destroy();
      return s.closed;
    });
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
    await Promise.all(closing);
    this.file?.remove();
    this.file = undefined;
    if (this.dir) rmSync(this.dir, { recursive: true, force: true });
    this.dir = undefined;
  }
}
