/**
 * The lab's report for people: the paper's Table 1 beside this run's figures, then
 * downtime and recovery, what the VM's agent measured, and what changed in the route
 * tables — every line within 100 columns. Figures are medians over the moves of a cell.
 */
import { median, PAPER_TABLE_1, PAPER_TABLE_2, type MoveDisk, type TopologyReport, type WorkloadCheck, type XiaMove } from './figures.js';
import type { LabReport } from './run.js';
import type { LabTopologyName } from './topology.js';

export const REPORT_WIDTH = 100;

/** 812 -> "812 ms", 12345 -> "12.3 s", 754000 -> "12.6 min"; null -> "-". */
export function duration(ms: number | null | undefined): string {
  if (ms === null || ms === undefined || !Number.isFinite(ms)) return '-';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 120_000) return `${(ms / 1000).toFixed(1)} s`;
  return `${(ms / 60_000).toFixed(1)} min`;
}

/** Columns two spaces apart, the first left-aligned, the rest right-aligned; `groups` label runs of columns above them. */
function table(header: string[], rows: string[][], groups: Array<{ label: string; from: number }> = []): string[] {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const cell = (text: string, i: number): string => (i === 0 ? text.padEnd(widths[i]!) : text.padStart(widths[i]!));
  const line = (cells: string[]): string => cells.map(cell).join('  ').trimEnd();
  const start = (column: number): number => widths.slice(0, column).reduce((n, w) => n + w + 2, 0);
  const groupLine = groups.reduce((text, g) => text.padEnd(start(g.from)) + g.label, '');
  return [...(groups.length ? [groupLine] : []), line(header), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)];
}

const topo = (reports: TopologyReport[], name: LabTopologyName): TopologyReport | undefined => reports.find((r) => r.topology === name);
const med = (moves: XiaMove[], pick: (m: XiaMove) => number | null): number | null => median(moves.map(pick));
const of = (n: number, total: number): string => `${n} of ${total}`;

function table1(report: LabReport): string[] {
  const rows: string[][] = [];
  for (const network of ['TCP/IP', 'XIA'] as const) {
    const row: string[] = [network];
    for (const name of ['intra-ad', 'inter-ad'] as const) {
      const paper = PAPER_TABLE_1[network][name];
      const t = topo(report.topologies, name);
      row.push(paper.total, paper.downtime);
      if (!t || (network === 'TCP/IP' && !t.tcp)) {
        row.push('not run', '', '');
        continue;
      }
      if (network === 'XIA') {
        row.push(duration(med(t.xia.moves, (m) => m.totalMs)), duration(med(t.xia.moves, (m) => m.downtimeMs)), `${t.xia.brokenConnections} of 1`);
      } else {
        const tcp = t.tcp!;
        row.push(duration(median(tcp.moves.map((m) => m.totalMs))), duration(median(tcp.moves.map((m) => m.downtimeMs))), `${tcp.brokenConnections} of 1`);
      }
    }
    rows.push(row);
  }
  return table(['', 'paper', 'down', 'this run', 'down', 'broken', 'paper', 'down', 'this run', 'down', 'broken'], rows, [
    { label: 'intra-AD (Fig. 1a)', from: 1 },
    { label: 'inter-AD (Fig. 1b)', from: 6 },
  ]);
}

/** With a full migration: the paper's Table 2 row for the workload beside this run (its TCP/IP baseline below it). */
function table2(report: LabReport): string[] {
  if (report.options.storage !== 'full') return [];
  const paper = PAPER_TABLE_2[report.options.workload];
  const rows: string[][] = [];
  for (const network of ['TCP/IP', 'XIA'] as const) {
    const row: string[] = [network];
    for (const name of ['intra-ad', 'inter-ad'] as const) {
      const t = topo(report.topologies, name);
      row.push(network === 'XIA' ? paper[name].total : '-', network === 'XIA' ? paper[name].downtime : '-');
      if (!t || (network === 'TCP/IP' && !t.tcp)) {
        row.push('not run', '', '', '');
        continue;
      }
      const moves = network === 'XIA' ? t.xia.moves : t.tcp!.moves;
      const broken = network === 'XIA' ? t.xia.brokenConnections : t.tcp!.brokenConnections;
      row.push(
        duration(median(moves.map((m) => m.totalMs))),
        duration(median(moves.map((m) => m.downtimeMs))),
        network === 'XIA' ? duration(median(t.xia.moves.map((m) => m.xpingDowntimeMs))) : '-',
        `${broken} of 1`,
      );
    }
    rows.push(row);
  }
  return [
    `Table 2 (full migration), the paper's ${paper.label} row${report.options.workload === 'iperf3' ? ' (iperf3 here: netperf is not in Debian main)' : ''}:`,
    ...table(['', 'paper', 'down', 'total', 'down', 'xping', 'broken', 'paper', 'down', 'total', 'down', 'xping', 'broken'], rows, [
      { label: 'intra-AD (Fig. 1a)', from: 1 },
      { label: 'inter-AD (Fig. 1b)', from: 7 },
    ]),
    '',
  ];
}

