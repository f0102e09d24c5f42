/**
 * QEMU live migration of a 640 MB guest whose 100 MB working set is being
 * rewritten, side by side in one run (medians of `runs`, transports interleaved):
 * QEMU's own `tcp:`, `exec:` through `xmig send|recv` over TCP, `exec:` through
 * `xmig send|recv` over xianet (host daemons A and B behind router R1 on UDP), and
 * the same with `--via-node` (the migration runs inside nodes A and B; send and recv
 * only pipe QEMU's stream), and QEMU's own `unix:` channel held by nodes A and B (no
 * process between QEMU and the node: `xmig migrate --channel unix`, and on the
 * destination `xmig recv --qemu-socket`'s request, made here in-process). The paper's Fig. 5 and Table 1 comparison, on TCG (KVM
 * does not boot guests here).
 * Total time and downtime are the guest's: from the migrate command, and from the
 * source's STOP event, to the destination's RESUME event (QMP event timestamps, one
 * host clock). QEMU's own `total-time` and `downtime` are given beside them: with
 * exec: they end when QEMU has written the last byte into the pipe, not when the
 * guest runs again.
 *
 * The mover's CPU per GB QEMU sent: nodes A, R1 and B (/proc deltas over the
 * migration) plus `xmig send` and `xmig recv` (the CPU of QEMU's reaped children:
 * cutime + cstime of both QEMUs). QEMU's own (its migration thread among the guest's)
 * is not in it, so `tcp:` shows 0.
 *
 * XMIG_BENCH_QEMU_RUNS (5), XMIG_BENCH_QEMU_TRANSPORTS (comma list of qemu-tcp, tcp, xia, xia-via-node, xia-unix).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { WellKnownSid } from '../shared/xid.js';
import { migrate, type MigrateTransport, type MigrationReport } from '../mover/migrate.js';
import { QmpClient } from '../mover/qmp-client.js';
import { migrateInNode, moverSocketOf } from '../mover/mover-client.js';
import { buildInitramfs, findBusybox, findKernel, qemuArgs, serialCounts, serialLog, WSS_READY } from '../test/e2e/guest.js';
import { waitFor } from '../test/support/wait.js';
import { XMIG_ARGV } from '../test/support/processes.js';
import { MIGRATION_HOSTS, UdpNetwork } from '../test/support/udp-network.js';
import { median } from './two-nodes.js';

export interface QemuMigrationResult {
  bench: 'qemu-migration';
  transport: string;
  guestMb: number;
  workingSetMb: number;
  runs: number;
  totalTimeMs: number;
  downtimeMs: number;
  qemuTotalTimeMs: number;
  qemuDowntimeMs: number;
  megabytes: number;
  /** Median total time over QEMU tcp:'s, and downtime minus QEMU tcp:'s. */
  totalTimeRatio?: number;
  extraDowntimeMs?: number;
  /** Spread: the fastest and slowest run's total time. */
  totalTimeRangeMs: [number, number];
  downtimeRangeMs: [number, number];
  /** Median CPU-seconds per GB sent: the mover's processes (send, recv, nodes A, R1, B), and in all. */
  moverCpuSecondsPerGb: { send?: number; recv?: number; A?: number; R1?: number; B?: number; total: number };
}

export type BenchTransport = MigrateTransport | 'xia-via-node' | 'xia-unix';

const LABELS: Record<BenchTransport, string> = {
  'qemu-tcp': 'QEMU tcp: (native)',
  tcp: 'exec: xmig send|recv over TCP',
  xia: 'exec: xmig send|recv over xianet',
  'xia-via-node': 'exec: xmig send|recv --via-node over xianet',
  'xia-unix': 'unix: QEMU into nodes A, B over xianet',
};

const CLOCK_TICKS = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout.trim()) || 100;

/** A process's own CPU seconds (user + system), and its reaped children's. */
function cpuOf(pid: number | undefined): { own: number; children: number } {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return { own: (Number(f[11]) + Number(f[12])) / CLOCK_TICKS, children: (Number(f[13]) + Number(f[14])) / CLOCK_TICKS };
  } catch {
    return { own: NaN, children: NaN };
  }
}

