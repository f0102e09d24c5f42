/**
 * `xmig disk-target`: the destination side of a disk migration, run next to the
 * destination QEMU (the one started with `-incoming`), on the destination host — the
 * only place its QMP socket and its image are. The source's `xmig migrate --disk`
 * reaches it over XIA on the disk SID:
 *
 *  1. on the control stream the source says how large its disk is; the target checks its
 *     own disk against it (and had checked, at start, that QEMU is waiting for an incoming
 *     migration, that the disk is writable, and that its image file is the format QEMU
 *     opened it as), starts QEMU's NBD server on a private Unix socket with a writable
 *     export of the disk, and answers TARGET — or REFUSED, in one line, before anything moves;
 *  2. each NBD stream the source's tunnel opens is joined to that socket (or, for the
 *     TCP/IP baseline, the export listens on TCP and the source's QEMU connects to it
 *     directly: QEMU's own NBD between the hosts, no xmig in the data path);
 *  3. MIRRORED: the source's mirror has concluded; the export is removed (so the disk is
 *     QEMU's alone when the guest resumes on it) and the target answers RELEASED;
 *  4. the migration completes (the destination resumes) — or it does not: ABORT from the
 *     source, the control stream lost before the mirror was done, the destination QEMU
 *     gone. Then the partial disk is discarded: the export removed, a destination that
 *     never ran told to quit, and the image wiped with qemu-io, as it was before.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { connect as connectUnix, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import { XmigError, errorMessage } from '../shared/errors.js';
import { silentLogger, type Logger } from '../shared/logger.js';
import type { Startable } from '../shared/startable.js';
import { WellKnownSid, type Xid } from '../shared/xid.js';
import type { NodeApi } from '../xianet/api/node-api.js';
import { listenXia, type Listening } from './connections.js';
import { disksOf, diskName, selectDisk, sizeMismatch, type BlockDisk } from './block-devices.js';
import { splice, type Splice } from './byte-splice.js';
import { DiskChannel } from './disk-channel.js';
import { discardImage, isLocalImage, probeImage } from './disk-image.js';
import { DiskIntake, type Opening } from './disk-intake.js';
import { DiskMessageType, type DiskMessage } from './disk-messages.js';
import { QmpClient } from './qmp-client.js';

export interface DiskTargetOptions {
  /** The destination QEMU's QMP socket. */
  qmp: string;
  /** Where sources reach the target: the disk SID on the destination host's node, or a TCP listener (listenTcp). */
  listen: () => Promise<Listening>;
  /** Export the disk on TCP here instead of through the tunnel (QEMU's own NBD: the TCP/IP baseline). */
  nbdListen?: { host: string; port: number };
  /** Which disk, if the destination VM has several (device id, qdev path, drive id or node name). */
  disk?: string;
  /** Why a stream may not reach the target (not an allowed source), or undefined to admit it. */
  admit?: (stream: Duplex) => string | undefined;
  openTimeoutMs?: number;
  /** Wipe the image after a failed migration (default true). */
  discard?: boolean;
  /** How long the destination QEMU may take to exit once told to quit (default 30 s). */
  quitTimeoutMs?: number;
  logger?: Logger;
}

export interface DiskTargetOutcome {
  status: 'completed' | 'failed';
  reason?: string;
  /** The partial disk was wiped. */
  discarded?: boolean;
  /** NBD bytes from the source (requests and data written) and back. */
  fromSource: number;
  toSource: number;
  connections: number;
  refused: Record<string, number>;
}

type Phase = 'idle' | 'exported' | 'released' | 'completed' | 'failed';

/** The export's name and id in the destination QEMU. */
const EXPORT_ID = 'xmig-disk';

export class DiskTarget implements Startable {
  private qmp: QmpClient | undefined;
  private server: Listening | undefined;
  private socketDir: string | undefined;
  private target: BlockDisk | undefined;
  private backing = false;
  private session: Buffer | undefined;
  private control: DiskChannel | undefined;
  private phase: Phase = 'idle';
  private nbdServerUp = false;
  private readonly splices = new Set<Splice>();
  private readonly counts = { fromSource: 0, toSource: 0, connections: 0 };
  private readonly intake: DiskIntake;
  private readonly logger: Logger;
  private settle: ((outcome: DiskTargetOutcome) => void) | undefined;
  private ending: Promise<void> | undefined;
  private stopping = false;
  /** How the migration ended, once it has (completed, or failed and discarded). */
  readonly outcome: Promise<DiskTargetOutcome>;

