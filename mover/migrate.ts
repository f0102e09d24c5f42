/**
 * `xmig migrate`: drives a source QEMU over QMP through a live migration, over
 * the mover (`exec:xmig send ...`, XIA or TCP) or QEMU's own `tcp:`, and reports
 * total time, downtime, setup time, bytes, passes and rates, from QEMU and from the
 * mover. The parts: migration-params.ts sets (and afterwards restores) capabilities
 * and parameters, migration-watch.ts follows the migration and carries out a cancel
 * or a timeout, migration-status.ts publishes its progress for `xmig migrate status`.
 * Whatever happens, the source VM is left running unless the migration completed.
 */
import { readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { XmigError, errorMessage } from '../shared/errors.js';
import { XMIG_NODE_FLAGS } from '../shared/node-flags.js';
import { tuneMigration, type AppliedTuning, type MigrationTuning } from './migration-params.js';
import { statusFileFor, writeStatus, type MigrationStatus } from './migration-status.js';
import { watchMigration, type MigrationSample, type QueryMigrate, type TimeoutAction } from './migration-watch.js';
import { QmpClient } from './qmp-client.js';
import type { SendReport } from './sender.js';

export type { MigrationSample, TimeoutAction } from './migration-watch.js';

export type MigrateTransport = 'xia' | 'tcp' | 'qemu-tcp';

export interface MigrateOptions {
  /** The source QEMU's QMP socket. */
  qmp: string;
  /** xia: a DAG or name; tcp and qemu-tcp: host:port. */
  to: string;
  transport: MigrateTransport;
  /** Block migration (the disk too). */
  disk?: boolean;
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
  /** What cancelled it, and when (ms after the migration was issued). */
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
  return `exec:${xmig} ${args.join(' ')}`;
}

export async function migrate(options: MigrateOptions): Promise<MigrationReport> {
  const qmp = await QmpClient.connect(options.qmp);
  const statsFile = join(tmpdir(), `xmig-send-${process.pid}-${Date.now()}.json`);
  const statusFile = options.statusFile ?? statusFileFor(options.qmp);
  let tuning: AppliedTuning | undefined;
  try {
    const version = await qmp.execute<{ qemu: { major: number; minor: number; micro: number } }>('query-version');
    const qemuVersion = `${version.qemu.major}.${version.qemu.minor}.${version.qemu.micro}`;
    if (options.disk && version.qemu.major >= 9) {
      // QEMU 9.1 removed `blk` block migration; the disk goes by blockdev-mirror + NBD there.
      throw new XmigError('ERR_MIGRATION', `QEMU ${qemuVersion} has no block migration (blk); use the disk mirror`);
    }
    const wanted: MigrationTuning = {
      maxBandwidth: options.maxBandwidth,
      downtimeLimitMs: options.downtimeLimitMs ?? 300,
      autoConverge: options.autoConverge,
      ...(options.xbzrleCacheBytes ? { xbzrle: { cacheBytes: options.xbzrleCacheBytes } } : {}),
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
    await qmp.execute('migrate', { uri: migrationUri(options, statsFile), ...(options.disk ? { blk: true } : {}) });
    const watched = await watchMigration(qmp, started, {
      pollMs: options.pollMs,
      signal: options.signal,
      abandon: options.abandon,
      timeoutMs: options.timeoutMs,
      timeoutAction: options.timeoutAction,
      onSample: (sample) => {
        options.onProgress?.(sample);
        publish({ status: sample.status, passes: sample.passes, transferredBytes: sample.transferred, remainingBytes: sample.remaining, totalBytes: sample.total, rateBytesPerSecond: Math.round(sample.rateBytesPerSecond) });
      },
    });
    const info = watched.info;
    let ended = (watched.abandoned ? 'cancelled' : info.status) as MigrationReport['status'];
    if (ended !== 'completed' && ended !== 'failed' && ended !== 'cancelled') ended = 'failed';
    const elapsedMs = Math.round((watched.completedAtMs ?? performance.now() - started));
    const stop = qmp.events.find((e) => e.event === 'STOP' && e.timestamp);
    let mover: MigrationReport['mover'];
    try {
      mover = JSON.parse(readFileSync(statsFile, 'utf8')) as MigrationReport['mover'];
    } catch {
      mover = undefined; // qemu-tcp, or the mover never wrote its figures
    }
    const bytes = Math.max(0, ...watched.samples.map((s) => s.transferred));
    const last = watched.samples[watched.samples.length - 1];
    const error = ended === 'completed' ? undefined : (mover?.error ?? info['error-desc'] ?? (watched.cancelReason === 'timeout' ? `not completed within ${options.timeoutMs} ms` : undefined));
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
      samples: watched.samples,
    };
    publish({ status: report.status, downtimeMs: report.downtimeMs, forcedSwitchover: watched.forcedSwitchoverAtMs !== undefined, error: report.error, finished: true });
    return report;
  } catch (error) {
    if (error instanceof XmigError) throw error;
    throw new XmigError('ERR_MIGRATION', `migration failed: ${errorMessage(error)}`, { cause: error });
  } finally {
    // The next migration of this VM starts from QEMU's own settings, not ours.
    await tuning?.restore().catch(() => undefined);
    rmSync(statsFile, { force: true });
    await qmp.close();
  }
}
