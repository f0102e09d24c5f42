/**
 * The source's side of a full migration's disk, from `xmig migrate --disk`: it agrees
 * on the target with `xmig disk-target` on the destination host (a control STREAM to
 * the disk SID), tunnels the source QEMU's NBD connection to it (nbd-tunnel.ts), and
 * runs the mirror (disk-mirror.ts) through its phases:
 *
 *   mirror-sync   the whole disk copied (holes as zero writes)
 *   ready         caught up; made write-blocking, so it stays caught up
 *   ram           QEMU's RAM migration, the mirror keeping the target in step
 *   switchover    the VM stopped before its device state (pause-before-switchover):
 *                 the mirror completes, the target lets go of its export
 *   complete      the device state goes, the destination resumes on its disk
 *
 * Whatever fails — the mirror, the tunnel, the control stream, the destination — the
 * caller cancels the RAM migration and `finish(false)` leaves the source as it was (the
 * job cancelled and dismissed, the NBD node removed) and tells the target to discard
 * its partial disk.
 */
import { randomBytes } from 'node:crypto';
import type { Duplex } from 'node:stream';
import { XmigError, errorMessage } from '../shared/errors.js';
import { silentLogger, type Logger } from '../shared/logger.js';
import { disksOf, diskName, selectDisk, sizeMismatch, type BlockDisk } from './block-devices.js';
import { DiskChannel } from './disk-channel.js';
import { DiskMirror, type NbdServer } from './disk-mirror.js';
import { parseSocketAddress } from '../xianet/udp-link.js';
import { DiskMessageType, type DiskMessage } from './disk-messages.js';
import { NbdTunnel } from './nbd-tunnel.js';
import type { Dag } from '../shared/dag.js';
import type { NodeApi } from '../xianet/api/node-api.js';
import { WellKnownSid, XidType } from '../shared/xid.js';
import type { QmpClient } from './qmp-client.js';

export type DiskPhaseName = 'mirror-sync' | 'ready' | 'ram' | 'switchover' | 'complete';

export interface DiskPhase {
  phase: DiskPhaseName;
  /** ms after the migration started (the mirror's start). */
  startMs: number;
  endMs?: number;
}

export interface DiskSample {
  /** ms after the migration started. */
  t: number;
  /**
   * What the mirror has copied, of what it has to (`total`): QEMU's measure, the disk's
   * allocated regions and what the guest rewrites meanwhile (the rest of the target is
   * zeroed in one go).
   */
  mirrored: number;
  total: number;
  /** NBD bytes that crossed the tunnel towards the destination so far. */
  wireBytes: number;
  /** Measured between this sample and the last (bytes/s). */
  rateBytesPerSecond: number;
}

export interface DiskReport {
  status: 'completed' | 'failed' | 'cancelled';
  error?: string;
  /** The source's disk. */
  device: string;
  node: string;
  format: string;
  file: string;
  /** Its guest-visible size. */
  bytes: number;
  target: { address: string; node: string; format: string; file: string; bytes: number };
  /** What the mirror copied, in QEMU's measure (see DiskSample.mirrored). */
  mirroredBytes: number;
  /** NBD on the tunnel: towards the destination (requests and data) and back (zeroes: no tunnel, QEMU's NBD over TCP). */
  wire: { toTarget: number; fromTarget: number; connections: number };
  /** How NBD went: through the tunnel over xianet, or QEMU's own NBD over TCP (the baseline). */
  nbdPath: 'xia-tunnel' | 'tcp';
  /** write-blocking once ready, or background (QEMU without block-job-change). */
  copyMode: 'write-blocking' | 'background';
  phases: DiskPhase[];
  samples: DiskSample[];
}

export interface DiskMigrationOptions {
  qmp: QmpClient;
  /** Names the source VM in errors. */
  where: string;
  /** Which disk, if the VM has several. */
  device?: string;
  /** Opens a STREAM to the disk target (control and NBD alike). */
  connect: () => Promise<Duplex>;
  /** The disk target's address, for the report and errors. */
  address: string;
  /**
   * TCP/IP baseline: the host to reach the destination's NBD export on, where the target
   * says it listens on every address (0.0.0.0 or ::) — the host the control connection went to.
   */
  nbdHost?: string;
  /** The mirror's rate cap (bytes/s); default none. */
  maxBandwidth?: number;
  /** How long the disk target may take to answer (default 15 s). */
  answerTimeoutMs?: number;
  logger?: Logger;
}

/**
 * Where the disk target of a destination listens by default: the host of the RAM
 * migration's receiver (`--to`), on the disk SID — its service SID replaced, or the SID
 * added to a bare host DAG.
 */
export function diskTargetAddress(receiver: Dag): Dag {
  if (receiver.sink.type === XidType.SID) return receiver.withNode(receiver.length - 1, WellKnownSid.DISK);
  return receiver.append(WellKnownSid.DISK);
}

/** How long a disk stream (control or NBD) may hear nothing from the disk target before it is lost. */
const DISK_STREAM_OUTAGE_MS = 15_000;