  constructor(private readonly options: DiskTargetOptions) {
    this.logger = (options.logger ?? silentLogger()).child({ component: 'mover', role: 'disk-target' });
    this.intake = new DiskIntake({ admit: options.admit, openTimeoutMs: options.openTimeoutMs, onOpen: (o, s, r) => this.onOpen(o, s, r), logger: this.logger });
    this.outcome = new Promise((resolve) => (this.settle = resolve));
  }

  /** The disk on offer (once started). */
  get disk(): BlockDisk | undefined {
    return this.target;
  }

  /** Where sources connect (once started). */
  async address(): Promise<string> {
    if (!this.server) throw new XmigError('ERR_STATE', 'the disk target is not started');
    return this.server.address;
  }

  /** Checks the destination QEMU and its disk, then listens. Any problem is a one-line error, with nothing left open. */
  async start(): Promise<void> {
    if (this.qmp) return;
    const qmp = await QmpClient.connect(this.options.qmp);
    try {
      const where = `the destination VM (QMP ${this.options.qmp})`;
      const status = (await qmp.execute<{ status: string }>('query-status')).status;
      if (status !== 'inmigrate') {
        throw new XmigError('ERR_CONFIG', `${where} is ${status}, not waiting for an incoming migration: its disk is not ours to overwrite (start it with -incoming)`);
      }
      const disk = selectDisk(disksOf(await qmp.execute('query-block')), this.options.disk, where);
      if (isLocalImage(disk.file)) {
        // QEMU opens what it is told to: a qcow2 file opened as raw would be written over, metadata and all.
        const facts = await probeImage(disk.file).catch((error: unknown) => {
          throw new XmigError('ERR_CONFIG', `the destination image ${disk.file} cannot be opened: ${errorMessage(error)}`);
        });
        if (facts.format !== disk.format) {
          throw new XmigError('ERR_CONFIG', `the destination image ${disk.file} is a ${facts.format} image, but QEMU opened it as ${disk.format}: the destination cannot use it as this disk`);
        }
        this.backing = facts.backingFile !== undefined;
      }
      this.target = disk;
      qmp.onEvent((event) => {
        if (event.event === 'RESUME') this.onResumed();
      });
      qmp.onClose(() => this.onQemuGone());
      this.qmp = qmp;
      this.server = await this.options.listen();
      void this.acceptLoop(this.server);
      this.logger.info('disk-target.ready', { disk: diskName(disk), node: disk.node, format: disk.format, bytes: disk.bytes, file: disk.file });
    } catch (error) {
      this.qmp = undefined;
      await qmp.close();
      throw error;
    }
  }

  private async acceptLoop(server: Listening): Promise<void> {
    for (;;) {
      let stream: Duplex;
      try {
        stream = await server.accept();
      } catch {
        return; // closed
      }
      this.intake.take(stream);
    }
  }

  private onOpen(opening: Opening, stream: Duplex, rest: Buffer): void {
    if (opening.type === DiskMessageType.OPEN_CONTROL) void this.onControl(opening, stream, rest);
    else this.onNbd(opening.session, stream, rest);
  }

  private async onControl(open: Extract<Opening, { type: typeof DiskMessageType.OPEN_CONTROL }>, stream: Duplex, rest: Buffer): Promise<void> {
    const channel = new DiskChannel(stream, rest);
    const refuse = async (message: string): Promise<void> => {
      this.logger.warn('disk-target.refused', { reason: message, source: open.source });
      await channel.send({ type: DiskMessageType.REFUSED, message }).catch(() => undefined);
      await channel.end();
    };
    if (this.session || this.phase !== 'idle') return refuse('another migration is using this disk target');
    const disk = this.target!;
    const mismatch = sizeMismatch(open.sourceBytes, disk.bytes, `${diskName(disk)} (${disk.file})`);
    if (mismatch) return refuse(mismatch);
    this.session = open.session;
    this.control = channel;
    try {
      await this.export(disk);
    } catch (error) {
      this.session = undefined;
      this.control = undefined;
      await this.unexport();
      return refuse(`the destination QEMU cannot export its disk ${diskName(disk)} for writing: ${errorMessage(error)}`);
    }
    this.phase = 'exported';
    channel.onMessage((message) => this.onMessage(message));
    channel.onClose((reason) => {
      // Before the mirror is done, the source going means the disk will never be whole.
      if (this.phase === 'exported' && !this.stopping) void this.fail(`the source's control connection was lost: ${reason}`);
    });
    this.logger.info('disk-target.exported', { source: open.source, bytes: disk.bytes });
    const nbd = this.options.nbdListen ? `${this.options.nbdListen.host}:${this.options.nbdListen.port}` : '';
    await channel.send({ type: DiskMessageType.TARGET, bytes: disk.bytes, exportName: EXPORT_ID, format: disk.format, node: disk.node, file: disk.file, nbd }).catch(() => undefined);
  }

