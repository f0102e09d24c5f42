/**
 * Watching a migration QEMU runs: `query-migrate` every `pollMs`, one sample each —
 * QEMU's own figures and the rate measured between samples (QEMU's `mbps` is its
 * estimate for the current pass and stays flat while nothing moves) — until QEMU says
 * completed, failed or cancelled. On the way it carries out what the caller asked:
 * cancel on a signal, and at the timeout either cancel or force the switchover. We
 * force it the way QEMU decides it: QEMU switches over once what is left fits in the
 * downtime limit at the current bandwidth, so the limit is raised past any remainder
 * (and the bandwidth cap lifted). Pausing the source instead (what `virsh migrate
 * --timeout` does) would leave the destination paused too — QEMU migrates the run
 * state — and only libvirt, which drives both ends, would know to resume it.
 */
import type { QmpClient } from './qmp-client.js';
import { UNLIMITED_BANDWIDTH } from './migration-params.js';

export interface QueryMigrate {
  status?: string;
  'total-time'?: number;
  downtime?: number;
  'expected-downtime'?: number;
  'setup-time'?: number;
  'error-desc'?: string;
  'cpu-throttle-percentage'?: number;
  ram?: {
    transferred: number;
    remaining: number;
    total: number;
    duplicate: number;
    normal?: number;
    mbps: number;
    'dirty-sync-count': number;
    'dirty-pages-rate'?: number;
  };
  'xbzrle-cache'?: {
    'cache-size': number;
    bytes: number;
    pages: number;
    'cache-miss': number;
    'cache-miss-rate': number;
    overflow: number;
  };
}

export interface MigrationSample {
  /** ms since the migration was issued. */
  t: number;
  status: string;
  transferred: number;
  remaining: number;
  total: number;
  /** Measured: bytes transferred since the previous sample, per second. */
  rateBytesPerSecond: number;
  /** QEMU's own estimate for the current pass (Mbit/s). */
  qemuMbps: number;
  /** RAM passes QEMU has made (dirty-sync-count): pass 1 copies everything, later ones what was dirtied. */
  passes: number;
  /** auto-converge's vCPU throttle. */
  throttlePercent?: number;
}

export type TimeoutAction = 'abort' | 'switchover';

export interface WatchOptions {
  pollMs?: number;
  /** Cancel the migration (migrate_cancel); the source VM goes on running. */
  signal?: AbortSignal;
  /** Stop waiting for QEMU at once (a second Ctrl-C): the watch ends with what it has. */
  abandon?: AbortSignal;
  timeoutMs?: number;
  timeoutAction?: TimeoutAction;
  onSample?: (sample: MigrationSample, info: QueryMigrate) => void;
  /**
   * QEMU has stopped the VM before its device state (pause-before-switchover): run this,
   * then let QEMU go on (migrate-continue). If it fails, the migration is cancelled.
   */
  onPreSwitchover?: () => Promise<void>;
  /** Something the migration depends on failed (the disk mirror): cancel it; its reason is the failure. */
  failure?: AbortSignal;
}

export interface WatchResult {
  info: QueryMigrate;
  samples: MigrationSample[];
  /** ms when QEMU first said completed. */
  completedAtMs?: number;
  cancelledAtMs?: number;
  cancelReason?: 'signal' | 'timeout';
  forcedSwitchoverAtMs?: number;
  /** The watch was abandoned before QEMU said how it ended. */
  abandoned: boolean;
  /** Why the migration was cancelled other than by the caller: `failure`, or onPreSwitchover failing. */
  failure?: string;
  /** ms when the VM stopped before its device state, and when it was let go on. */
  preSwitchoverAtMs?: number;
  continuedAtMs?: number;
}

const ENDED = new Set(['completed', 'failed', 'cancelled']);
/** Far past any remainder at any bandwidth, within QEMU's bound (2000 s). */
const FORCED_DOWNTIME_LIMIT_MS = 1_000_000;

