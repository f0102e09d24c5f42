/**
 * The paper's Table 1 on a real VM: `runLab` (lab/run.ts) with XMIG_BENCH_LAB_MOVES
 * moves per cell (default 5) — over XIA in Fig. 1a and 1b, and by QEMU's own tcp: in the
 * TCP/IP baseline (one subnet; a subnet per segment, where the held connection breaks at
 * the first move and the later ones measure the migration only). One JSON line per cell
 * of Table 1 (medians), and one for what the VM's agent and the hosts measured around
 * the moves. XMIG_BENCH_LAB_DIR keeps the run directory (reports, logs).
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { median, PAPER_TABLE_1, type XiaMove } from '../lab/figures.js';
import { labHtml } from '../lab/report-html.js';
import { runLab, type LabReport } from '../lab/run.js';

export interface LabCell {
  bench: 'lab';
  network: 'XIA' | 'TCP/IP';
  topology: 'intra-ad' | 'inter-ad';
  moves: number;
  /** migrate → destination RESUME, median (ms). */
  totalMs: number | null;
  /** source STOP → destination RESUME, median (ms). */
  downtimeMs: number | null;
  qemuTotalMs: number | null;
  qemuDowntimeMs: number | null;
  /** XIA: xping's n·Δt, median (ms). */
  xpingDowntimeMs?: number | null;
  goldbachGapMs: number | null;
  brokenConnections: number;
  paperTotal: string;
  paperDowntime: string;
}

export interface LabMobility {
  bench: 'lab-mobility';
  topology: 'intra-ad' | 'inter-ad';
  moves: number;
  /** In the VM (the agent): perception → notice acked, → names registered, → stale routes removed. */
  agentNoticeAckedMs: number | null;
  agentRegisteredMs: number | null;
  agentCleanedMs: number | null;
  /** On the hosts: RESUME → the new gateway registered the VM, → the name server took the new record, → xping answered again. */
  gatewayRegisteredMs: number | null;
  nameRegisteredMs: number | null;
  pingRecoveredMs: number | null;
  rewrittenMs: Record<string, number | null>;
}

export function labCells(report: LabReport): Array<LabCell | LabMobility> {
  const lines: Array<LabCell | LabMobility> = [];
  for (const t of report.topologies) {
    const x = t.xia.moves;
    const med = (pick: (m: XiaMove) => number | null): number | null => median(x.map(pick));
    lines.push({
      bench: 'lab',
      network: 'XIA',
      topology: t.topology,
      moves: x.length,
      totalMs: med((m) => m.totalMs),
      downtimeMs: med((m) => m.downtimeMs),
      qemuTotalMs: med((m) => m.qemuTotalMs),
      qemuDowntimeMs: med((m) => m.qemuDowntimeMs),
      xpingDowntimeMs: med((m) => m.xpingDowntimeMs),
      goldbachGapMs: med((m) => m.goldbachGapMs),
      brokenConnections: t.xia.brokenConnections,
      paperTotal: PAPER_TABLE_1.XIA[t.topology].total,
      paperDowntime: PAPER_TABLE_1.XIA[t.topology].downtime,
    });
    if (t.tcp) {
      const m = t.tcp.moves;
      lines.push({
        bench: 'lab',
        network: 'TCP/IP',
        topology: t.topology,
        moves: m.length,
        totalMs: median(m.map((v) => v.totalMs)),
        downtimeMs: median(m.map((v) => v.downtimeMs)),
        qemuTotalMs: median(m.map((v) => v.qemuTotalMs)),
        qemuDowntimeMs: median(m.map((v) => v.qemuDowntimeMs)),
        goldbachGapMs: median(m.map((v) => v.goldbachGapMs)),
        brokenConnections: t.tcp.brokenConnections,
        paperTotal: PAPER_TABLE_1['TCP/IP'][t.topology].total,
        paperDowntime: PAPER_TABLE_1['TCP/IP'][t.topology].downtime,
      });
    }
    const routers = Object.keys(x[0]?.rewrittenMs ?? {});
    lines.push({
      bench: 'lab-mobility',
      topology: t.topology,
      moves: x.length,
      agentNoticeAckedMs: med((m) => m.agent.noticeAckedMs),
      agentRegisteredMs: med((m) => m.agent.registeredMs),
      agentCleanedMs: med((m) => m.agent.cleanedMs),
      gatewayRegisteredMs: med((m) => m.gatewayRegisteredMs),
      nameRegisteredMs: med((m) => m.nameRegisteredMs),
      pingRecoveredMs: med((m) => m.pingRecoveredMs),
      rewrittenMs: Object.fromEntries(routers.map((r) => [r, med((m) => m.rewrittenMs[r] ?? null)])),
    });
  }
  return lines;
}

export async function runLabBench(): Promise<Array<LabCell | LabMobility>> {
  const moves = Number(process.env['XMIG_BENCH_LAB_MOVES'] ?? 5);
  const keep = process.env['XMIG_BENCH_LAB_DIR'];
  const dir = keep ?? mkdtempSync(join(tmpdir(), 'xmig-bench-lab-'));
  try {
    const report = await runLab({
      moves,
      tcpMoves: moves,
      tcpWanMoves: moves,
      dir,
      onProgress: (p) => p.state === 'end' && process.stderr.write(`bench lab: ${p.phase} ${(p.ms / 1000).toFixed(1)} s ${p.detail ?? ''}\n`),
    });
    if (keep) {
      writeFileSync(join(dir, 'report.json'), `${JSON.stringify(report, null, 2)}\n`);
      writeFileSync(join(dir, 'report.html'), labHtml(report));
    }
    return labCells(report).map((line) => ({ ...line, machine: report.machine }));
  } finally {
    if (!keep) rmSync(dir, { recursive: true, force: true });
  }
}
