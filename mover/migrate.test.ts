import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { silentLogger } from '../shared/logger.js';
import { migrationUri, readMoverStats, startInNode, type MigrationReport } from './migrate.js';
import { migrationSvg } from './report-svg.js';

describe('migrationUri', () => {
  it('runs xmig send through the shell with every argument quoted', () => {
    const uri = migrationUri({ qmp: 'q', to: "RE AD:1 HID:2 SID:3 it's", transport: 'xia', api: '/run/xmig/a b.sock', xmigCommand: '/usr/bin/xmig' }, '/tmp/s.json');
    expect(uri).toBe(`exec:/usr/bin/xmig send --transport xia --to 'RE AD:1 HID:2 SID:3 it'\\''s' --stats '/tmp/s.json' --api '/run/xmig/a b.sock' --via-node`);
  });

  it('asks for the migration inside the node unless viaNode is false (XIA only)', () => {
    expect(migrationUri({ qmp: 'q', to: 'DAG 0 - HID:2', transport: 'xia', api: '/a.sock', xmigCommand: 'xmig', viaNode: true }, '/s')).toBe(
      `exec:xmig send --transport xia --to 'DAG 0 - HID:2' --stats '/s' --api '/a.sock' --via-node`,
    );
    expect(migrationUri({ qmp: 'q', to: 'DAG 0 - HID:2', transport: 'xia', api: '/a.sock', xmigCommand: 'xmig', viaNode: false }, '/s')).toBe(
      `exec:xmig send --transport xia --to 'DAG 0 - HID:2' --stats '/s' --api '/a.sock'`,
    );
    expect(migrationUri({ qmp: 'q', to: '10.0.0.2:4444', transport: 'tcp', xmigCommand: 'xmig', viaNode: true }, '/s')).not.toContain('--via-node');
  });

  it('leaves the API socket out over TCP, and QEMU does tcp: itself', () => {
    expect(migrationUri({ qmp: 'q', to: '10.0.0.2:4444', transport: 'tcp', api: '/a.sock', xmigCommand: 'xmig' }, '/s')).toBe(`exec:xmig send --transport tcp --to '10.0.0.2:4444' --stats '/s'`);
    expect(migrationUri({ qmp: 'q', to: '10.0.0.2:4444', transport: 'qemu-tcp' }, '/s')).toBe('tcp:10.0.0.2:4444');
  });
});

