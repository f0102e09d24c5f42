/**
 * The lab's figures and how they are computed from what was observed: the clients'
 * lines (lab/clients.ts), QEMU's events (lab/migration.ts), the hosts' and routers' logs,
 * the control ports' route lists (lab/routes.ts), and — for the in-VM figures only — the
 * agent's events on the VM's event log. Pure functions over those records, so the
 * report's arithmetic is tested apart from the machinery that gathers them.
 */
import type { DiskReport } from '../mover/disk-migration.js';
import { isDbenchError, type GuestEvent } from './guest-events.js';
import { longestGap, type AnswerRecord, type Iperf3Interval, type PingRecord } from './clients.js';
import type { Ipv4Mode, LabTopologyName } from './topology.js';

/** One move over XIA, as the clients, routers, name server, QEMU and the VM's agent saw it. */
export interface XiaMove {
  move: number;
  from: string;
  to: string;
  /** QMP migrate issued → destination RESUME (QEMU's event clock). */
  totalMs: number;
  /** Source STOP → destination RESUME. */
  downtimeMs: number | null;
  /** QEMU's own figures (they end when QEMU has written its last byte into the pipe). */
  qemuTotalMs: number | null;
  qemuDowntimeMs: number | null;
  bytes: number | null;
  /** xping: the run of lost echoes across the switchover, and n·Δt (the paper's downtime, ± Δt). */
  lostPings: number;
  xpingDowntimeMs: number;
  /** Echoes sent during the pre-copy, and how many of those never came back. */
  precopyPings: number;
  precopyLostPings: number;
  /** The longest time without a Goldbach answer, from the move's start to the next's. */
  goldbachGapMs: number;
  /** RESUME → the first echo sent after it that was answered; → the first answer read after it. */
  pingRecoveredMs: number | null;
  answerRecoveredMs: number | null;
  /** Seen on the hosts: RESUME → the new gateway registered the VM; → each router's rewrite; → the name server took the new record. */
  gatewayRegisteredMs: number | null;
  rewrittenMs: Record<string, number | null>;
  nameRegisteredMs: number | null;
  /** Measured inside the VM by the agent (its clock): perception → notice acked, names registered, stale routes removed; resume → perception. */
  agent: AgentFigures;
  /** Route entries that changed on each node (control-port `list` before and after). */
  routeChanges: string[];
  /** Each router's and hypervisor's route for the VM's HID after the move (null: none). */
  vmRouteAfter: Record<string, { port: number; nextHop: string } | null>;
  /** The old host's entry for the VM, and the VM's entry for its old host, are gone. */
  staleHostEntryGone: boolean;
  staleVmEntryGone: boolean | null;
  /** A new client on C resolving the name got the VM's current DAG; and got answers from it. */
  resolvedDag: string;
  resolvedCurrent: boolean;
  newClientAnswers: number;
  /** With a disk: what moved of it, and whether the guest read its files back right at the destination. */
  disk?: MoveDisk;
  /** With a workload beside the calculation (dbench, iperf3): whether it ran on across the move. */
  workload?: WorkloadCheck;
}

/** A move's disk: full migration's mirror figures (shared storage moves none), and the guest's files read back after it. */
export interface MoveDisk {
  storage: 'shared' | 'full';
  /** What the mirror copied (QEMU's measure), and NBD bytes on the wire toward the target. */
  mirroredBytes: number | null;
  wireBytes: number | null;
  /** The mirror's first full copy (mirror-sync), ms. */
  syncMs: number | null;
  /** Files the guest read back from its disk at the destination (page cache dropped), and those not as last written. */
  filesChecked: number | null;
  filesBad: string[];
}

export interface WorkloadCheck {
  name: 'dbench' | 'iperf3';
  /** It went on producing output after the destination resumed. */
  ranOn: boolean;
  /** What it said that was an error (at most a few lines). */
  errors: string[];
  /** Its own throughput: dbench's MB/s at the destination, iperf3's Mbit/s across the move (median of its reports). */
  rate?: number | null;
}

export interface AgentFigures {
  resumeToPerceivedMs: number | null;
  noticeAckedMs: number | null;
  registeredMs: number | null;
  cleanedMs: number | null;
  kind?: string;
}

export interface TcpMove {
  disk?: MoveDisk;
  workload?: WorkloadCheck;
  /** RAM bytes QEMU sent. */
  bytes?: number | null;
  move: number;
  from: string;
  to: string;
  totalMs: number;
  downtimeMs: number | null;
  qemuTotalMs: number | null;
  qemuDowntimeMs: number | null;
  /** The TCP client's longest silence around the move (null: no answer came back at all). */
  goldbachGapMs: number | null;
  /** An answer came on the held connection after the VM resumed. */
  survived: boolean;
  /** A new TCP connection from C to the VM's address after the move. */
  newConnection: 'answered' | 'failed';
}

export interface XiaRow {
  moves: XiaMove[];
  brokenConnections: number;
  goldbach: { answers: number; maxGapMs: number; ended: string; error?: string };
  xping: { sent: number; answered: number };
}

