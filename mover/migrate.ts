/**
 * `xmig migrate`: drives a source QEMU over QMP through a live migration, over
 * the mover (`exec:xmig send ...`, XIA or TCP) or QEMU's own `tcp:`, and reports
 * total time, downtime, setup time, bytes, passes and rates, from QEMU and from the
 * mover. The parts: migration-params.ts sets (and afterwards restores) capabilities
 * and parameters, migration-watch.ts follows the migration and carries out a cancel
 * or a timeout, migration-status.ts publishes its progress for `xmig migrate status`.
 * Whatever happens, the source VM is left running unless the migration completed.
 *
 * With a disk (full migration), disk-migration.ts mirrors it to `xmig disk-target` on
 * the destination host first, over an NBD tunnel on xianet; the RAM migration starts
 * once the mirror is ready and write-blocking, and at the switchover (QEMU stopped
 * before the device state: pause-before-switchover) the mirror completes and the
 * destination takes its disk back before QEMU goes on. Time 0 of a full migration is
 * the start of the mirror.
 */
import { readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { XmigError, errorMessage } from '../shared/errors.js';
import { silentLogger, type Logger } from '../shared/logger.js';
import { XMIG_NODE_FLAGS } from '../shared/node-flags.js';
import type { Duplex } from 'node:stream';
import { DiskMigration, type DiskReport, type DiskSample } from './disk-migration.js';
import { tuneMigration, type AppliedTuning, type MigrationTuning } from './migration-params.js';
import { statusFileFor, writeStatus, type MigrationStatus } from './migration-status.js';
import { watchMigration, type MigrationSample, type QueryMigrate, type TimeoutAction } from './migration-watch.js';
import { QmpClient } from './qmp-client.js';
import { migrateInNode, moverSocketOf } from './mover-client.js';
import { NodeClient } from '../xianet/api/api-client.js';
import { isDagText, resolveTarget } from '../xianet/names/resolve-target.js';
import type { SendReport } from './sender.js';

export type { MigrationSample, TimeoutAction } from './migration-watch.js';

export type MigrateTransport = 'xia' | 'tcp' | 'qemu-tcp';

export interface MigrateOptions {
  /** The source QEMU's QMP socket. */
  qmp: string;
  /** xia: a DAG or name; tcp and qemu-tcp: host:port. */
  to: string;
  transport: MigrateTransport;
  /**
   * Full migration: the disk too, mirrored to `xmig disk-target` at `target` (its disk SID
   * on the destination host) through `api`, the local node. The caller owns `api`.
   */
  disk?: {
    /** Opens a connection to the disk target (a STREAM to its disk SID; a TCP socket for the baseline). */
    connect: () => Promise<Duplex>;
    /** Its address, for the report and errors. */
    address: string;
    /** TCP baseline: the host of the destination's NBD export, where it listens on every address. */
    nbdHost?: string;
    /** Which disk, if the VM has several. */
    device?: string;
    /** The mirror's rate cap (bytes/s). */
    maxBandwidth?: number;
  };
  /** Called while the disk is mirrored, about every `pollMs`. */
  onDiskProgress?: (sample: DiskSample) => void;
  logger?: Logger;
  /** Bytes per second (QEMU 7.2 caps at 32 MiB/s otherwise); default 10 GiB/s, i.e. no cap. */
  maxBandwidth?: number;
  /** Longest pause QEMU may take for the final stop-and-copy (default 300 ms). */
  downtimeLimitMs?: number;
  autoConverge?: boolean;
  /** XBZRLE delta compression of re-sent pages, with this many bytes of page cache. */
  xbzrleCacheBytes?: number;
  /** When the migration has not completed after this long: `timeoutAction`. */
  timeoutMs?: number;
  /** abort: cancel it (the VM runs on at the source); switchover: make QEMU switch over now, whatever is left. */
  timeoutAction?: TimeoutAction;
  /** Where to publish progress for `xmig migrate status` (default: statusFileFor(qmp); '' for none). */
  statusFile?: string;
  /** How QEMU starts xmig (a shell word list), default: this Node.js and this xmig. */
  xmigCommand?: string;
  /** The local node's API socket, for `send` over XIA. */
  api?: string;
  /**
   * XIA: `xmig send --via-node`, the migration run inside the local node (mover-service.ts),
   * which takes QEMU's pipe over (stdio-handover.ts). The default; false runs the sender's
   * own XIA stack in `xmig send` (the stream copied through it, chunks over the API).
   */
  viaNode?: boolean;
  /**
   * XIA: how QEMU's stream reaches the mover. exec (default, the paper's mode): QEMU's child
   * `xmig send`; unix: QEMU's own `unix:` channel straight into the local node, which runs
   * the migration (qemu-channel.ts): no process between them, nothing to start while QEMU
   * waits. The destination's QEMU then listens on `-incoming unix:PATH` and its node is
   * told by `xmig recv --qemu-socket PATH`.
   */
  channel?: 'exec' | 'unix';
  pollMs?: number;
  /** Cancels the migration (QMP migrate_cancel); the source VM goes on running. */
  signal?: AbortSignal;
  /** Stop waiting for QEMU at once (a second Ctrl-C): the report says what was known. */
  abandon?: AbortSignal;
  onProgress?: (sample: MigrationSample) => void;
}

export interface MigrationReport {
  status: 'completed' | 'failed' | 'cancelled';
  transport: MigrateTransport;
  /** Why it did not complete: the mover's own words first (QEMU only sees a broken pipe), then QEMU's. */
  error?: string;
  /** What cancelled it, and when (ms after the migration was issued; with a disk, after the mirror started). */
  cancelReason?: 'signal' | 'timeout';
  cancelledAtMs?: number;
  /** The timeout forced the switchover (downtime limit raised past what was left), at this ms. */
  forcedSwitchoverAtMs?: number;
  /** `xmig migrate` stopped waiting before QEMU said how it ended (a second Ctrl-C). */
  abandoned?: boolean;
  qemuVersion?: string;
  /** When the migrate command was issued (epoch ms). */
  startedAt: number;
  /** When the source VM stopped for the final stop-and-copy (epoch ms, from QEMU's STOP event). */
  sourceStoppedAt?: number;
  /**
   * ms from issuing the migration to QEMU reporting it completed (or how it ended). With
   * exec: QEMU completes only once the mover has delivered everything, while its own
   * `total-time` ends when it has written the last byte into the pipe.
   */
  elapsedMs: number;
  totalTimeMs?: number;
  downtimeMs?: number;
  setupTimeMs?: number;
  /** RAM bytes QEMU sent (the most it reported: a cancelled migration's last report has none). */
  bytes?: number;
  ramTotal?: number;
  duplicatePages?: number;
  /** QEMU's RAM passes (dirty-sync-count), not the mover's rounds. */
  passes?: number;
  /** bytes / elapsed, measured. */
  meanRateBytesPerSecond?: number;
  /** QEMU's own estimate of its last pass (Mbit/s). */
  qemuMbps?: number;
  xbzrle?: QueryMigrate['xbzrle-cache'];
  throttlePercent?: number;
  tuning?: Pick<AppliedTuning, 'capabilities' | 'parameters'>;
  mover?: SendReport & { transport: string; error?: string };
  /** Full migration: the disk's own figures and phases (bytes mirrored and on the wire apart from RAM's). */
  disk?: DiskReport;
  samples: MigrationSample[];
}

const DEFAULT_XMIG = [process.execPath, ...XMIG_NODE_FLAGS, new URL('../bin/xmig.js', import.meta.url).pathname].join(' ');

/** The QEMU migration URI for a transport: the mover through a shell command, or QEMU's tcp:. */
export function migrationUri(options: MigrateOptions, statsFile: string): string {
  if (options.transport === 'qemu-tcp') return `tcp:${options.to}`;
  const xmig = options.xmigCommand ?? DEFAULT_XMIG;
  const quote = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`;
  const args = ['send', '--transport', options.transport, '--to', quote(options.to), '--stats', quote(statsFile)];
  if (options.transport === 'xia' && options.api) args.push('--api', quote(options.api));
  if (options.transport === 'xia' && options.viaNode !== false) args.push('--via-node');
  return `exec:${xmig} ${args.join(' ')}`;
}

export async function migrate(options: MigrateOptions): Promise<MigrationReport> {
  const qmp = await QmpClient.connect(options.qmp);
  const statsFile = join(tmpdir(), `xmig-send-${process.pid}-${Date.now()}.json`);
  const statusFile = options.statusFile ?? statusFileFor(options.qmp);
  const logger = options.logger ?? silentLogger();
  let tuning: AppliedTuning | undefined;
  let disk: DiskMigration | undefined;
  let diskReport: DiskReport | undefined;
  const finishDisk = async (status: DiskReport['status'], error?: string): Promise<void> => {
    const d = disk;
    disk = undefined;
    if (d) diskReport = await d.finish(status, error);
  };
  try {
    const version = await qmp.execute<{ qemu: { major: number; minor: number; micro: number } }>('query-version');
    const qemuVersion = `${version.qemu.major}.${version.qemu.minor}.${version.qemu.micro}`;
    if (options.disk) {
      // Before anything moves: the VM has a disk, the target takes one of its size, QEMU opens it.
      disk = await DiskMigration.prepare({
        qmp,
        where: `--disk: the source VM (QMP ${options.qmp})`,
        device: options.disk.device,
        connect: options.disk.connect,
        address: options.disk.address,
        nbdHost: options.disk.nbdHost,
        maxBandwidth: options.disk.maxBandwidth,
        logger,
      });
    }
    const wanted: MigrationTuning = {
      maxBandwidth: options.maxBandwidth,
      downtimeLimitMs: options.downtimeLimitMs ?? 300,
      autoConverge: options.autoConverge,
      ...(options.xbzrleCacheBytes ? { xbzrle: { cacheBytes: options.xbzrleCacheBytes } } : {}),
      // Set either way: a VM left with it on by a crashed run would hang at every switchover.
      pauseBeforeSwitchover: disk !== undefined,
    };
    tuning = await tuneMigration(qmp, wanted);
    const startedAt = Date.now();
    const started = performance.now();
    const status: MigrationStatus = {
      pid: process.pid,
      qmp: options.qmp,
      to: options.to,
      transport: options.transport,
      startedAt,
      updatedAt: startedAt,
      status: 'setup',
      passes: 0,
      transferredBytes: 0,
      remainingBytes: 0,
      totalBytes: 0,
      rateBytesPerSecond: 0,
      finished: false,
    };
    const publish = (change: Partial<MigrationStatus>): void => {
      if (!statusFile) return;
      Object.assign(status, change, { updatedAt: Date.now() });
      try {
        writeStatus(statusFile, status);
      } catch {
        // A status file we cannot write must not fail the migration.
      }
    };
    publish({});
    const base = { transport: options.transport, qemuVersion, startedAt, tuning: { capabilities: tuning.capabilities, parameters: tuning.parameters } };
    if (disk) {
      const ended = await syncDisk(disk, started, options, (sample) => {
        options.onDiskProgress?.(sample);
        publish({ status: 'mirror-sync', disk: { phase: 'mirror-sync', mirroredBytes: sample.mirrored, totalBytes: sample.total, wireBytes: sample.wireBytes } });
      });
      if (ended) {
        await finishDisk(ended.status, ended.error);
        const report: MigrationReport = { ...base, ...ended, elapsedMs: Math.round(performance.now() - started), disk: diskReport, samples: [] };
        publish({ status: report.status, error: report.error, finished: true });
        return report;
      }
    }
    const diskFailed = new AbortController();
    disk?.onFailure((reason) => diskFailed.abort(new XmigError('ERR_MIGRATION', reason)));
    const diskSampler = disk ? setInterval(() => void disk?.sample().catch(() => undefined), options.pollMs ?? 250) : undefined;
    disk?.ramStarted();
    const d = disk;
    let watched;
    // unix: the node listens for QEMU before QEMU is told where to go.
    const inNode = options.transport === 'xia' && options.channel === 'unix' ? await startInNode(options, logger) : undefined;
    try {
      await qmp.execute('migrate', { uri: inNode ? `unix:${inNode.path}` : migrationUri(options, statsFile) });
      watched = await watchMigration(qmp, started, {
        pollMs: options.pollMs,
        signal: options.signal,
        abandon: options.abandon,
        timeoutMs: options.timeoutMs,
        timeoutAction: options.timeoutAction,
        ...(d ? { onPreSwitchover: () => d.switchover(), failure: diskFailed.signal } : {}),
        onSample: (sample) => {
          options.onProgress?.(sample);
          publish({ status: sample.status, passes: sample.passes, transferredBytes: sample.transferred, remainingBytes: sample.remaining, totalBytes: sample.total, rateBytesPerSecond: Math.round(sample.rateBytesPerSecond) });
        },
      });
    } catch (error) {
      inNode?.cancel();
      throw error;
    } finally {
      clearInterval(diskSampler);
    }
    const info = watched.info;
    let ended = (watched.abandoned ? 'cancelled' : info.status) as MigrationReport['status'];
    let inNodeReport: MigrationReport['mover'];
    let inNodeError: string | undefined;
    if (inNode) {
      // QEMU completes once its last byte is in the socket; the migration is over when the
      // receiver has it all. Not completed: the node's migration ends too (the stream it has is short).
      if (ended !== 'completed') inNode.cancel();
      const outcome = await inNode.outcome(options.abandon);
      if (outcome.ok) inNodeReport = { ...(outcome.report as unknown as SendReport), transport: 'xia' };
      else {
        inNodeError = outcome.error;
        inNodeReport = { transport: 'xia', error: outcome.error } as MigrationReport['mover'];
        if (ended === 'completed') {
          // QEMU thinks it is done and has the VM paused: the destination never got it all, so the VM runs on here.
          ended = 'failed';
          await qmp.execute('cont').catch((error: unknown) => logger.error('migrate.resume-failed', { phase: 'failed', error: errorMessage(error) }));
        }
      }
    }
    if (ended !== 'completed' && ended !== 'failed' && ended !== 'cancelled') ended = 'failed';
    // Cancelled because the disk failed: that is a failure, and the disk's reason is the reason.
    if (ended !== 'completed' && watched.failure !== undefined) ended = 'failed';
    const elapsedMs = Math.round((watched.completedAtMs ?? performance.now() - started));
    const stop = qmp.events.find((e) => e.event === 'STOP' && e.timestamp);
    // QEMU's exec: migration ends when QEMU has written its last byte into `xmig send`, which
    // writes its figures only once the receiver has all of it: they may come a moment later.
    const mover: MigrationReport['mover'] = inNode ? inNodeReport : options.transport === 'qemu-tcp' ? undefined : await readMoverStats(statsFile, MOVER_STATS_WAIT_MS);
    const bytes = Math.max(0, ...watched.samples.map((s) => s.transferred));
    const last = watched.samples[watched.samples.length - 1];
    const error = ended === 'completed' ? undefined : (watched.failure ?? inNodeError ?? mover?.error ?? info['error-desc'] ?? (watched.cancelReason === 'timeout' ? `not completed within ${options.timeoutMs} ms` : undefined));
    await finishDisk(ended, error);
    const report: MigrationReport = {
      status: ended,
      transport: options.transport,
      ...(error ? { error } : {}),
      ...(watched.cancelReason ? { cancelReason: watched.cancelReason, cancelledAtMs: watched.cancelledAtMs } : {}),
      ...(watched.forcedSwitchoverAtMs !== undefined ? { forcedSwitchoverAtMs: watched.forcedSwitchoverAtMs } : {}),
      ...(watched.abandoned ? { abandoned: true } : {}),
      qemuVersion,
      startedAt,
      ...(stop?.timestamp ? { sourceStoppedAt: stop.timestamp.seconds * 1000 + stop.timestamp.microseconds / 1000 } : {}),
      elapsedMs,
      totalTimeMs: info['total-time'],
      downtimeMs: info.downtime,
      setupTimeMs: info['setup-time'],
      bytes,
      ramTotal: info.ram?.total ?? last?.total,
      duplicatePages: info.ram?.duplicate,
      passes: last?.passes,
      meanRateBytesPerSecond: elapsedMs > 0 ? Math.round((bytes * 1000) / elapsedMs) : undefined,
      qemuMbps: info.ram?.mbps,
      ...(info['xbzrle-cache'] ? { xbzrle: info['xbzrle-cache'] } : {}),
      ...(last?.throttlePercent !== undefined ? { throttlePercent: last.throttlePercent } : {}),
      tuning: { capabilities: tuning.capabilities, parameters: tuning.parameters },
      mover,
      ...(diskReport ? { disk: diskReport } : {}),
      samples: watched.samples,
    };
    publish({ status: report.status, downtimeMs: report.downtimeMs, forcedSwitchover: watched.forcedSwitchoverAtMs !== undefined, error: report.error, finished: true });
    return report;
  } catch (error) {
    await finishDisk('failed', errorMessage(error)).catch(() => undefined);
    if (error instanceof XmigError) throw error;
    throw new XmigError('ERR_MIGRATION', `migration failed: ${errorMessage(error)}`, { cause: error });
  } finally {
    // The next migration of this VM starts from QEMU's own settings, not ours.
    await tuning?.restore().catch(() => undefined);
    rmSync(statsFile, { force: true });
    await qmp.close();
  }
}

/** How long the report waits for `xmig send`'s figures after QEMU's migration has ended. */
export const MOVER_STATS_WAIT_MS = 10_000;

/** `xmig send --stats`'s figures, read once the file is there (written whole), or undefined at the deadline (the mover never wrote them). */
export async function readMoverStats(file: string, waitMs: number): Promise<MigrationReport['mover']> {
  const deadline = performance.now() + waitMs;
  for (;;) {
    try {
      return JSON.parse(readFileSync(file, 'utf8')) as MigrationReport['mover'];
    } catch {
      if (performance.now() >= deadline) return undefined;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
}

export interface InNodeSend {
  /** QEMU's socket: `migrate unix:<path>`. */
  path: string;
  /** Ends the node's migration now (QEMU's channel with it). */
  cancel(): void;
  /** How the node's migration ended; `abandon` stops waiting. */
  outcome(abandon?: AbortSignal): Promise<{ ok: true; report: Record<string, unknown> } | { ok: false; error: string }>;
}

/** How long the source node may take to listen for QEMU (it has only to bind a socket). */
const QEMU_LISTEN_DEADLINE_MS = 10_000;

/** The unix: channel's source end: the local node listening for QEMU, the migration on its stack. */
export async function startInNode(options: Pick<MigrateOptions, 'api' | 'to'>, logger: Logger, deadlineMs = QEMU_LISTEN_DEADLINE_MS): Promise<InNodeSend> {
  if (!options.api) throw new XmigError('ERR_CONFIG', "the unix: channel needs the local node's API socket (api)");
  let to: string;
  if (isDagText(options.to)) to = options.to;
  else {
    const api = await NodeClient.connect(options.api);
    try {
      to = (await resolveTarget(options.to, api)).toString();
    } finally {
      await api.close();
    }
  }
  const path = join(tmpdir(), `xmig-qemu-${process.pid}-${Date.now().toString(36)}.sock`);
  const controller = new AbortController();
  let listening: () => void = () => undefined;
  const ready = new Promise<void>((resolve) => (listening = resolve));
  const result = migrateInNode(moverSocketOf(options.api), { op: 'send', to, qemuSocket: path }, { onQemuListening: () => listening(), signal: controller.signal });
  result.catch(() => undefined);
  // The node answers at once; one that does not within the deadline is not one to hand QEMU to.
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new XmigError('ERR_TIMEOUT', `the node's mover did not listen for QEMU within ${deadlineMs} ms`)), deadlineMs);
  });
  try {
    await Promise.race([ready, result, late]);
  } catch (error) {
    controller.abort(error);
    throw error;
  } finally {
    clearTimeout(timer);
  }
  logger.info('migrate.qemu-channel', { phase: 'setup', path, to });
  return {
    path,
    cancel: () => controller.abort(new XmigError('ERR_MIGRATION', 'QEMU did not complete the migration')),
    async outcome(abandon) {
      let onAbandon: (() => void) | undefined;
      const stopped = new Promise<never>((_, reject) => {
        onAbandon = () => reject(new XmigError('ERR_MIGRATION', 'stopped waiting for the node'));
        if (abandon?.aborted) onAbandon();
        abandon?.addEventListener('abort', onAbandon, { once: true });
      });
      stopped.catch(() => undefined);
      try {
        return { ok: true, report: await Promise.race([result, stopped]) };
      } catch (error) {
        controller.abort(error);
        return { ok: false, error: errorMessage(error) };
      } finally {
        if (onAbandon) abandon?.removeEventListener('abort', onAbandon);
      }
    },
  };
}