function downtimes(report: LabReport): string[] {
  const rows: string[][] = [];
  for (const t of report.topologies) {
    const m = t.xia.moves;
    rows.push([
      `XIA ${t.topology}`,
      String(m.length),
      `${duration(med(m, (x) => x.xpingDowntimeMs))} ±${report.options.pingIntervalMs}`,
      duration(med(m, (x) => x.qemuDowntimeMs)),
      duration(med(m, (x) => x.goldbachGapMs)),
      duration(med(m, (x) => x.pingRecoveredMs)),
      duration(med(m, (x) => x.answerRecoveredMs)),
      `${m.reduce((n, x) => n + x.precopyLostPings, 0)}/${m.reduce((n, x) => n + x.precopyPings, 0)}`,
    ]);
    if (t.tcp) {
      const moves = t.tcp.moves;
      rows.push([
        `TCP ${t.tcp.mode}`,
        String(moves.length),
        '-',
        duration(median(moves.map((x) => x.qemuDowntimeMs))),
        moves.every((x) => x.survived) ? duration(median(moves.map((x) => x.goldbachGapMs))) : 'never came back',
        '-',
        '-',
        '-',
      ]);
    }
  }
  return table(['', 'moves', 'xping n·Δt', "QEMU's", 'Goldbach gap', 'RESUME→ping', '→answer', 'pre-copy lost'], rows);
}

function mobility(report: LabReport): string[] {
  const rows: string[][] = [];
  for (const t of report.topologies) {
    const m = t.xia.moves;
    const routers = Object.keys(m[0]?.rewrittenMs ?? {});
    rows.push([
      t.topology,
      duration(med(m, (x) => x.agent.resumeToPerceivedMs)),
      duration(med(m, (x) => x.agent.noticeAckedMs)),
      duration(med(m, (x) => x.agent.registeredMs)),
      duration(med(m, (x) => x.agent.cleanedMs)),
      duration(med(m, (x) => x.gatewayRegisteredMs)),
      routers.map((r) => `${r} ${duration(med(m, (x) => x.rewrittenMs[r] ?? null))}`).join(', '),
      duration(med(m, (x) => x.nameRegisteredMs)),
    ]);
  }
  return table(['', 'resume→seen', '→acked', '→named', '→cleaned', 'RESUME→gw', 'RESUME→rewritten', '→name'], rows);
}

function checks(t: TopologyReport): string[] {
  const m = t.xia.moves;
  const n = m.length;
  const lines = [
    `${t.topology}: connections broken ${t.xia.brokenConnections} (Goldbach ${t.xia.goldbach.answers} answers, ended ${t.xia.goldbach.ended}); ` +
      `xping ${t.xia.xping.answered}/${t.xia.xping.sent} answered`,
    `  a new client on C: the name current ${of(m.filter((x) => x.resolvedCurrent).length, n)}, answered by name ${of(m.filter((x) => x.newClientAnswers > 0).length, n)}`,
    `  stale entries gone: the old host's for the VM ${of(m.filter((x) => x.staleHostEntryGone).length, n)}, ` +
      `the VM's for its old host ${of(m.filter((x) => x.staleVmEntryGone === true).length, n)}`,
  ];
  const first = m[0];
  if (first) {
    lines.push(`  routes changed by move 1 (${first.from} -> ${first.to}), control-port list before and after:`);
    for (const change of first.routeChanges.slice(0, 12)) lines.push(`    ${change}`);
    if (first.routeChanges.length > 12) lines.push(`    ... ${first.routeChanges.length - 12} more (--json has all)`);
  }
  if (t.tcp) {
    lines.push(`  TCP/IP ${t.tcp.mode}, the connection held from C (and a new one after each move):`);
    for (const x of t.tcp.moves) lines.push(`    ${x.from} -> ${x.to}: ${x.survived ? 'survived' : 'BROKEN'} (new connection ${x.newConnection})`);
  }
  return lines;
}

const mb = (bytes: number | null | undefined): string => (bytes === null || bytes === undefined ? '-' : `${Math.round(bytes / 1048576)} MB`);