export interface TcpRow {
  mode: Ipv4Mode;
  moves: TcpMove[];
  brokenConnections: number;
  goldbach: { answers: number; ended: string; error?: string };
}

export interface Timeline {
  /** Lab clock, epoch ms; the timeline draws from `start`. */
  start: number;
  end: number;
  pings: Array<{ t: number; rttMs: number | null }>;
  answers: number[];
  tcpAnswers: number[];
  migrations: Array<{ label: string; transport: 'xia' | 'qemu-tcp'; requestedAt: number; stoppedAt: number | null; resumedAt: number; samples: Array<{ t: number; transferred: number; total: number }> }>;
}

export interface TopologyReport {
  topology: LabTopologyName;
  xia: XiaRow;
  tcp?: TcpRow;
  timeline: Timeline;
}

/** The paper's Table 1 (Zhang et al.), beside which the lab's figures are shown. */
export const PAPER_TABLE_1 = {
  'TCP/IP': { 'intra-ad': { total: '6.5 min', downtime: '1 s' }, 'inter-ad': { total: '-', downtime: '-' } },
  XIA: { 'intra-ad': { total: '14 min', downtime: '1.2 s' }, 'inter-ad': { total: '15 min', downtime: '1.2 s' } },
} as const;

/** The paper's Table 2: full migration (640 MB, 4 GB disk) over XIA with a workload in the VM. */
export const PAPER_TABLE_2 = {
  goldbach: { label: 'Calculation', 'intra-ad': { total: '14 min', downtime: '1.2 s' }, 'inter-ad': { total: '15 min', downtime: '1.2 s' } },
  dbench: { label: 'Dbench', 'intra-ad': { total: '12 min', downtime: '1.0 s' }, 'inter-ad': { total: '13 min', downtime: '1.5 s' } },
  iperf3: { label: 'Netperf', 'intra-ad': { total: '12 min', downtime: '1.7 s' }, 'inter-ad': { total: '14 min', downtime: '1.7 s' } },
} as const;

export function median(values: ReadonlyArray<number | null | undefined>): number | null {
  const known = values.filter((v): v is number => typeof v === 'number' && Number.isFinite(v)).sort((a, b) => a - b);
  if (known.length === 0) return null;
  const mid = known.length >> 1;
  return Math.round((known.length % 2 ? known[mid]! : (known[mid - 1]! + known[mid]!) / 2) * 10) / 10;
}

/**
 * The paper's downtime from xping: n echoes lost in a row around the switchover, n·Δt
 * (± Δt). The run counted is the one that holds the echoes sent while the VM was
 * stopped (source STOP → destination RESUME), stretched both ways while echoes stay
 * lost — so losses elsewhere in the move (a congested pre-copy) are counted apart, in
 * `precopyLost`: echoes sent from the migrate command to STOP that never came back.
 */
export function xpingDowntime(
  pings: PingRecord[],
  window: { requestedAt: number; stoppedAt: number | null; resumedAt: number },
  intervalMs: number,
): { lost: number; ms: number; precopyLost: number; precopySent: number } {
  const stoppedAt = window.stoppedAt ?? window.resumedAt;
  let first = pings.findIndex((p) => p.sentAt >= stoppedAt && p.sentAt <= window.resumedAt && p.rttMs === undefined);
  let lost = 0;
  if (first >= 0) {
    let last = first;
    while (first > 0 && pings[first - 1]!.rttMs === undefined) first--;
    while (last + 1 < pings.length && pings[last + 1]!.rttMs === undefined) last++;
    lost = last - first + 1;
  }
  const precopy = pings.filter((p) => p.sentAt >= window.requestedAt && p.sentAt < stoppedAt);
  return { lost, ms: lost * intervalMs, precopyLost: precopy.filter((p) => p.rttMs === undefined).length, precopySent: precopy.length };
}

export function goldbachGap(answers: AnswerRecord[], from: number, to: number): number {
  return Math.round(longestGap(answers, from, to).ms);
}

/** RESUME → the first echo sent after it that came back. */
export function pingRecovery(pings: PingRecord[], resumedAt: number): number | null {
  const first = pings.find((p) => p.sentAt >= resumedAt && p.rttMs !== undefined);
  return first ? Math.round(first.sentAt - resumedAt) : null;
}

export function answerRecovery(answers: AnswerRecord[], resumedAt: number): number | null {
  const first = answers.find((a) => a.at >= resumedAt);
  return first ? Math.round(first.at - resumedAt) : null;
}

/** ms from `from` to the first of `times` at or after it. */
export function firstAfter(times: number[], from: number): number | null {
  const t = times.filter((x) => x >= from).sort((a, b) => a - b)[0];
  return t === undefined ? null : Math.round(t - from);
}

const num = (v: unknown): number | null => (typeof v === 'number' && Number.isFinite(v) ? v : null);
const time = (e: GuestEvent): number | null => (typeof e.ts === 'string' ? Date.parse(e.ts) : null);