export async function runQemuMigrationBench(options: { runs?: number; guestMb?: number; workingSetMb?: number; transports?: BenchTransport[] } = {}): Promise<QemuMigrationResult[]> {
  const kernel = findKernel();
  const busybox = findBusybox();
  if (!kernel || !busybox) {
    process.stderr.write('qemu-migration: SKIPPED - needs qemu-system-x86_64, a kernel in /boot and static busybox (apt install qemu-system-x86 linux-image-amd64 busybox-static cpio)\n');
    return [];
  }
  const env = process.env;
  const runs = options.runs ?? Number(env['XMIG_BENCH_QEMU_RUNS'] ?? 5);
  const guestMb = options.guestMb ?? 640;
  const workingSetMb = options.workingSetMb ?? 100;
  const transports = options.transports ?? ((env['XMIG_BENCH_QEMU_TRANSPORTS']?.split(',') as BenchTransport[] | undefined) ?? ['qemu-tcp', 'tcp', 'xia', 'xia-via-node', 'xia-unix']);
  const dir = mkdtempSync(join(tmpdir(), 'xmig-bench-qemu-'));
  const initramfs = buildInitramfs(dir, busybox);
  const network = new UdpNetwork(MIGRATION_HOSTS, { logLevel: env['XMIG_BENCH_REPORTS'] ? 'debug' : undefined });
  await network.start();
  const qemus: ChildProcess[] = [];
  const startQemu = (name: string, incoming?: string): { log: string; qmp: string; pid: number | undefined } => {
    const log = join(dir, `${name}.log`);
    const qmp = join(dir, `${name}.qmp`);
    rmSync(log, { force: true });
    const guestEnv = { XMIG_WSS_MB: workingSetMb, XMIG_WSS_PAUSE_MS: 1000, XMIG_DIRTY_BLOCKS: 1 };
    const qemu = spawn('qemu-system-x86_64', qemuArgs({ kernel, initramfs, memoryMb: guestMb, serialLog: log, qmpSocket: qmp, incoming, guestEnv }), { stdio: 'ignore' });
    qemus.push(qemu);
    return { log, qmp, pid: qemu.pid };
  };
  const nodes = (['A', 'R1', 'B'] as const).map((name) => ({ name, pid: network.processes.get(name)!.child.pid! }));
  const xmig = [process.execPath, ...XMIG_ARGV].join(' ');
  interface Run {
    report: MigrationReport;
    totalTimeMs: number;
    downtimeMs: number;
    cpu: Record<'send' | 'recv' | 'A' | 'R1' | 'B', number>;
  }
  const once = async (transport: BenchTransport, run: number): Promise<Run> => {
    const port = 40000 + Math.floor(Math.random() * 20000);
    const qemuSocket = join(dir, `${transport}-${run}-incoming.sock`);
    const incoming =
      transport === 'qemu-tcp'
        ? `tcp:127.0.0.1:${port}`
        : transport === 'tcp'
          ? `exec:${xmig} recv --transport tcp --listen 127.0.0.1:${port}`
          : transport === 'xia-unix'
            ? `unix:${qemuSocket}`
            : `exec:${xmig} recv --api ${network.api('B')}${transport === 'xia-via-node' ? ' --via-node' : ''}`;
    const destination = startQemu(`${transport}-${run}-destination`, incoming);
    const source = startQemu(`${transport}-${run}-source`);
    // unix: node B connects to the destination QEMU's socket (retrying while QEMU starts), as `xmig recv --qemu-socket` asks it to.
    const received =
      transport === 'xia-unix' ? migrateInNode(moverSocketOf(network.api('B')), { op: 'recv', sid: WellKnownSid.MIGRATION.toString(), qemuSocket }) : undefined;
    received?.catch(() => undefined);
    try {
      await waitFor(() => serialCounts(source.log).length > 5 && serialLog(source.log).includes(WSS_READY), 120_000, 'the source guest and its working set');
      const xia = transport === 'xia' || transport === 'xia-via-node' || transport === 'xia-unix';
      const to = xia ? network.serviceDag('B', 'AD1', WellKnownSid.MIGRATION).toString() : `127.0.0.1:${port}`;
      const watch = await QmpClient.connect(destination.qmp);
      const nodesBefore = nodes.map((n) => cpuOf(n.pid).own);
      const logsBefore = nodes.map((n) => network.processes.get(n.name)!.logs.length);
      const qemusBefore = [cpuOf(source.pid).children, cpuOf(destination.pid).children];
      const report = await migrate({
        qmp: source.qmp,
        to,
        transport: xia ? 'xia' : transport,
        viaNode: transport === 'xia-via-node',
        channel: transport === 'xia-unix' ? 'unix' : 'exec',
        api: network.api('A'),
        xmigCommand: xmig,
        pollMs: 20,
      });
      const nodesAfter = nodes.map((n) => cpuOf(n.pid).own);
      // XMIG_BENCH_REPORTS=DIR keeps every run's report (QEMU's samples included) for a closer look.
      const keep = process.env['XMIG_BENCH_REPORTS'];
      if (keep) {
        writeFileSync(join(keep, `${transport}-${run}.json`), JSON.stringify(report, null, 1));
        // And the nodes' log lines of the run (at debug level: the mover's per-round events), for a timeline.
        const lines = nodes.flatMap((n, i) => network.processes.get(n.name)!.logs.slice(logsBefore[i]).map((l) => JSON.stringify({ node: n.name, ...l })));
        writeFileSync(join(keep, `${transport}-${run}-nodes.jsonl`), `${lines.join('\n')}\n`);
      }
      if (report.status !== 'completed') throw new Error(`${transport} migration ${report.status}: ${report.error ?? ''}`);
      await received;
      // The guest must run on at the destination, or the figures mean nothing.
      const counted = serialCounts(destination.log).length;
      await waitFor(() => serialCounts(destination.log).length > counted + 2, 30_000, 'the guest to count at the destination');
      const status = (await watch.execute<{ status: string }>('query-status')).status;
      const resume = watch.events.find((e) => e.event === 'RESUME')?.timestamp;
      await watch.close();
      if (status !== 'running' || !resume || report.sourceStoppedAt === undefined) throw new Error(`the destination guest is ${status} after the ${transport} migration (RESUME event: ${resume ? 'seen' : 'missing'})`);
      const resumedAt = resume.seconds * 1000 + resume.microseconds / 1000;
      // By now QEMU has reaped its exec: child on both sides (the guest runs on at the destination).
      const cpu = {
        send: cpuOf(source.pid).children - qemusBefore[0]!,
        recv: cpuOf(destination.pid).children - qemusBefore[1]!,
        A: nodesAfter[0]! - nodesBefore[0]!,
        R1: nodesAfter[1]! - nodesBefore[1]!,
        B: nodesAfter[2]! - nodesBefore[2]!,
      };
      return { report, totalTimeMs: Math.round(resumedAt - report.startedAt), downtimeMs: Math.round(resumedAt - report.sourceStoppedAt), cpu };
    } finally {
      for (const q of qemus.splice(0)) q.kill('SIGKILL');
    }
  };
  const reports = new Map<BenchTransport, Run[]>(transports.map((t) => [t, []]));
  try {
    // Interleaved, so drift in the machine's load hits every transport alike.
    for (let run = 0; run < runs; run++) for (const transport of transports) reports.get(transport)!.push(await once(transport, run));
  } finally {
    for (const q of qemus) q.kill('SIGKILL');
    await network.stop();
    rmSync(dir, { recursive: true, force: true });
  }
  const results = transports.map((transport): QemuMigrationResult => {
    const r = reports.get(transport)!;
    const gb = median(r.map((x) => x.report.bytes ?? NaN)) / 1e9;
    const perGb = (values: number[]): number => Math.round((median(values) / gb) * 100) / 100;
    const cpu: QemuMigrationResult['moverCpuSecondsPerGb'] = { total: 0 };
    if (transport !== 'qemu-tcp') {
      cpu.send = perGb(r.map((x) => x.cpu.send));
      cpu.recv = perGb(r.map((x) => x.cpu.recv));
    }
    const overXia = transport === 'xia' || transport === 'xia-via-node' || transport === 'xia-unix';
    if (overXia) for (const n of ['A', 'R1', 'B'] as const) cpu[n] = perGb(r.map((x) => x.cpu[n]));
    cpu.total = perGb(r.map((x) => (transport === 'qemu-tcp' ? 0 : x.cpu.send + x.cpu.recv) + (overXia ? x.cpu.A + x.cpu.R1 + x.cpu.B : 0)));
    const range = (values: number[]): [number, number] => [Math.min(...values), Math.max(...values)];
    return {
      bench: 'qemu-migration',
      transport: LABELS[transport],
      guestMb,
      workingSetMb,
      runs,
      totalTimeMs: median(r.map((x) => x.totalTimeMs)),
      downtimeMs: median(r.map((x) => x.downtimeMs)),
      qemuTotalTimeMs: median(r.map((x) => x.report.totalTimeMs ?? NaN)),
      qemuDowntimeMs: median(r.map((x) => x.report.downtimeMs ?? NaN)),
      megabytes: Math.round(median(r.map((x) => x.report.bytes ?? NaN)) / 1e5) / 10,
      totalTimeRangeMs: range(r.map((x) => x.totalTimeMs)),
      downtimeRangeMs: range(r.map((x) => x.downtimeMs)),
      moverCpuSecondsPerGb: cpu,
    };
  });
  const native = results[transports.indexOf('qemu-tcp')];
  if (native) {
    for (const r of results) {
      r.totalTimeRatio = Math.round((r.totalTimeMs / native.totalTimeMs) * 100) / 100;
      r.extraDowntimeMs = r.downtimeMs - native.downtimeMs;
    }
  }
  const lines = ['transport                                   total ms (min-max)  ratio  downtime ms  +tcp:  CPU-s/GB'];
  for (const r of results) {
    const total = `${r.totalTimeMs} (${r.totalTimeRangeMs.join('-')})`;
    const down = `${r.downtimeMs} (${r.downtimeRangeMs.join('-')})`;
    lines.push(`${r.transport.padEnd(43)} ${total.padStart(18)} ${String(r.totalTimeRatio ?? '-').padStart(6)} ${down.padStart(12)} ${String(r.extraDowntimeMs ?? '-').padStart(6)} ${String(r.moverCpuSecondsPerGb.total).padStart(9)}`);
  }
  process.stderr.write(`${lines.join('\n')}\n`);
  return results;
}
