/**
 * The paper's Table 2 on a real VM: full migration (640 MB of RAM, a 4 GB disk with
 * 300 MB of files; each host its own image, the destination's empty) with a workload in
 * the VM, intra-AD and inter-AD, over XIA and by QEMU's own tcp: + NBD as the TCP/IP
 * baseline. One `runLab` per workload (lab/run.ts, `storage: 'full'`), XMIG_BENCH_LAB_MOVES
 * moves per cell (default 5); one JSON line per cell with medians: total time, downtime
 * (QMP events and xping), RAM bytes and the disk's (mirrored, on the wire), broken
 * connections, and whether the workload ran on at every destination — beside the
 * paper's figures for that cell.
 *
 * XMIG_BENCH_WORKLOADS (default goldbach,dbench,iperf3: the paper's third, netperf, is not
 * in Debian main; iperf3 from host C stands in for it, over XIA through `xmig tunnel`),
 * XMIG_BENCH_DISK_MB (4096), XMIG_BENCH_LAB_DIR keeps each run's directory (DIR/WORKLOAD:
 * reports, logs).
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { median, PAPER_TABLE_2, type MoveDisk, type WorkloadCheck } from '../lab/figures.js';
import { labHtml } from '../lab/report-html.js';
import { LAB_WORKLOADS, runLab, type LabReport, type LabWorkload } from '../lab/run.js';

export interface LabFullCell {
  bench: 'lab-full';
  workload: LabWorkload;
  network: 'XIA' | 'TCP/IP';
  topology: 'intra-ad' | 'inter-ad';
  moves: number;
  /** migrate → destination RESUME; source STOP → RESUME (QMP events), medians (ms). */
  totalMs: number | null;
  downtimeMs: number | null;
  qemuDowntimeMs: number | null;
  /** XIA: xping's n·Δt (ms). */
  xpingDowntimeMs?: number | null;
  ramBytes: number | null;
  diskMirroredBytes: number | null;
  diskWireBytes: number | null;
  mirrorSyncMs: number | null;
  brokenConnections: number;
  /** The guest's files read back right at every destination; the workload ran on at every one. */
  filesRight: boolean;
  workloadRanOn: boolean | null;
  /** The workload's own rate across the moves (median): dbench MB/s, iperf3 Mbit/s. */
  workloadRate: number | null;
  paperTotal: string | null;
  paperDowntime: string | null;
}

type AnyMove = { totalMs: number; downtimeMs: number | null; qemuDowntimeMs: number | null; disk?: MoveDisk; workload?: WorkloadCheck };

function cell(report: LabReport, workload: LabWorkload, network: 'XIA' | 'TCP/IP', topology: 'intra-ad' | 'inter-ad', moves: AnyMove[], broken: number, extra: Partial<LabFullCell>): LabFullCell {
  const paper = network === 'XIA' ? PAPER_TABLE_2[workload][topology] : undefined;
  const disks = moves.map((m) => m.disk);
  const works = moves.map((m) => m.workload).filter((w): w is WorkloadCheck => w !== undefined);
  return {
    bench: 'lab-full',
    workload,
    network,
    topology,
    moves: moves.length,
    totalMs: median(moves.map((m) => m.totalMs)),
    downtimeMs: median(moves.map((m) => m.downtimeMs)),
    qemuDowntimeMs: median(moves.map((m) => m.qemuDowntimeMs)),
    ramBytes: null,
    diskMirroredBytes: median(disks.map((d) => d?.mirroredBytes)),
    diskWireBytes: median(disks.map((d) => d?.wireBytes)),
    mirrorSyncMs: median(disks.map((d) => d?.syncMs)),
    brokenConnections: broken,
    filesRight: disks.every((d) => d !== undefined && d.filesChecked !== null && d.filesBad.length === 0) && (report.disk?.check.clean ?? false) && (report.disk?.check.bad.length ?? 1) === 0,
    workloadRanOn: works.length ? works.every((w) => w.ranOn && w.errors.length === 0) : null,
    workloadRate: median(works.map((w) => w.rate)),
    paperTotal: paper?.total ?? null,
    paperDowntime: paper?.downtime ?? null,
    ...extra,
  };
}

export function labFullCells(report: LabReport, workload: LabWorkload): LabFullCell[] {
  const cells: LabFullCell[] = [];
  for (const t of report.topologies) {
    const x = t.xia.moves;
    cells.push(cell(report, workload, 'XIA', t.topology, x, t.xia.brokenConnections, { xpingDowntimeMs: median(x.map((m) => m.xpingDowntimeMs)), ramBytes: median(x.map((m) => m.bytes)) }));
    if (t.tcp) cells.push(cell(report, workload, 'TCP/IP', t.topology, t.tcp.moves, t.tcp.brokenConnections, {}));
  }
  return cells;
}

export async function runLabFullBench(): Promise<LabFullCell[]> {
  const moves = Number(process.env['XMIG_BENCH_LAB_MOVES'] ?? 5);
  const diskSizeMb = Number(process.env['XMIG_BENCH_DISK_MB'] ?? 4096);
  const workloads = (process.env['XMIG_BENCH_WORKLOADS'] ?? 'goldbach,dbench,iperf3').split(',').map((w) => w.trim()) as LabWorkload[];
  for (const w of workloads) if (!LAB_WORKLOADS.includes(w)) throw new Error(`XMIG_BENCH_WORKLOADS: ${w} is not one of ${LAB_WORKLOADS.join(', ')}`);
  const keep = process.env['XMIG_BENCH_LAB_DIR'];
  const lines: LabFullCell[] = [];
  for (const workload of workloads) {
    const dir = keep ? join(keep, workload) : mkdtempSync(join(tmpdir(), 'xmig-bench-lab-full-'));
    try {
      const report = await runLab({
        moves,
        tcpMoves: moves,
        tcpWanMoves: moves,
        storage: 'full',
        diskSizeMb,
        workload,
        dir,
        onProgress: (p) => p.state === 'end' && process.stderr.write(`bench lab-full ${workload}: ${p.phase} ${(p.ms / 1000).toFixed(1)} s ${p.detail ?? ''}\n`),
      });
      if (keep) {
        writeFileSync(join(dir, 'report.json'), `${JSON.stringify(report, null, 2)}\n`);
        writeFileSync(join(dir, 'report.html'), labHtml(report));
      }
      lines.push(...labFullCells(report, workload).map((line) => ({ ...line, machine: report.machine })));
    } finally {
      if (!keep) rmSync(dir, { recursive: true, force: true });
    }
  }
  return lines;
}
