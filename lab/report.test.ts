import { describe, expect, it } from 'vitest';
import type { TopologyReport, XiaMove } from './figures.js';
import { labHtml } from './report-html.js';
import { duration, formatLabReport, REPORT_WIDTH } from './report.js';
import type { LabReport } from './run.js';

const hid = (c: string): string => `HID:${c.repeat(40)}`;

function move(n: number, from: string, to: string, routers: string[]): XiaMove {
  return {
    move: n, from, to, totalMs: 145_534, downtimeMs: 2206, qemuTotalMs: 143_944, qemuDowntimeMs: 1500, bytes: 412_178_091,
    lostPings: 120, xpingDowntimeMs: 1200, precopyPings: 14_000, precopyLostPings: 2733, goldbachGapMs: 11_600,
    pingRecoveredMs: 4600, answerRecoveredMs: 1800, gatewayRegisteredMs: 1100, rewrittenMs: Object.fromEntries(routers.map((r) => [r, 2200])), nameRegisteredMs: 2100,
    agent: { resumeToPerceivedMs: 1100, noticeAckedMs: 3000, registeredMs: 5400, cleanedMs: 2900, kind: 'inter-ad' },
    routeChanges: [`R1 ${hid('a')}: port 0 via ${hid('a')} -> port 2 via ${hid('b')}`],
    vmRouteAfter: {}, staleHostEntryGone: true, staleVmEntryGone: true, resolvedDag: 'RE AD:… HID:… SID:…', resolvedCurrent: true, newClientAnswers: 5,
  };
}

function topology(name: 'intra-ad' | 'inter-ad'): TopologyReport {
  const routers = name === 'intra-ad' ? ['R1'] : ['R1', 'R2'];
  const t0 = 1_796_169_700_000;
  return {
    topology: name,
    xia: { moves: [move(1, 'A', 'B', routers), move(2, 'B', 'A', routers)], brokenConnections: 0, goldbach: { answers: 3963, maxGapMs: 11_600, ended: 'aborted' }, xping: { sent: 24_328, answered: 9195 } },
    tcp: {
      mode: name === 'intra-ad' ? 'intra-subnet' : 'inter-subnet',
      moves: [{ move: 1, from: 'A', to: 'B', totalMs: 5200, downtimeMs: 63, qemuTotalMs: 5100, qemuDowntimeMs: 52, goldbachGapMs: null, survived: name === 'intra-ad', newConnection: name === 'intra-ad' ? 'answered' : 'failed' }],
      brokenConnections: name === 'intra-ad' ? 0 : 1,
      goldbach: { answers: 500, ended: 'aborted' },
    },
    timeline: {
      start: t0, end: t0 + 340_000,
      pings: [{ t: t0 + 1000, rttMs: 2 }, { t: t0 + 2000, rttMs: null }],
      answers: [t0 + 1000, t0 + 1500], tcpAnswers: [t0 + 330_000],
      migrations: [{ label: 'A→B XIA', transport: 'xia', requestedAt: t0 + 8000, stoppedAt: t0 + 149_800, resumedAt: t0 + 153_300, samples: [{ t: t0 + 10_000, transferred: 1e6, total: 6.7e8 }, { t: t0 + 20_000, transferred: 2e8, total: 6.7e8 }] }],
    },
  };
}

const report: LabReport = {
  startedAt: '2026-12-02T00:00:00.000Z', durationMs: 700_000, dir: '/tmp/xmig-lab-x', prefix: 'xmig-lab-abcdef', kept: false,
  machine: { cpus: 2, memoryGiB: 24, kernel: '6.18.44-fc-v669', node: 'v20.20.2', qemu: '10' },
  image: { hash: 'ab'.repeat(32), cached: true, initramfsMiB: 61.2 },
  vm: { memoryMb: 640, bootMs: 52_300, memUsedMb: 230, hid: hid('c') },
  hids: {}, ads: {},
  options: { moves: 2, tcpMoves: 2, pingIntervalMs: 10, pingTimeoutMs: 5000, mtu: 1500, storage: 'none', workload: 'goldbach', channel: 'exec' },
  topologies: [topology('intra-ad'), topology('inter-ad')],
};