/**
 * Connections to the disk target over XIA. They are idle for long stretches (a quiet
 * guest writes nothing once the mirror is ready): the outage timeout must be well past
 * STREAM's 5 s keepalive, or a quiet stream times out.
 */
export function connectDiskTargetXia(api: NodeApi, target: Dag): () => Promise<Duplex> {
  return () => api.connect(target, { connectTimeoutMs: 5000, outageTimeoutMs: DISK_STREAM_OUTAGE_MS });
}

export class DiskMigration {
  private readonly phases: DiskPhase[] = [];
  private readonly samples: DiskSample[] = [];
  private copyMode: DiskReport['copyMode'] = 'background';
  private mirrored = 0;
  /** finish() has begun: what closes from now on is ours closing it. */
  private over = false;
  private failure: string | undefined;
  private readonly failureListeners = new Set<(reason: string) => void>();
  private t0 = performance.now();

  private constructor(
    private readonly options: DiskMigrationOptions,
    readonly disk: BlockDisk,
    private readonly target: Extract<DiskMessage, { type: typeof DiskMessageType.TARGET }>,
    private readonly control: DiskChannel,
    private readonly tunnel: NbdTunnel,
    private readonly mirror: DiskMirror,
    private readonly logger: Logger,
  ) {
    const fail = (reason: string): void => {
      if (this.over || this.failure) return;
      this.failure = reason;
      this.logger.warn('disk.failed', { reason });
      for (const listener of this.failureListeners) listener(reason);
    };
    tunnel.onLost(fail);
    mirror.onFailure(fail);
    control.onClose((reason) => fail(`the disk target's control connection was lost: ${reason}`));
    control.onMessage((message) => {
      if (message.type === DiskMessageType.ABORT) fail(`the disk target aborted: ${message.reason}`);
      else if (message.type !== DiskMessageType.RELEASED) control.close(`unexpected disk message ${message.type} from the target`);
      else this.released?.();
    });
  }

  private released: (() => void) | undefined;

  /**
   * Everything checked before anything moves: the source has a disk, the target answers
   * and takes a disk of this size, the source QEMU opens the target through the tunnel.
   * Throws a one-line error otherwise, with nothing left behind.
   */
  static async prepare(options: DiskMigrationOptions): Promise<DiskMigration> {
    const logger = (options.logger ?? silentLogger()).child({ component: 'mover', role: 'disk' });
    const disk = selectDisk(disksOf(await options.qmp.execute('query-block')), options.device, options.where);
    const session = randomBytes(16);
    let control: DiskChannel;
    try {
      control = new DiskChannel(await options.connect());
    } catch (error) {
      throw new XmigError('ERR_UNREACHABLE', `cannot reach the disk target at ${options.address} (is xmig disk-target running next to the destination QEMU?): ${errorMessage(error)}`, { cause: error });
    }
    const tunnel = new NbdTunnel({ connect: options.connect, session, logger });
    const mirror = new DiskMirror(options.qmp, disk, session.toString('hex').slice(0, 8));
    try {
      await control.send({ type: DiskMessageType.OPEN_CONTROL, session, sourceBytes: disk.bytes, source: `${diskName(disk)} ${disk.format} ${disk.file}` });
      const answer = await control.next(options.answerTimeoutMs ?? 15_000, 'answer');
      if (answer.type === DiskMessageType.REFUSED) throw new XmigError('ERR_CONFIG', answer.message);
      if (answer.type !== DiskMessageType.TARGET) throw new XmigError('ERR_MIGRATION', `the disk target answered ${answer.type}, not TARGET`);
      const mismatch = sizeMismatch(disk.bytes, answer.bytes, `${answer.node} (${answer.file})`);
      if (mismatch) throw new XmigError('ERR_CONFIG', mismatch);
      let server: NbdServer;
      if (answer.nbd) {
        const { host, port } = parseSocketAddress(answer.nbd);
        const anyAddress = host === '0.0.0.0' || host === '::' || host === '';
        server = { type: 'inet', host: anyAddress ? (options.nbdHost ?? '127.0.0.1') : host, port };
      } else {
        await tunnel.start();
        server = { type: 'unix', path: tunnel.path };
      }
      await mirror.attach(server, answer.exportName);
      logger.info('disk.prepared', { disk: diskName(disk), bytes: disk.bytes, target: options.address, format: answer.format });
      return new DiskMigration(options, disk, answer, control, tunnel, mirror, logger);
    } catch (error) {
      await mirror.abort();
      await tunnel.stop();
      await control.send({ type: DiskMessageType.ABORT, reason: errorMessage(error) }).catch(() => undefined);
      control.close('not migrating');
      throw error;
    }
  }

  /** Something failed under way: the caller must cancel the RAM migration and `finish(false)`. */
  onFailure(listener: (reason: string) => void): void {
    this.failureListeners.add(listener);
    if (this.failure) listener(this.failure);
  }

  get failed(): string | undefined {
    return this.failure;
  }

  private enter(phase: DiskPhaseName): void {
    const now = Math.round(performance.now() - this.t0);
    const current = this.phases[this.phases.length - 1];
    if (current && current.endMs === undefined) current.endMs = now;
    this.phases.push({ phase, startMs: now });
  }