describe("the unix: channel's source end", () => {
  const to = 'DAG 0 - HID:4dd58dcbc1ff7f2e0795a39a4b2628280e262d1a';

  it('fails in one line, before QEMU is told anything, when the node is not there or does not listen in time', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'xmig-migrate-unix-'));
    try {
      await expect(startInNode({ api: join(dir, 'none.sock'), to }, silentLogger())).rejects.toThrow(/cannot reach the node's mover/);
      // A mover socket that takes the request and says nothing: the deadline ends it, and the node hears it go.
      let heard: Socket | undefined;
      const gone = new Promise<void>((resolve) => {
        const server = createServer((socket) => {
          heard = socket;
          socket.on('error', () => undefined);
          // Read (and ignore) the request: a socket nobody reads never sees its peer's end.
          socket.resume();
          socket.once('close', () => {
            server.close();
            resolve();
          });
        });
        server.listen(join(dir, 'api.sock.mover'));
      });
      const started = performance.now();
      await expect(startInNode({ api: join(dir, 'api.sock'), to }, silentLogger(), 300)).rejects.toThrow(/did not listen for QEMU within 300 ms/);
      expect(performance.now() - started).toBeLessThan(5000);
      await gone;
      expect(heard).toBeDefined();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("the mover's figures in the report", () => {
  // QEMU says "completed" when it has written its last byte into xmig send, which writes
  // --stats only once the receiver has it all: a clean-clone CI run here read the file
  // before it was there and reported no mover figures (test/e2e/qemu-migration.test.ts).
  it('are read when xmig send writes them after QEMU is done, and not at all when it never does', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'xmig-stats-'));
    try {
      const file = join(dir, 'send.json');
      setTimeout(() => writeFileSync(file, JSON.stringify({ role: 'send', transport: 'xia', bytes: 42 })), 300);
      expect((await readMoverStats(file, 5000))?.bytes).toBe(42);
      const started = performance.now();
      expect(await readMoverStats(join(dir, 'never.json'), 200)).toBeUndefined();
      expect(performance.now() - started).toBeGreaterThanOrEqual(190);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('migrationSvg', () => {
  const sample = (t: number, transferred: number, remaining: number, passes: number, rate: number) => ({ t, status: 'active', transferred, remaining, total: 100 << 20, rateBytesPerSecond: rate, qemuMbps: 800, passes });
  const report: MigrationReport = {
    status: 'completed',
    transport: 'xia',
    startedAt: 10_000,
    sourceStoppedAt: 11_900,
    elapsedMs: 2000,
    totalTimeMs: 2000,
    downtimeMs: 100,
    bytes: 50 << 20,
    passes: 2,
    samples: [sample(0, 0, 100 << 20, 1, 0), sample(1000, 40 << 20, 60 << 20, 1, 40 << 20), sample(1500, 50 << 20, 5 << 20, 2, 20 << 20)],
  };

  it('draws the measured rate and RAM left with labelled axes, pass boundaries and the downtime band', () => {
    const svg = migrationSvg(report, 'A <to> B', { pingGaps: [{ startMs: 1900, endMs: 2000 }] });
    expect(svg).toMatch(/^<svg xmlns="http:\/\/www.w3.org\/2000\/svg"/);
    expect(svg).toContain('A &#60;to&#62; B');
    expect(svg).toContain('xia: completed · total 2000 ms · downtime 100 ms · 50.0 MiB sent · 2 passes');
    expect(svg).toContain('transfer rate (MiB/s)');
    expect(svg).toContain('RAM still to send (MiB)');
    expect(svg).toContain('time since migrate (s)');
    expect(svg).toContain('>pass 2<');
    // The source stopped 1900 ms in, for 100 ms: the band starts at 1900/2000 of the 636-pixel plot.
    expect(svg).toMatch(/<rect x="664\.2" y="46" width="31\.8" height="210" fill="#f4c7c3">/);
    expect(svg).toContain('no ping answered for 100 ms');
    expect(svg.match(/<polyline/g)).toHaveLength(2);
  });

  it('marks where a cancelled or timed-out run ended, in the colour of how it ended', () => {
    const cancelled = migrationSvg({ ...report, status: 'cancelled', cancelReason: 'timeout', cancelledAtMs: 1500, downtimeMs: undefined, error: 'not completed within 1500 ms' });
    expect(cancelled).toContain('cancelled (timeout)');
    expect(cancelled).toContain('fill="#e37400">xia: cancelled');
    expect(cancelled).toContain('not completed within 1500 ms');
    expect(migrationSvg({ ...report, forcedSwitchoverAtMs: 1200 })).toContain('switchover forced');
  });

  it('draws a full migration\'s disk: its phases along the top and the tunnel rate', () => {
    const MIB = 1 << 20;
    const svg = migrationSvg({
      ...report,
      disk: {
        status: 'completed', device: 'vda', node: 'disk0', format: 'qcow2', file: '/a', bytes: 256 * MIB, mirroredBytes: 256 * MIB, wire: { toTarget: 17 * MIB, fromTarget: 0, connections: 1 }, copyMode: 'write-blocking', nbdPath: 'xia-tunnel',
        target: { address: 'DAG', node: 'disk0', format: 'qcow2', file: '/b', bytes: 256 * MIB },
        phases: [{ phase: 'mirror-sync', startMs: 0, endMs: 800 }, { phase: 'ready', startMs: 800, endMs: 810 }, { phase: 'ram', startMs: 810, endMs: 1900 }, { phase: 'switchover', startMs: 1900, endMs: 1950 }, { phase: 'complete', startMs: 1950, endMs: 2000 }],
        samples: [{ t: 200, mirrored: 64 * MIB, total: 256 * MIB, wireBytes: 4 * MIB, rateBytesPerSecond: 20 * MIB }, { t: 800, mirrored: 256 * MIB, total: 256 * MIB, wireBytes: 17 * MIB, rateBytesPerSecond: 22 * MIB }],
      },
    });
    for (const phase of ['mirror-sync', 'ram']) expect(svg).toContain(`>${phase}</text>`);
    expect(svg).toContain('<title>disk switchover: 50 ms</title>');
    expect(svg).toContain('disk: NBD bytes on the tunnel (MiB/s)');
    expect(svg).toContain('disk 256.0 MiB mirrored, 17.0 MiB on the wire');
    expect(svg.match(/<polyline/g)).toHaveLength(3);
  });

  it('draws a failed migration without samples', () => {
    expect(migrationSvg({ status: 'failed', transport: 'tcp', startedAt: 0, elapsedMs: 10, samples: [] })).toContain('tcp: failed · total - ms');
  });
});
