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
 *
 * It is a LocalTunnel (local-tunnel.ts) whose streams open with OPEN_NBD and the session.
 */
import type { Duplex } from 'node:stream';
import type { Logger } from '../shared/logger.js';
import type { Startable } from '../shared/startable.js';
import { DiskMessageType, encodeDiskMessage } from './disk-messages.js';
import { LocalTunnel } from './local-tunnel.js';

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
  private readonly tunnel: LocalTunnel;

  constructor(options: NbdTunnelOptions) {
    const opening = encodeDiskMessage({ type: DiskMessageType.OPEN_NBD, session: options.session });
    this.tunnel = new LocalTunnel({
      connect: options.connect,
      privateName: 'nbd.sock',
      // The disk target answers nothing: NBD follows the opening frame at once.
      open: async (remote) => {
        remote.write(opening);
        return Buffer.alloc(0);
      },
      maxConnections: options.maxConnections ?? 4,
      name: 'NBD tunnel',
      peer: 'the disk target',
      logger: options.logger,
    });
  }

  /** The socket QEMU's NBD client connects to (set once started). */
  get path(): string {
    return this.tunnel.path;
  }

  get counts(): TunnelCounts {
    const { toRemote, fromRemote, connections, refused } = this.tunnel.counts;
    return { toTarget: toRemote, fromTarget: fromRemote, connections, refused };
  }

  /** A tunnel connection ended other than cleanly (the STREAM failed or could not be opened). */
  onLost(listener: (reason: string) => void): () => void {
    return this.tunnel.onLost(listener);
  }

  start(): Promise<void> {
    return this.tunnel.start();
  }

  /** From now on connections are expected to close (the node is being removed): none is reported lost. */
  quiesce(): void {
    this.tunnel.quiesce();
  }

  stop(): Promise<void> {
    return this.tunnel.stop();
  }
}
