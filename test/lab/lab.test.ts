/**
 * The paper's experiment on a real VM, both topologies on one boot: `runLab` builds the
 * namespaced Fig. 1a and then re-cables it as Fig. 1b, and the VM (QEMU, TCG, 640 MB)
 * moves A → B → A over XIA in each while host C's xping and Goldbach client talk to its
 * old DAG; then the TCP/IP baseline moves it with QEMU's own tcp:. Every move is a full
 * migration: the VM has its own disk on each host (smaller than the paper's 4 GB, to keep
 * the suite's time), the destination's empty until the mirror fills it, and the guest
 * rewrites files on it throughout; at each destination it reads them back, and after the
 * last move the lab reads the image itself on the host (e2fsck, every file's SHA-1).
 *
 * Everything asserted here was observed from outside the VM: the clients' own lines on
 * C, a new client resolving the name on C, the control-port `list` of every router, of
 * the old host and of the VM (read from its segment), QEMU's events — never what the
 * agent says about itself.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { findBusybox, findKernels } from '../../lab/image/host-inputs.js';
import { qemuMajor, QEMU_REMEDY } from '../../lab/qemu-command.js';
import { labHtml } from '../../lab/report-html.js';
import { formatLabReport, REPORT_WIDTH } from '../../lab/report.js';
import { listNamespaces } from '../../lab/netns.js';
import { runLab, type LabReport } from '../../lab/run.js';
import { isRoot, requirement } from '../support/requirements.js';

const ready = requirement(
  isRoot() && (qemuMajor() ?? 0) >= 10 && findKernels().length > 0 && findBusybox() !== undefined,
  'root, QEMU 10 or later, a kernel with modules in /boot and a static busybox',
  QEMU_REMEDY,
);

const dir = mkdtempSync(join(tmpdir(), 'xmig-lab-test-'));
let report: LabReport | undefined;
let failure: unknown;

beforeAll(async () => {
  if (!ready) return;
  try {
    report = await runLab({
      moves: 2,
      tcpMoves: 2,
      dir,
      storage: 'full',
      diskSizeMb: 256,
      diskSeedMb: 20,
      // Generous: TCG guests on two cores shared with the rest of the suite.
      bootDeadlineMs: 480_000,
      moveDeadlineMs: 300_000,
      recoverDeadlineMs: 120_000,
      // The inter-subnet TCP connection can never come back (the VM's address is on the
      // wrong subnet); the intra-subnet one answers within 0.1-0.4 s of RESUME. 20 s of
      // silence tells them apart as well as the CLI's 60 s, and keeps the lab tests near
      // their 10-minute budget.
      brokenAfterMs: 20_000,
      onProgress: (p) => p.state === 'end' && process.stderr.write(`lab test: ${p.phase} ${(p.ms / 1000).toFixed(1)} s ${p.detail ?? ''}\n`),
    });
    // For a look afterwards (XMIG_KEEP_LAB=1 keeps the directory).
    writeFileSync(join(dir, 'report.json'), `${JSON.stringify(report, null, 2)}\n`);
  } catch (error) {
    failure = error;
  }
}, 1_200_000);

afterAll(() => {
  if (process.env['XMIG_KEEP_LAB']) console.error(`kept ${dir}`);
  else rmSync(dir, { recursive: true, force: true });
});

function topology(name: 'intra-ad' | 'inter-ad') {
  if (failure) throw failure;
  const t = report!.topologies.find((r) => r.topology === name);
  expect(t, `${name} ran`).toBeDefined();
  return t!;
}

describe.skipIf(!ready)('xmig lab: a real VM migrates A -> B -> A while its clients keep talking', () => {
  it.each(['intra-ad', 'inter-ad'] as const)('%s: no connection broken, xping back after every move, the name current, stale entries gone', (name) => {
    const t = topology(name);
    expect(t.xia.moves.map((m) => `${m.from}->${m.to}`)).toEqual(['A->B', 'B->A']);
    // The Goldbach client on C kept its one STREAM to the old DAG until the lab stopped it.
    expect(t.xia.brokenConnections).toBe(0);
    expect(t.xia.goldbach.ended).toBe('aborted');
    for (const m of t.xia.moves) {
      const at = `${name} move ${m.move}`;
      expect(m.pingRecoveredMs, `${at}: xping answered after RESUME`).not.toBeNull();
      expect(m.answerRecoveredMs, `${at}: Goldbach answered after RESUME`).not.toBeNull();
      expect(m.resolvedCurrent, `${at}: a new client on C resolved ${m.resolvedDag}`).toBe(true);
      expect(m.newClientAnswers, `${at}: a new client on C got answers by name`).toBeGreaterThan(0);
      expect(m.staleHostEntryGone, `${at}: host ${m.from}'s control port still lists the VM`).toBe(true);
      expect(m.staleVmEntryGone, `${at}: the VM's control port still lists host ${m.from}`).toBe(true);
      expect(m.totalMs).toBeGreaterThan(0);
    }
  });

  it('intra-ad: R1 sends the VM\'s HID straight to the segment it landed on', () => {
    const t = topology('intra-ad');
    const vm = report!.vm.hid;
    for (const m of t.xia.moves) {
      // R1's cables: seg-A on port 0, seg-B on port 1 (topology.ts).
      expect(m.vmRouteAfter['R1'], `move ${m.move}`).toEqual({ port: m.to === 'A' ? 0 : 1, nextHop: vm });
      expect(m.vmRouteAfter[m.to], `host ${m.to} has the VM on its segment`).toEqual({ port: 0, nextHop: vm });
    }
  });

  it('inter-ad: the old gateway points the VM\'s HID at the other AD\'s router, the new one at the VM', () => {
    const t = topology('inter-ad');
    const { vm, hids } = { vm: report!.vm.hid, hids: report!.hids };
    const [toB, toA] = t.xia.moves;
    expect(toB!.vmRouteAfter['R2']?.nextHop).toBe(vm);
    expect(toB!.vmRouteAfter['R1']?.nextHop).toBe(hids['R2']);
    expect(toA!.vmRouteAfter['R1']?.nextHop).toBe(vm);
    expect(toA!.vmRouteAfter['R2']?.nextHop).toBe(hids['R1']);
    // The name follows the VM into AD2 and back.
    expect(toB!.resolvedDag).toContain(report!.ads['AD2']!);
    expect(toA!.resolvedDag).toContain(report!.ads['AD1']!);
  });

  it('TCP/IP baseline: the connection survives inside one subnet and breaks across subnets', () => {
    const intra = topology('intra-ad').tcp!;
    expect(intra.mode).toBe('intra-subnet');
    expect(intra.moves.map((m) => m.survived)).toEqual([true, true]);
    expect(intra.brokenConnections).toBe(0);
    const inter = topology('inter-ad').tcp!;
    expect(inter.mode).toBe('inter-subnet');
    expect(inter.moves).toHaveLength(1);
    expect(inter.moves[0]).toMatchObject({ from: 'A', to: 'B', survived: false, newConnection: 'failed' });
    expect(inter.brokenConnections).toBe(1);
  });

  it('full migration: the disk mirrored at every move, the guest\'s files right at every destination, the image clean at the end', () => {
    if (failure) throw failure;
    const moves = report!.topologies.flatMap((t) => [...t.xia.moves.map((m) => ({ at: `${t.topology} XIA move ${m.move}`, m })), ...(t.tcp?.moves ?? []).map((m) => ({ at: `${t.topology} TCP move ${m.move}`, m }))]);
    for (const { at, m } of moves) {
      expect(m.disk, at).toBeDefined();
      // The mirror copied at least the seed files (20 MB) to an empty image, and NBD carried them.
      expect(m.disk!.mirroredBytes, at).toBeGreaterThanOrEqual(20 * 1048576);
      expect(m.disk!.filesBad, at).toEqual([]);
      expect(m.disk!.filesChecked, at).toBe(8);
    }
    expect(moves.filter(({ at }) => at.includes('XIA')).every(({ m }) => (m.disk!.wireBytes ?? 0) >= 20 * 1048576)).toBe(true);
    const disk = report!.disk!;
    expect(disk.check.clean, disk.check.fsck).toBe(true);
    expect(disk.check.bad).toEqual([]);
    // The two seed files and the eight the guest kept rewriting.
    expect(disk.check.checked).toBe(10);
  });

  it('reports within 100 columns and as HTML with a timeline, and leaves no namespace behind', async () => {
    if (failure) throw failure;
    const text = formatLabReport(report!);
    for (const line of text.split('\n')) expect(line.length, line).toBeLessThanOrEqual(REPORT_WIDTH);
    expect(text).toMatch(/^XIA +14 min/m);
    const html = labHtml(report!);
    expect(html).toContain('<svg');
    expect(html.match(/class="downtime"/g)?.length).toBe(report!.topologies.reduce((n, t) => n + t.timeline.migrations.length, 0));
    expect((await listNamespaces()).filter((n) => n.startsWith(`${report!.prefix}-`))).toEqual([]);
  });
});
