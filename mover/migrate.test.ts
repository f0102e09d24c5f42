import { describe, expect, it } from 'vitest';
import { migrationUri, type MigrationReport } from './migrate.js';
import { migrationSvg } from './report-svg.js';

describe('migrationUri', () => {
  it('runs xmig send through the shell with every argument quoted', () => {
    const uri = migrationUri({ qmp: 'q', to: "RE AD:1 HID:2 SID:3 it's", transport: 'xia', api: '/run/xmig/a b.sock', xmigCommand: '/usr/bin/xmig' }, '/tmp/s.json');
    expect(uri).toBe(`exec:/usr/bin/xmig send --transport xia --to 'RE AD:1 HID:2 SID:3 it'\\''s' --stats '/tmp/s.json' --api '/run/xmig/a b.sock'`);
  });

  it('leaves the API socket out over TCP, and QEMU does tcp: itself', () => {
    expect(migrationUri({ qmp: 'q', to: '10.0.0.2:4444', transport: 'tcp', api: '/a.sock', xmigCommand: 'xmig' }, '/s')).toBe(`exec:xmig send --transport tcp --to '10.0.0.2:4444' --stats '/s'`);
    expect(migrationUri({ qmp: 'q', to: '10.0.0.2:4444', transport: 'qemu-tcp' }, '/s')).toBe('tcp:10.0.0.2:4444');
  });
});

describe('migrationSvg', () => {
  const report: MigrationReport = {
    status: 'completed',
    transport: 'xia',
    startedAt: 0,
    elapsedMs: 2000,
    totalTimeMs: 2000,
    downtimeMs: 100,
    bytes: 50e6,
    samples: [
      { t: 0, status: 'active', transferred: 0, remaining: 100, total: 100, mbps: 0, dirtySyncCount: 1 },
      { t: 1000, status: 'active', transferred: 50, remaining: 50, total: 100, mbps: 400, dirtySyncCount: 1 },
    ],
  };

  it('draws rate, remaining bytes and the downtime band at the end', () => {
    const svg = migrationSvg(report, 'A <to> B');
    expect(svg).toMatch(/^<svg xmlns="http:\/\/www.w3.org\/2000\/svg"/);
    expect(svg).toContain('A &#60;to&#62; B');
    expect(svg).toContain('xia: completed, total 2000 ms, downtime 100 ms, 50.0 MB');
    // The downtime band spans the last 100 of 2000 ms of a 648-pixel-wide plot.
    expect(svg).toMatch(/<rect x="671\.6" y="34" width="32\.4"/);
    expect(svg.match(/<polyline/g)).toHaveLength(2);
  });

  it('draws a failed migration without samples', () => {
    expect(migrationSvg({ status: 'failed', transport: 'tcp', startedAt: 0, elapsedMs: 10, samples: [] })).toContain('tcp: failed, total - ms');
  });
});
