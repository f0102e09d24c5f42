import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { pruneStatuses, readStatuses, statusFileFor, writeStatus, type MigrationStatus } from './migration-status.js';

const dirs: string[] = [];
afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

function status(change: Partial<MigrationStatus>): MigrationStatus {
  return { pid: process.pid, qmp: '/run/vm.qmp', to: 'x', transport: 'xia', startedAt: 1, updatedAt: 1, status: 'active', passes: 1, transferredBytes: 10, remainingBytes: 5, totalBytes: 15, rateBytesPerSecond: 3, finished: false, ...change };
}

describe('migration status files', () => {
  it('names one file per QMP socket, and finds it again', () => {
    const dir = mkdtempSync(join(tmpdir(), 'xmig-status-'));
    dirs.push(dir);
    expect(statusFileFor('/run/a/vm.qmp', dir)).not.toBe(statusFileFor('/run/b/vm.qmp', dir));
    writeStatus(statusFileFor('/run/vm.qmp', dir), status({}));
    expect(readStatuses({ qmp: '/run/vm.qmp', dir })).toEqual([status({})]);
    expect(readStatuses({ qmp: '/run/other.qmp', dir })).toEqual([]);
  });

  it('shows a migration whose process died unfinished as stale, and prunes finished and stale ones', () => {
    const dir = mkdtempSync(join(tmpdir(), 'xmig-status-'));
    dirs.push(dir);
    writeStatus(statusFileFor('/run/dead.qmp', dir), status({ qmp: '/run/dead.qmp', pid: 2 ** 22 + 12345, startedAt: 3 }));
    writeStatus(statusFileFor('/run/done.qmp', dir), status({ qmp: '/run/done.qmp', finished: true, status: 'completed', startedAt: 2 }));
    writeStatus(statusFileFor('/run/live.qmp', dir), status({ qmp: '/run/live.qmp' }));
    expect(readStatuses({ dir }).map((s) => [s.qmp, s.status])).toEqual([
      ['/run/dead.qmp', 'stale'],
      ['/run/done.qmp', 'completed'],
      ['/run/live.qmp', 'active'],
    ]);
    expect(pruneStatuses(dir)).toBe(2);
    expect(readStatuses({ dir }).map((s) => s.qmp)).toEqual(['/run/live.qmp']);
  });
});