/**
 * The agent's own figures for one move, from the VM's event log (events after the
 * move's first one, `from`): perception → notice acked / registered / cleaned, as the
 * agent logs them (`ms`), and resume → perception on the guest's clock.
 */
export function agentFigures(events: readonly GuestEvent[]): AgentFigures {
  const agent = events.filter((e) => e.component === 'agent');
  const perceived = agent.find((e) => e.event === 'move.perceived');
  if (!perceived) return { resumeToPerceivedMs: null, noticeAckedMs: null, registeredMs: null, cleanedMs: null };
  const after = agent.slice(agent.indexOf(perceived));
  const resume = agent.find((e) => e.event === 'move.resume-perceived');
  const resumeAt = resume ? time(resume) : null;
  const perceivedAt = time(perceived);
  const ms = (event: string): number | null => num(after.find((e) => e.event === event)?.['ms']);
  return {
    resumeToPerceivedMs: resumeAt !== null && perceivedAt !== null && perceivedAt >= resumeAt ? perceivedAt - resumeAt : null,
    noticeAckedMs: ms('move.notified'),
    registeredMs: ms('move.registered'),
    cleanedMs: ms('move.cleaned'),
    ...(typeof perceived['kind'] === 'string' ? { kind: perceived['kind'] } : {}),
  };
}

/** Full migration's figures from xmig migrate's disk report (none on shared storage). */
export function mirrorFigures(report: DiskReport | undefined): Pick<MoveDisk, 'mirroredBytes' | 'wireBytes' | 'syncMs'> {
  if (!report) return { mirroredBytes: null, wireBytes: null, syncMs: null };
  const sync = report.phases.find((p) => p.phase === 'mirror-sync');
  return {
    mirroredBytes: report.mirroredBytes,
    wireBytes: report.wire.toTarget,
    syncMs: sync?.endMs !== undefined ? Math.round(sync.endMs - sync.startMs) : null,
  };
}

/**
 * The guest's writes so far, file name → the SHA-1 it last logged for it
 * (`guest.file-wrote`, logged only once the file is fsynced), over the event logs of
 * every QEMU the VM has run in, in order.
 */
export function lastWrites(events: Iterable<GuestEvent>, into: Map<string, string> = new Map()): Map<string, string> {
  for (const e of events) {
    if (e.event === 'guest.file-wrote' && typeof e['file'] === 'string' && typeof e['sha1'] === 'string') into.set(e['file'], e['sha1']);
  }
  return into;
}

/** The files the guest read back whose SHA-1 is not the one last written (or that it did not find). */
export function badFiles(written: ReadonlyMap<string, string>, readBack: Readonly<Record<string, string>>): string[] {
  const bad: string[] = [];
  for (const [file, sha1] of written) {
    const got = readBack[file];
    if (got !== sha1) bad.push(`${file}: wrote ${sha1.slice(0, 12)}, read ${got === undefined ? 'nothing' : got.slice(0, 12)}`);
  }
  return bad;
}

/**
 * dbench prints a line per second: `  1   1234   12.34 MB/sec  execute 10 sec  latency 1.234 ms`
 * (`warmup` instead of `execute` for its first fifth: the lab's dbench runs for a day, so
 * all of a lab run is its warmup — real I/O all the same).
 */
const DBENCH_PROGRESS = /([\d.]+) MB\/sec\s+(execute|warmup)/;

/**
 * dbench across one move, from what it printed (`guest.dbench` events' `line`) in the
 * destination's event log — which begins at the migration, so all of it is after the
 * move: it ran on if it printed progress there, errors are lines about an error or failure.
 */
export function dbenchCheck(lines: readonly string[]): WorkloadCheck {
  const errors = lines.filter(isDbenchError).map((l) => l.trim());
  const rates = lines.map((l) => DBENCH_PROGRESS.exec(l)?.[1]).filter((r): r is string => r !== undefined).map(Number);
  return { name: 'dbench', ranOn: rates.length > 0, errors: errors.slice(0, 3), rate: median(rates) };
}

/** How many of `lines` are dbench's per-second progress lines. */
export function dbenchProgressLines(lines: readonly string[]): number {
  return lines.filter((l) => DBENCH_PROGRESS.test(l)).length;
}

/**
 * iperf3 across one move (lab clock): it ran on if a second's report read at least a
 * second after RESUME (so not one still counting bytes from before the move) carried
 * bytes; its rate is the median over the move's window, its errors those in the window.
 */
export function iperf3Check(
  report: { intervals: readonly Iperf3Interval[]; errors: ReadonlyArray<{ at: number; text: string }> },
  window: { from: number; resumedAt: number; to: number },
): WorkloadCheck {
  const inMove = report.intervals.filter((i) => i.at >= window.from && i.at <= window.to);
  return {
    name: 'iperf3',
    ranOn: report.intervals.some((i) => i.at > window.resumedAt + 1000 && i.at <= window.to && i.mbps > 0),
    errors: report.errors.filter((e) => e.at >= window.from && e.at <= window.to).map((e) => e.text).slice(0, 3),
    rate: median(inMove.map((i) => i.mbps)),
  };
}
