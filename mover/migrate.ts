/**
 * `xmig migrate`: drives a source QEMU over QMP through a live migration, over
 * the mover (`exec:xmig send ...`, XIA or TCP) or QEMU's own `tcp:`, watches
 * `query-migrate` for progress, and reports total time, downtime, setup time,
 * bytes, rounds and throughput, from QEMU and from the mover.
 */
import { readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { XmigError } from '../shared/errors.js';
import { XMIG_NODE_FLAGS } from '../shared/node-flags.js';
import { QmpClient } from './qmp-client.js';
import type { SendReport } from './sender.js';

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
  /** How QEMU starts xmig (a shell word list), default: this Node.js and this xmig. */
  xmigCommand?: string;
  /** The local node's API socket, for `send` over XIA. */
  api?: string;
  pollMs?: number;
  /** Cancels the migration (QMP migrate_cancel); the source VM goes on running. */
  signal?: AbortSignal;
  onProgress?: (sample: MigrationSample) => void;
}

export interface MigrationSample {
  /** ms since the migration started. */
  t: number;
  status: string;
  transferred: number;
  remaining: number;
  total: number;
  mbps: number;
  dirtySyncCount: number;
}

export interface MigrationReport {
  status: 'completed' | 'failed' | 'cancelled';
  transport: MigrateTransport;
  error?: string;
  /** When the migrate command was issued (epoch ms). */
  startedAt: number;
  /** When the source VM stopped for the final stop-and-copy (epoch ms, from QEMU's STOP event). */
  sourceStoppedAt?: number;
  /**
   * ms from issuing the migration to QEMU reporting it completed. With exec: QEMU
   * completes only once the mover has delivered everything, while its own
   * `total-time` ends when it has written the last byte into the pipe.
   */
  elapsedMs: number;
  totalTimeMs?: number;
  downtimeMs?: number;
  setupTimeMs?: number;
  bytes?: number;
  ramTotal?: number;
  duplicatePages?: number;
  rounds?: number;
  throughputMbps?: number;
  mover?: SendReport & { transport: string };
  samples: MigrationSample[];
}

interface QueryMigrate {
  status?: string;
  'total-time'?: number;
  downtime?: number;
  'setup-time'?: number;
  'error-desc'?: string;
  ram?: {
    transferred: number;
    remaining: number;
    total: number;
    duplicate: number;
    mbps: number;
    'dirty-sync-count': number;
  };
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
  const samples: MigrationSample[] = [];
  try {
    await qmp.execute('migrate-set-capabilities', { capabilities: [{ capability: 'events', state: true }] });
    await qmp.execute('migrate-set-parameters', {
      'max-bandwidth': options.maxBandwidth ?? 10 * 1024 * 1024 * 1024,
      'downtime-limit': options.downtimeLimitMs ?? 300,
    });
    // QEMU 7.2 still has `blk` for block migration; later releases drop it for blockdev-mirror.
    const startedAt = Date.now();
    const started = performance.now();
    await qmp.execute('migrate', { uri: migrationUri(options, statsFile), ...(options.disk ? { blk: true } : {}) });
    const cancel = (): void => void qmp.execute('migrate_cancel').catch(() => undefined);
    options.signal?.addEventListener('abort', cancel, { once: true });
    if (options.signal?.aborted) cancel();
    let info: QueryMigrate;
    let completedAt: number | undefined;
    for (let settle = 0; ; ) {
      info = await qmp.execute<QueryMigrate>('query-migrate');
      const ram = info.ram;
      const sample: MigrationSample = {
        t: Math.round(performance.now() - started),
        status: info.status ?? 'none',
        transferred: ram?.transferred ?? 0,
        remaining: ram?.remaining ?? 0,
        total: ram?.total ?? 0,
        mbps: ram?.mbps ?? 0,
        dirtySyncCount: ram?.['dirty-sync-count'] ?? 0,
      };
      samples.push(sample);
      options.onProgress?.(sample);
      if (info.status === 'completed') completedAt ??= performance.now();
      if (info.status === 'completed' && !info['total-time'] && settle++ < 50) {
        // QEMU sets `completed` a moment before it fills in total-time and downtime.
        await new Promise((r) => setTimeout(r, 10));
        continue;
      }
      if (info.status === 'completed' || info.status === 'failed' || info.status === 'cancelled') break;
      await new Promise((r) => setTimeout(r, options.pollMs ?? 100));
    }
    const elapsedMs = Math.round((completedAt ?? performance.now()) - started);
    const stop = qmp.events.find((e) => e.event === 'STOP' && e.timestamp);
    const status = info.status as MigrationReport['status'];
    let mover: MigrationReport['mover'];
    try {
      mover = JSON.parse(readFileSync(statsFile, 'utf8')) as MigrationReport['mover'];
    } catch {
      mover = undefined; // qemu-tcp, or the mover never finished
    }
    const ram = info.ram;
    return {
      status,
      transport: options.transport,
      ...(info['error-desc'] ? { error: info['error-desc'] } : {}),
      startedAt,
      ...(stop?.timestamp ? { sourceStoppedAt: stop.timestamp.seconds * 1000 + stop.timestamp.microseconds / 1000 } : {}),
      elapsedMs,
      totalTimeMs: info['total-time'],
      downtimeMs: info.downtime,
      setupTimeMs: info['setup-time'],
      bytes: ram?.transferred,
      ramTotal: ram?.total,
      duplicatePages: ram?.duplicate,
      rounds: ram?.['dirty-sync-count'],
      throughputMbps: ram?.mbps,
      mover,
      samples,
    };
  } catch (error) {
    if (error instanceof XmigError) throw error;
    throw new XmigError('ERR_MIGRATION', `migration failed: ${(error as Error).message}`, { cause: error });
  } finally {
    rmSync(statsFile, { force: true });
    await qmp.close();
  }
}