/** The disk and the workload per cell: what moved of the disk, the files read back after each move, the workload's own word. */
function diskAndWorkload(report: LabReport): string[] {
  // Without a disk and with the calculation alone there is nothing to show.
  if (!report.disk && report.options.workload === 'goldbach') return [];
  const rows: string[][] = [];
  for (const t of report.topologies) {
    const cells: Array<{ label: string; moves: Array<{ bytes?: number | null; disk?: MoveDisk; workload?: WorkloadCheck }> }> = [{ label: `XIA ${t.topology}`, moves: t.xia.moves }];
    if (t.tcp) cells.push({ label: `TCP ${t.tcp.mode}`, moves: t.tcp.moves });
    for (const cell of cells) {
      const disks = cell.moves.map((m) => m.disk).filter((d): d is MoveDisk => d !== undefined);
      const work = cell.moves.map((m) => m.workload).filter((w): w is WorkloadCheck => w !== undefined);
      const checked = disks.reduce((n, d) => n + (d.filesChecked ?? 0), 0);
      const bad = disks.reduce((n, d) => n + d.filesBad.length, 0);
      rows.push([
        cell.label,
        String(cell.moves.length),
        mb(median(cell.moves.map((m) => m.bytes ?? null))),
        mb(median(disks.map((d) => d.mirroredBytes))),
        mb(median(disks.map((d) => d.wireBytes))),
        duration(median(disks.map((d) => d.syncMs))),
        disks.length ? `${checked - bad} of ${checked} right` : '-',
        work.length ? `${work.filter((w) => w.ranOn && w.errors.length === 0).length} of ${work.length}` : '-',
        work.length ? String(median(work.map((w) => w.rate ?? null)) ?? '-') : '-',
      ]);
    }
  }
  const d = report.disk;
  const unit = report.options.workload === 'iperf3' ? 'Mbit/s' : 'MB/s';
  const columns = ['', 'moves', 'RAM', 'disk', 'NBD wire', 'mirror sync', 'files read back', `${report.options.workload} ran on`, unit];
  if (!d) return ['No disk: what the workload said across each move (iperf3 from C; over XIA through xmig tunnel):', ...table(columns, rows)];
  const head = [
    `The VM's disk: ${d.sizeMb} MB qcow2 with ${d.seedMb} MB of files, ${d.storage === 'full' ? 'full migration' : 'shared storage'}`,
    d.storage === 'full' ? "(each host its own image, the destination's empty until the mirror fills it):" : '(one image both hosts open; only RAM moves):',
  ];
  const c = d.check;
  return [
    ...head,
    ...table(columns, rows),
    `After the last move, on the host: e2fsck ${c.clean ? 'clean' : `NOT clean (${c.fsck ?? ''})`}; ${c.checked} files read out of the image, ${c.bad.length ? `${c.bad.length} NOT as written` : 'all as written'}.`,
  ];
}

export function formatLabReport(report: LabReport): string {
  const moves = report.topologies.map((t) => `${t.topology} ${t.xia.moves.length}`).join(', ');
  const m = report.machine;
  const lines = [
    `xmig lab: Table 1 of the paper on a real VM (${report.vm.memoryMb} MB, QEMU ${m.qemu ?? '?'} TCG), medians of`,
    `${moves} moves; MTU ${report.options.mtu}; xping every ${report.options.pingIntervalMs} ms (lost: no answer in ${duration(report.options.pingTimeoutMs)})`,
    "to the VM's DAG from before the moves, beside the Goldbach client's one STREAM to it.",
    `Machine: ${m.cpus} cores, ${m.memoryGiB} GiB, Linux ${m.kernel}, Node.js ${m.node}. Paper: KVM on Core i3, 2014.`,
    ...(report.options.channel === 'unix' ? ["Moves over XIA: QEMU's own unix: channel into the hosts' nodes (xmig migrate --channel unix)."] : []),
    '',
    ...table1(report),
    '',
    ...table2(report),
    "total: migrate -> destination RESUME; down: source STOP -> RESUME (QEMU's event clock).",
    '',
    ...downtimes(report),
    '',
    'In the VM (the agent, its clock): resume -> move seen -> notice acked, names registered, routes',
    'cleaned. On the hosts: RESUME -> new gateway registered the VM, each router rewrote, name server.',
    ...mobility(report),
    '',
    ...diskAndWorkload(report).flatMap((l, i, all) => (i === all.length - 1 ? [l, ''] : [l])),
    ...report.topologies.flatMap(checks),
  ];
  return lines.map((l) => (l.length > REPORT_WIDTH ? `${l.slice(0, REPORT_WIDTH - 1)}…` : l)).join('\n');
}