/**
 * The disk's first phase: mirrored until ready. Returns how the migration ended if it
 * ended here (cancelled by the signal or the timeout, or the mirror failed); undefined
 * when the RAM migration may start.
 */
async function syncDisk(
  disk: DiskMigration,
  started: number,
  options: MigrateOptions,
  onSample: (sample: DiskSample) => void,
): Promise<Pick<MigrationReport, 'status' | 'error' | 'cancelReason' | 'cancelledAtMs'> | undefined> {
  const stop = new AbortController();
  const onSignal = (): void => stop.abort('signal');
  options.signal?.addEventListener('abort', onSignal, { once: true });
  if (options.signal?.aborted) onSignal();
  // A timeout while the disk is still being copied cannot be met by forcing a switchover: it aborts.
  const timer = options.timeoutMs !== undefined ? setTimeout(() => stop.abort('timeout'), Math.max(0, options.timeoutMs - (performance.now() - started))) : undefined;
  try {
    await disk.sync(started, stop.signal, onSample, options.pollMs);
    return undefined;
  } catch (error) {
    const at = Math.round(performance.now() - started);
    if (stop.signal.aborted) {
      const reason = stop.signal.reason as 'signal' | 'timeout';
      return { status: 'cancelled', cancelReason: reason, cancelledAtMs: at, ...(reason === 'timeout' ? { error: `the disk was not mirrored within ${options.timeoutMs} ms` } : {}) };
    }
    return { status: 'failed', error: errorMessage(error) };
  } finally {
    clearTimeout(timer);
    options.signal?.removeEventListener('abort', onSignal);
  }
}
