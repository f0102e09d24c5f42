/**
 * A running `xmig migrate` publishes where it is — phase, bytes, passes, rate — in a
 * status file, rewritten (atomically) at every poll and left, marked finished, at the
 * end: `xmig migrate status` reads them from another shell, as `virsh domjobinfo`
 * shows a running job. (The source QEMU's QMP monitor serves one client at a time and
 * `xmig migrate` holds it, so asking QEMU directly needs a second monitor; the file
 * needs none.) A file whose process is gone without finishing is shown as stale.
 */
import { createHash } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join, resolve } from 'node:path';
import { processAlive } from '../shared/process-alive.js';
import { writeFileAtomic } from '../shared/atomic-file.js';

export interface MigrationStatus {
  pid: number;
  /** The source QEMU's QMP socket: what names the migration. */
  qmp: string;
  to: string;
  transport: string;
  /** Epoch ms. */
  startedAt: number;
  updatedAt: number;
  /** QEMU's migration status (setup, active, device, completed, failed, cancelled...), or 'stale'. */
  status: string;
  /** QEMU's RAM passes so far (dirty-sync-count). */
  passes: number;
  transferredBytes: number;
  remainingBytes: number;
  totalBytes: number;
  /** Measured over the last poll interval (bytes/s). */
  rateBytesPerSecond: number;
  downtimeMs?: number;
  forcedSwitchover?: boolean;
  error?: string;
  /** Full migration: where the disk's mirror is (status 'mirror-sync' while it is copied). */
  disk?: { phase: string; mirroredBytes: number; totalBytes: number; wireBytes: number };
  finished: boolean;
}

/** Where status files live: $XMIG_STATUS_DIR, else /run/xmig/migrations as root, else per user. */
export function statusDir(): string {
  const configured = process.env['XMIG_STATUS_DIR'];
  if (configured) return configured;
  if (process.getuid?.() === 0) return '/run/xmig/migrations';
  const runtime = process.env['XDG_RUNTIME_DIR'];
  return runtime ? join(runtime, 'xmig', 'migrations') : join(tmpdir(), `xmig-${process.getuid?.() ?? 'user'}`, 'migrations');
}

/** The status file of the migration of the VM behind `qmp`. */
export function statusFileFor(qmp: string, dir = statusDir()): string {
  const path = resolve(qmp);
  const tag = createHash('sha1').update(path).digest('hex').slice(0, 8);
  return join(dir, `${basename(path).replace(/[^A-Za-z0-9_.-]/g, '_')}-${tag}.json`);
}

export function writeStatus(file: string, status: MigrationStatus): void {
  mkdirSync(join(file, '..'), { recursive: true, mode: 0o755 });
  writeFileAtomic(file, `${JSON.stringify(status)}\n`);
}

function readOne(file: string): MigrationStatus | undefined {
  let status: MigrationStatus;
  try {
    status = JSON.parse(readFileSync(file, 'utf8')) as MigrationStatus;
  } catch {
    return undefined; // being replaced, or not ours
  }
  if (typeof status.pid !== 'number' || typeof status.qmp !== 'string') return undefined;
  if (!status.finished && !processAlive(status.pid)) status.status = 'stale';
  return status;
}

/** Every migration with a status file (running, finished, stale), newest first; or the one of `qmp`. */
export function readStatuses(options: { qmp?: string; dir?: string } = {}): MigrationStatus[] {
  const dir = options.dir ?? statusDir();
  if (options.qmp) {
    const one = readOne(statusFileFor(options.qmp, dir));
    return one ? [one] : [];
  }
  let names: string[];
  try {
    names = readdirSync(dir).filter((n) => n.endsWith('.json'));
  } catch {
    return [];
  }
  return names
    .map((n) => readOne(join(dir, n)))
    .filter((s): s is MigrationStatus => s !== undefined)
    .sort((a, b) => b.startedAt - a.startedAt);
}

/** Removes the status files of finished and stale migrations. */
export function pruneStatuses(dir = statusDir()): number {
  let removed = 0;
  for (const status of readStatuses({ dir })) {
    if (status.finished || status.status === 'stale') {
      rmSync(statusFileFor(status.qmp, dir), { force: true });
      removed++;
    }
  }
  return removed;
}