  private socketPath(): string {
    return join(this.socketDir!, 'nbd.sock');
  }

  /** QEMU's NBD server on a socket only this process (and QEMU) can reach, and a writable export of the disk. */
  private async export(disk: BlockDisk): Promise<void> {
    const qmp = this.qmp!;
    this.socketDir = mkdtempSync(join(tmpdir(), 'xmig-disk-target-'));
    const tcp = this.options.nbdListen;
    const addr = tcp ? { type: 'inet', data: { host: tcp.host, port: String(tcp.port) } } : { type: 'unix', data: { path: this.socketPath() } };
    await qmp.execute('nbd-server-start', { addr });
    this.nbdServerUp = true;
    await qmp.execute('block-export-add', { type: 'nbd', id: EXPORT_ID, 'node-name': disk.node, name: EXPORT_ID, writable: true });
  }

  /** Removes the export (dropping its clients: the source is done or gone) and stops the NBD server. */
  private async unexport(): Promise<void> {
    const qmp = this.qmp;
    for (const s of this.splices) s.destroy();
    if (qmp && !qmp.isClosed && this.nbdServerUp) {
      const deleted = new Promise<void>((resolve) => {
        const off = qmp.onEvent((e) => {
          if (e.event === 'BLOCK_EXPORT_DELETED' && e.data?.['id'] === EXPORT_ID) {
            off();
            resolve();
          }
        });
        // No export to wait for (it was never added, or is gone already).
        void qmp
          .execute('block-export-del', { id: EXPORT_ID, mode: 'hard' })
          .catch(() => {
            off();
            resolve();
          });
      });
      await deleted;
      await qmp.execute('nbd-server-stop').catch(() => undefined);
    }
    this.nbdServerUp = false;
    if (this.socketDir) rmSync(this.socketDir, { recursive: true, force: true });
    this.socketDir = undefined;
  }

  private onNbd(session: Buffer, stream: Duplex, rest: Buffer): void {
    if (!this.session?.equals(session) || this.phase !== 'exported' || this.options.nbdListen) {
      this.intake.refusals.refuse('disk-stream', 'forbidden');
      this.logger.warn('disk-target.stream-refused', { reason: 'an NBD stream for no current migration' });
      stream.destroy();
      return;
    }
    const nbd: Socket = connectUnix(this.socketPath());
    nbd.on('error', () => undefined);
    if (rest.length) nbd.write(rest);
    this.counts.connections++;
    const joined = splice(stream, nbd, (direction, bytes) => {
      if (direction === 'aToB') this.counts.fromSource += bytes;
      else this.counts.toSource += bytes;
    });
    this.splices.add(joined);
    void joined.closed.then((failure) => {
      this.splices.delete(joined);
      if (failure) this.logger.warn('disk-target.nbd-lost', { reason: failure });
    });
  }

  private onMessage(message: DiskMessage): void {
    switch (message.type) {
      case DiskMessageType.MIRRORED:
        void this.release();
        return;
      case DiskMessageType.DONE:
        void this.confirmCompleted();
        return;
      case DiskMessageType.ABORT:
        void this.fail(`the source aborted the migration: ${message.reason}`);
        return;
      default:
        this.control?.close(`unexpected disk message ${message.type} from the source`);
    }
  }