export async function watchMigration(qmp: QmpClient, startedAt: number, options: WatchOptions = {}): Promise<WatchResult> {
  const result: WatchResult = { info: {}, samples: [], abandoned: false };
  const elapsed = (): number => Math.round(performance.now() - startedAt);
  const cancel = (reason: 'signal' | 'timeout'): void => {
    if (result.cancelledAtMs !== undefined) return;
    result.cancelledAtMs = elapsed();
    result.cancelReason = reason;
    void qmp.execute('migrate_cancel').catch(() => undefined);
  };
  const onAbort = (): void => cancel('signal');
  options.signal?.addEventListener('abort', onAbort, { once: true });
  if (options.signal?.aborted) onAbort();
  const fail = (reason: string): void => {
    if (result.failure !== undefined || result.cancelledAtMs !== undefined) return;
    result.failure = reason;
    void qmp.execute('migrate_cancel').catch(() => undefined);
  };
  const onFailure = (): void => {
    const reason = options.failure?.reason;
    fail(reason instanceof Error ? reason.message : String(reason ?? 'failed'));
  };
  options.failure?.addEventListener('abort', onFailure, { once: true });
  if (options.failure?.aborted) onFailure();
  // Acted on at QEMU's event, not at the next poll: the VM is stopped while we wait.
  const preSwitchover = (): void => {
    if (result.preSwitchoverAtMs !== undefined || !options.onPreSwitchover) return;
    result.preSwitchoverAtMs = elapsed();
    options
      .onPreSwitchover()
      .then(async () => {
        if (result.failure !== undefined || result.cancelledAtMs !== undefined) return;
        await qmp.execute('migrate-continue', { state: 'pre-switchover' });
        result.continuedAtMs = elapsed();
      })
      .catch((error: unknown) => fail(error instanceof Error ? error.message : String(error)));
  };
  const offEvent = qmp.onEvent((event) => {
    if (event.event === 'MIGRATION' && event.data?.['status'] === 'pre-switchover') preSwitchover();
  });
  let wake: (() => void) | undefined;
  const onAbandon = (): void => wake?.();
  options.abandon?.addEventListener('abort', onAbandon, { once: true });
  try {
    for (let settle = 0; ; ) {
      if (options.abandon?.aborted) {
        result.abandoned = true;
        break;
      }
      const info = await qmp.execute<QueryMigrate>('query-migrate');
      result.info = info;
      const t = elapsed();
      const previous = result.samples[result.samples.length - 1];
      const ram = info.ram;
      const transferred = ram?.transferred ?? previous?.transferred ?? 0;
      const sample: MigrationSample = {
        t,
        status: info.status ?? 'none',
        transferred,
        remaining: ram?.remaining ?? 0,
        total: ram?.total ?? previous?.total ?? 0,
        rateBytesPerSecond: previous && t > previous.t ? Math.max(0, ((transferred - previous.transferred) * 1000) / (t - previous.t)) : 0,
        qemuMbps: ram?.mbps ?? 0,
        passes: ram?.['dirty-sync-count'] ?? previous?.passes ?? 0,
        ...(info['cpu-throttle-percentage'] !== undefined ? { throttlePercent: info['cpu-throttle-percentage'] } : {}),
      };
      result.samples.push(sample);
      options.onSample?.(sample, info);
      if (info.status === 'pre-switchover') preSwitchover();
      if (info.status === 'completed') result.completedAtMs ??= t;
      // QEMU sets `completed` a moment before it fills in total-time and downtime.
      if (info.status === 'completed' && !info['total-time'] && settle++ < 50) {
        await pause(10);
        continue;
      }
      if (info.status !== undefined && ENDED.has(info.status)) break;
      if (options.timeoutMs !== undefined && t >= options.timeoutMs && result.cancelledAtMs === undefined && result.forcedSwitchoverAtMs === undefined) {
        if ((options.timeoutAction ?? 'abort') === 'abort') cancel('timeout');
        else {
          result.forcedSwitchoverAtMs = t;
          await qmp.execute('migrate-set-parameters', { 'max-bandwidth': UNLIMITED_BANDWIDTH, 'downtime-limit': FORCED_DOWNTIME_LIMIT_MS }).catch(() => undefined);
        }
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, options.pollMs ?? 100);
        wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      wake = undefined;
    }
  } finally {
    offEvent();
    options.failure?.removeEventListener('abort', onFailure);
    options.signal?.removeEventListener('abort', onAbort);
    options.abandon?.removeEventListener('abort', onAbandon);
  }
  return result;
}

function pause(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