  /** Where the mirror is now, as a sample (also kept for the report). */
  async sample(): Promise<DiskSample | undefined> {
    const progress = await this.mirror.progress().catch(() => undefined);
    if (!progress) return undefined;
    this.mirrored = progress.offset;
    const t = Math.round(performance.now() - this.t0);
    const wireBytes = this.tunnel.counts.toTarget;
    const previous = this.samples[this.samples.length - 1];
    const sample: DiskSample = {
      t,
      mirrored: progress.offset,
      total: progress.len,
      wireBytes,
      rateBytesPerSecond: previous && t > previous.t ? Math.max(0, ((wireBytes - previous.wireBytes) * 1000) / (t - previous.t)) : 0,
    };
    this.samples.push(sample);
    return sample;
  }

  /**
   * Copies the disk until the mirror is ready and write-blocking. `startedAt` (a
   * performance.now()) is time 0 of the phases. Rejects on `signal` (its reason) or a failure.
   */
  async sync(startedAt: number, signal: AbortSignal, onSample?: (sample: DiskSample) => void, pollMs = 250): Promise<void> {
    this.t0 = startedAt;
    this.enter('mirror-sync');
    const failed = new AbortController();
    this.onFailure((reason) => failed.abort(new XmigError('ERR_MIGRATION', reason)));
    const either = AbortSignal.any([signal, failed.signal]);
    await this.mirror.start(this.options.maxBandwidth);
    const timer = setInterval(() => {
      void this.sample().then((s) => s && onSample?.(s));
    }, pollMs);
    try {
      await this.mirror.ready(either);
    } finally {
      clearInterval(timer);
    }
    await this.sample();
    this.enter('ready');
    if (await this.mirror.activate()) this.copyMode = 'write-blocking';
    this.logger.info('disk.ready', { phase: 'ready', ms: Math.round(performance.now() - this.t0), copyMode: this.copyMode, wireBytes: this.tunnel.counts.toTarget });
    if (either.aborted) throw either.reason instanceof Error ? either.reason : new XmigError('ERR_MIGRATION', String(either.reason));
  }

  /** The RAM migration has been issued. */
  ramStarted(): void {
    this.enter('ram');
  }

  /**
   * The VM is stopped before its device state: the mirror completes, the target lets go
   * of the export (so the destination can take its disk), and the caller continues.
   */
  async switchover(): Promise<void> {
    this.enter('switchover');
    // The NBD connection closes when the node goes; a failure now shows as the job's own error.
    this.tunnel.quiesce();
    const last = await this.mirror.complete();
    if (last) this.mirrored = last.len;
    const released = new Promise<void>((resolve) => (this.released = resolve));
    await this.control.send({ type: DiskMessageType.MIRRORED });
    let timer: NodeJS.Timeout | undefined;
    const gone = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new XmigError('ERR_TIMEOUT', 'the disk target did not release its export within 15 s')), 15_000);
      this.control.onClose((reason) => reject(new XmigError('ERR_CONNECTION', `the disk target's control connection was lost: ${reason}`)));
    });
    try {
      await Promise.race([released, gone]);
    } finally {
      clearTimeout(timer);
    }
    await this.tunnel.stop();
    this.enter('complete');
  }

  /**
   * The end, either way. Completed: the target hears DONE. Otherwise: the mirror is
   * cancelled and the node removed (the source runs on its own disk as before), and the
   * target hears ABORT and discards what it got.
   */
  async finish(status: DiskReport['status'], error?: string): Promise<DiskReport> {
    const now = Math.round(performance.now() - this.t0);
    const current = this.phases[this.phases.length - 1];
    if (current && current.endMs === undefined) current.endMs = now;
    this.over = true;
    if (status === 'completed') {
      await this.control.send({ type: DiskMessageType.DONE }).catch(() => undefined);
      await this.control.end();
    } else {
      await this.mirror.abort();
      await this.control.send({ type: DiskMessageType.ABORT, reason: error ?? this.failure ?? status }).catch(() => undefined);
      await this.control.end().catch(() => undefined);
    }
    await this.tunnel.stop();
    this.control.close('migration over');
    const wire = this.tunnel.counts;
    const report: DiskReport = {
      status,
      ...(status !== 'completed' && (error ?? this.failure) ? { error: error ?? this.failure } : {}),
      device: diskName(this.disk),
      node: this.disk.node,
      format: this.disk.format,
      file: this.disk.file,
      bytes: this.disk.bytes,
      target: { address: this.options.address, node: this.target.node, format: this.target.format, file: this.target.file, bytes: this.target.bytes },
      mirroredBytes: this.mirrored,
      wire: { toTarget: wire.toTarget, fromTarget: wire.fromTarget, connections: wire.connections },
      nbdPath: this.target.nbd ? 'tcp' : 'xia-tunnel',
      copyMode: this.copyMode,
      phases: this.phases,
      samples: this.samples,
    };
    this.logger.info('disk.done', { phase: status, bytes: report.mirroredBytes, wireBytes: wire.toTarget, ms: now });
    return report;
  }
}
