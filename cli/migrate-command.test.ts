import { describe, expect, it } from 'vitest';
import type { MigrationReport } from '../mover/migrate.js';
import { diskProgressLine, progressLine, statusTable, summaryLine } from './migrate-command.js';

const MIB = 1024 * 1024;

describe('xmig migrate output', () => {
  it('shows progress as RAM copied of the total, with MiB left and sent and the measured rate', () => {
    const line = progressLine({ t: 1000, status: 'active', transferred: 72 * MIB, remaining: 57 * MIB, total: 129 * MIB, rateBytesPerSecond: 35.2 * MIB, qemuMbps: 300, passes: 2 });
    expect(line).toBe('active pass 2: 55% of RAM copied (57.0 of 129.0 MiB left), 72.0 MiB sent, 35.2 MiB/s');
  });

  it('sums up in MiB and MiB/s, with QEMU passes and mover rounds apart and the reason of a failure', () => {
    const report = { status: 'failed', transport: 'xia', startedAt: 0, elapsedMs: 2000, bytes: 10 * MIB, passes: 1, meanRateBytesPerSecond: 5 * MIB, error: 'receiver unreachable', samples: [], mover: { bytes: 9 * MIB, rounds: 4, reconnects: 1 } } as unknown as MigrationReport;
    const line = summaryLine(report);
    expect(line).toContain('10.0 MiB of RAM sent in 1 passes');
    expect(line).toContain('5.0 MiB/s');
    expect(line).toContain('mover: 9.0 MiB in 4 rounds, 1 reconnects');
    expect(line).toMatch(/ — receiver unreachable$/);
    expect(line).not.toMatch(/\bMB\b|Mbit/);
  });

  it('shows the disk apart from RAM: mirrored of its size, bytes on the wire, sync and switchover times', () => {
    expect(diskProgressLine({ t: 500, mirrored: 64 * MIB, total: 256 * MIB, wireBytes: 12 * MIB, rateBytesPerSecond: 20 * MIB })).toBe('mirror-sync: 25% copied (64.0 of 256.0 MiB to copy), 12.0 MiB on the wire, 20.0 MiB/s');
    const disk = {
      status: 'completed', device: 'vda', node: 'disk0', format: 'qcow2', file: '/a.qcow2', bytes: 256 * MIB, mirroredBytes: 256 * MIB, wire: { toTarget: 17 * MIB, fromTarget: 1000, connections: 1 }, copyMode: 'write-blocking',
      target: { address: 'DAG', node: 'disk0', format: 'qcow2', file: '/b.qcow2', bytes: 256 * MIB },
      phases: [{ phase: 'mirror-sync', startMs: 0, endMs: 2500 }, { phase: 'ready', startMs: 2500, endMs: 2510 }, { phase: 'ram', startMs: 2510, endMs: 6000 }, { phase: 'switchover', startMs: 6000, endMs: 6040 }, { phase: 'complete', startMs: 6040, endMs: 6300 }],
      samples: [],
    };
    const report = { status: 'completed', transport: 'xia', startedAt: 0, elapsedMs: 6300, bytes: 80 * MIB, passes: 3, meanRateBytesPerSecond: 13 * MIB, samples: [], disk } as unknown as MigrationReport;
    const line = summaryLine(report);
    expect(line).toContain('80.0 MiB of RAM sent in 3 passes');
    expect(line).toContain('disk of 256.0 MiB: 256.0 MiB mirrored, 17.0 MiB on the wire, synced in 2500 ms, switchover 40 ms');
  });

  it('prints the status table within 100 columns', () => {
    const table = statusTable([
      { pid: 1, qmp: '/var/lib/libvirt/qemu/domain-7-a-rather-long-name/monitor.sock', to: 'x', transport: 'qemu-tcp', startedAt: 0, updatedAt: 5000, status: 'cancelled', passes: 12, transferredBytes: 123456 * MIB, remainingBytes: 99999 * MIB, totalBytes: 1, rateBytesPerSecond: 1234 * MIB, finished: true },
    ]);
    for (const line of table.split('\n')) expect(line.length).toBeLessThanOrEqual(100);
    expect(table).toContain('…');
  });
});