  /** The mirror is done: the disk goes back to QEMU alone, before the guest resumes on it. */
  private async release(): Promise<void> {
    if (this.phase !== 'exported') return;
    await this.unexport();
    this.phase = 'released';
    this.logger.info('disk-target.released', { bytes: this.counts.fromSource });
    await this.control?.send({ type: DiskMessageType.RELEASED }).catch(() => undefined);
  }

  private onResumed(): void {
    if (this.phase === 'released') this.finish({ status: 'completed' });
  }

  /** The source says completed: the destination has resumed, or is paused past the migration (-S). */
  private async confirmCompleted(): Promise<void> {
    if (this.phase !== 'released') return;
    for (let i = 0; i < 600 && this.phase === 'released'; i++) {
      const status = await this.qmp?.execute<{ status: string }>('query-status').catch(() => undefined);
      if (!status) return; // QEMU is gone: onQemuGone decides
      if (status.status !== 'inmigrate') return this.finish({ status: 'completed' });
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  private onQemuGone(): void {
    if (this.stopping) return;
    if (this.phase === 'completed' || this.phase === 'failed') return;
    void this.fail('the destination QEMU exited before the migration completed');
  }

  private finish(result: Pick<DiskTargetOutcome, 'status' | 'reason' | 'discarded'>): void {
    if (this.phase === 'completed' || this.phase === 'failed') return;
    this.phase = result.status;
    const outcome: DiskTargetOutcome = { ...result, ...this.counts, refused: this.intake.refusals.snapshot() };
    this.logger.info(result.status === 'completed' ? 'disk-target.completed' : 'disk-target.failed', { ...(result.reason ? { reason: result.reason } : {}), bytes: this.counts.fromSource });
    this.settle?.(outcome);
  }

  /** Aborts the migration here (a signal, an operator): the same as the source's ABORT. */
  abort(reason: string): Promise<void> {
    return this.fail(reason);
  }

  /**
   * The migration will not complete: nothing of the partial disk may stay. The export
   * goes, a destination QEMU that never ran is told to quit (its incoming migration is
   * dead either way), and once it has let go of the image, the image is wiped.
   */
  private fail(reason: string): Promise<void> {
    if (this.phase === 'completed' || this.phase === 'failed') return this.ending ?? Promise.resolve();
    this.ending ??= (async () => {
      const touched = this.phase !== 'idle';
      this.control?.close(reason);
      await this.unexport();
      const qmp = this.qmp;
      // Nothing was exported: the destination QEMU is as it was, and may wait for another try.
      if (touched && qmp && !qmp.isClosed) {
        const status = await qmp.execute<{ status: string }>('query-status').catch(() => undefined);
        if (status?.status === 'inmigrate') {
          const gone = new Promise<void>((resolve) => qmp.onClose(() => resolve()));
          await qmp.execute('quit').catch(() => undefined);
          const deadline = this.options.quitTimeoutMs ?? 30_000;
          let timer: NodeJS.Timeout | undefined;
          await Promise.race([gone, new Promise<void>((resolve) => (timer = setTimeout(resolve, deadline)))]);
          clearTimeout(timer);
        }
      }
      const disk = this.target;
      let discarded = false;
      if (touched && disk && this.options.discard !== false && (!qmp || qmp.isClosed)) {
        if (isLocalImage(disk.file)) {
          try {
            await discardImage(disk.file, disk.format, disk.bytes, this.backing);
            discarded = true;
          } catch (error) {
            this.logger.error('disk-target.discard-failed', { reason: errorMessage(error), file: disk.file });
          }
        } else this.logger.warn('disk-target.discard-skipped', { reason: 'not a local image file', file: disk.file });
      }
      this.finish({ status: 'failed', reason, discarded });
    })();
    return this.ending;
  }

  async stop(): Promise<void> {
    this.stopping = true;
    this.intake.close();
    const server = this.server;
    this.server = undefined;
    await server?.close().catch(() => undefined);
    await this.ending;
    this.control?.close('disk target stopped');
    await this.unexport();
    const qmp = this.qmp;
    this.qmp = undefined;
    await qmp?.close();
    this.finish({ status: 'failed', reason: 'the disk target was stopped' });
  }
}

/** The disk target's usual door: the disk SID on the destination host's node. */
export function listenOnDiskSid(api: NodeApi, sid: Xid = WellKnownSid.DISK): () => Promise<Listening> {
  return () => listenXia(api, sid);
}
