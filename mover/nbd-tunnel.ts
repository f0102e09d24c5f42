/**
 * The source end of a disk migration's NBD tunnel: a Unix socket, private to this
 * process (in a 0700 directory of its own), that the source QEMU's NBD client connects
 * to as if it were the destination's NBD server. Each connection is carried as one
 * XIA STREAM to the disk target on the destination host, which joins it to the
 * destination QEMU's NBD export. The tunnel does not look into NBD: requests, replies
 * and WRITE_ZEROES go through byte for byte, so a hole QEMU sends as a zero request
 * stays a zero request (28 bytes on the wire), never becomes data.
 *
 * A connection that fails — the STREAM cannot be opened, or breaks — is dropped at both
 * ends: QEMU's NBD client then sees its server gone and fails the I/O, which fails the
 * mirror job (the source VM itself never notices). `onLost` says why.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import { errorMessage } from '../shared/errors.js';
import { silentLogger, type Logger } from '../shared/logger.js';
import type { Startable } from '../shared/startable.js';
import { splice, type Splice } from './byte-splice.js';
import { DiskMessageType, encodeDiskMessage } from './disk-messages.js';

export interface NbdTunnelOptions {
  /** Opens a STREAM to the disk target (its disk SID). */
  connect: () => Promise<Duplex>;
  /** The migration's session, which the disk target checks on every stream. */
  session: Buffer;
  /** QEMU opens one NBD connection per node; more than this at once are refused (default 4). */
  maxConnections?: number;
  logger?: Logger;
}

export interface TunnelCounts {
  /** NBD bytes from the source QEMU to the destination (requests and the data written). */
  toTarget: number;
  /** NBD bytes back (replies, and data read). */
  fromTarget: number;
  connections: number;
  refused: number;
}

export class NbdTunnel implements Startable {
  private server: Server | undefined;
  private dir: string | undefined;
  private readonly live = new Set<Splice>();
  private readonly pending = new Set<Socket>();
  private readonly lostListeners = new Set<(reason: string) => void>();
  private readonly logger: Logger;
  private readonly totals: TunnelCounts = { toTarget: 0, fromTarget: 0, connections: 0, refused: 0 };
  private stopping = false;

  constructor(private readonly options: NbdTunnelOptions) {
    this.logger = (options.logger ?? silentLogger()).child({ component: 'mover', role: 'nbd-tunnel' });
  }

  /** The socket QEMU's NBD client connects to (set once started). */
  get path(): string {
    if (!this.dir) throw new Error('the NBD tunnel is not started');
    return join(this.dir, 'nbd.sock');
  }

  get counts(): TunnelCounts {
    return { ...this.totals };
  }

  /** A tunnel connection ended other than cleanly (the STREAM failed or could not be opened). */
  onLost(listener: (reason: string) => void): () => void {
    this.lostListeners.add(listener);
    return () => this.lostListeners.delete(listener);
  }

  async start(): Promise<void> {
    if (this.server) return;
    this.stopping = false;
    this.dir = mkdtempSync(join(tmpdir(), 'xmig-nbd-'));
    const server = createServer((socket) => this.onConnection(socket));
    server.on('error', (error) => this.logger.warn('tunnel.error', { error: error.message }));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.path, () => {
        server.off('error', reject);
        resolve();
      });
    });
    this.server = server;
  }

  private lost(reason: string): void {
    if (this.stopping) return;
    this.logger.warn('tunnel.lost', { reason });
    for (const listener of this.lostListeners) listener(reason);
  }

  private onConnection(local: Socket): void {
    local.on('error', () => undefined);
    if (this.live.size + this.pending.size >= (this.options.maxConnections ?? 4)) {
      this.totals.refused++;
      local.destroy();
      return;
    }
    // Nothing is read from QEMU until the STREAM is there to take it.
    local.pause();
    this.pending.add(local);
    this.options
      .connect()
      .then((remote) => {
        this.pending.delete(local);
        if (local.destroyed || this.stopping) {
          remote.destroy();
          return;
        }
        remote.write(encodeDiskMessage({ type: DiskMessageType.OPEN_NBD, session: this.options.session }));
        this.totals.connections++;
        const joined = splice(local, remote, (direction, bytes) => {
          if (direction === 'aToB') this.totals.toTarget += bytes;
          else this.totals.fromTarget += bytes;
        });
        this.live.add(joined);
        local.resume();
        this.logger.info('tunnel.connected', { connection: this.totals.connections });
        void joined.closed.then((failure) => {
          this.live.delete(joined);
          if (failure) this.lost(`NBD tunnel connection lost: ${failure}`);
        });
      })
      .catch((error: unknown) => {
        this.pending.delete(local);
        local.destroy();
        this.lost(`cannot open the NBD tunnel to the disk target: ${errorMessage(error)}`);
      });
  }

  /** From now on connections are expected to close (the node is being removed): none is reported lost. */
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
    if (this.dir) rmSync(this.dir, { recursive: true, force: true });
    this.dir = undefined;
  }
}