describe('the lab report', () => {
  it('writes durations the way people read them', () => {
    expect([duration(812.4), duration(12_345), duration(754_000), duration(null)]).toEqual(['812 ms', '12.3 s', '12.6 min', '-']);
  });

  it("puts this run beside the paper's Table 1, every line within 100 columns", () => {
    const text = formatLabReport(report);
    for (const line of text.split('\n')) expect(line.length, line).toBeLessThanOrEqual(REPORT_WIDTH);
    expect(text).toMatch(/^TCP\/IP +6\.5 min +1 s +5\.2 s +63 ms +0 of 1 +- +- +5\.2 s +63 ms +1 of 1$/m);
    expect(text).toMatch(/^XIA +14 min +1\.2 s +2\.4 min +2\.2 s +0 of 1 +15 min +1\.2 s +2\.4 min +2\.2 s +0 of 1$/m);
    expect(text).toContain('A -> B: BROKEN (new connection failed)');
    expect(text).toContain("stale entries gone: the old host's for the VM 2 of 2, the VM's for its old host 2 of 2");
    expect(text).toContain('5466/28000');
  });

  it('draws the timeline: QEMU phases, pings, answers', () => {
    const html = labHtml(report);
    expect(html.match(/class="downtime"/g)).toHaveLength(2);
    expect(html).toContain('class="lost"');
    expect(html).toContain('Goldbach (TCP)');
    expect(html).not.toContain('undefined');
    expect(html).not.toContain('NaN');
  });

  it('shows what moved of the disk, the files read back and dbench at the destination, within 100 columns', () => {
    const disk = { storage: 'full' as const, mirroredBytes: 320 * 1048576, wireBytes: 330 * 1048576, syncMs: 4200, filesChecked: 8, filesBad: [] };
    const withDisk = (t: TopologyReport): TopologyReport => ({
      ...t,
      xia: { ...t.xia, moves: t.xia.moves.map((m, i) => ({ ...m, disk: i === 1 ? { ...disk, filesBad: ['f03: wrote 0123456789ab, read nothing'] } : disk, workload: { name: 'dbench' as const, ranOn: true, errors: [], rate: 12.5 } })) },
    });
    const full: LabReport = {
      ...report,
      options: { ...report.options, storage: 'full', workload: 'dbench' },
      disk: { storage: 'full', sizeMb: 4096, seedMb: 300, files: 27, check: { clean: true, checked: 27, bad: [] } },
      topologies: report.topologies.map(withDisk),
    };
    const text = formatLabReport(full);
    for (const line of text.split('\n')) expect(line.length, line).toBeLessThanOrEqual(REPORT_WIDTH);
    expect(text).toContain("The VM's disk: 4096 MB qcow2 with 300 MB of files, full migration\n(each host its own image, the destination's empty until the mirror fills it):");
    expect(text).toMatch(/^XIA intra-ad +2 +393 MB +320 MB +330 MB +4\.2 s +15 of 16 right +2 of 2 +12\.5$/m);
    expect(text).toContain("Table 2 (full migration), the paper's Dbench row:");
    expect(text).toMatch(/^XIA +12 min +1\.0 s +2\.4 min +2\.2 s +1\.2 s +0 of 1 +13 min +1\.5 s +2\.4 min +2\.2 s +1\.2 s +0 of 1$/m);
    expect(text).toMatch(/^TCP\/IP +- +- +5\.2 s +63 ms +- +0 of 1 +- +- +5\.2 s +63 ms +- +1 of 1$/m);
    expect(text).toContain('After the last move, on the host: e2fsck clean; 27 files read out of the image, all as written.');
    expect(formatLabReport(report)).not.toContain("The VM's disk");
  });

  it("shows iperf3's own word across each move, with a disk or without, and the paper's netperf row", () => {
    const withIperf3 = (t: TopologyReport): TopologyReport => ({
      ...t,
      xia: { ...t.xia, moves: t.xia.moves.map((m, i) => ({ ...m, workload: { name: 'iperf3' as const, ranOn: i === 0, errors: [], rate: 7.9 } })) },
    });
    const noDisk: LabReport = { ...report, options: { ...report.options, workload: 'iperf3' }, topologies: report.topologies.map(withIperf3) };
    const text = formatLabReport(noDisk);
    for (const line of text.split('\n')) expect(line.length, line).toBeLessThanOrEqual(REPORT_WIDTH);
    expect(text).toContain('No disk: what the workload said across each move');
    expect(text).toMatch(/ran on +Mbit\/s$/m);
    expect(text).toMatch(/^XIA intra-ad +2 +393 MB +- +- +- +- +1 of 2 +7\.9$/m);
    const full: LabReport = { ...noDisk, options: { ...noDisk.options, storage: 'full' }, disk: { storage: 'full', sizeMb: 4096, seedMb: 300, files: 27, check: { clean: true, checked: 27, bad: [] } } };
    const table2 = formatLabReport(full);
    expect(table2).toContain("Table 2 (full migration), the paper's Netperf row (iperf3 here: netperf is not in Debian main):");
    expect(table2).toMatch(/^XIA +12 min +1\.7 s +2\.4 min +2\.2 s +1\.2 s +0 of 1 +14 min +1\.7 s /m);
  });
});
