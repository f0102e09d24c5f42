/**
 * QEMU live migration of a 640 MB guest whose 100 MB working set is being
 * rewritten, side by side in one run (medians of `runs`, transports interleaved):
 * QEMU's own `tcp:`, `exec:` through `xmig send|recv` over TCP, and `exec:` through
 * `xmig send|recv` over xianet (host daemons A and B behind router R1 on UDP). The
 * paper's Fig. 5 and Table 1 comparison, on TCG (KVM does not boot guests here).
 * Total time and downtime are the guest's: from the migrate command, and from the
 * source's STOP event, to the destination's RESUME event (QMP event timestamps, one
 * host clock). QEMU's own `total-time` and `downtime` are given beside them: with
 * exec: they end when QEMU has written the last byte into the pipe, not when the
 * guest runs again.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { WellKnownSid } from '../shared/xid.js';
import { migrate, type MigrateTransport, type MigrationReport } from '../mover/migrate.js';
import { QmpClient } from '../mover/qmp-client.js';
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
}

const LABELS: Record<MigrateTransport, string> = {
  'qemu-tcp': 'QEMU tcp: (native)',
  tcp: 'exec: xmig send|recv over TCP',
  xia: 'exec: xmig send|recv over xianet',
};

export async function runQemuMigrationBench(options: { runs?: number; guestMb?: number; workingSetMb?: number; transports?: MigrateTransport[] } = {}): Promise<QemuMigrationResult[]> {
  const kernel = findKernel();
  const busybox = findBusybox();
  if (!kernel || !busybox) {
    process.stderr.write('qemu-migration: SKIPPED - needs qemu-system-x86_64, a kernel in /boot and static busybox (apt install qemu-system-x86 linux-image-amd64 busybox-static cpio)\n');
    return [];
  }
  const runs = options.runs ?? 5;
  const guestMb = options.guestMb ?? 640;
  const workingSetMb = options.workingSetMb ?? 100;
  const transports = options.transports ?? ['qemu-tcp', 'tcp', 'xia'];
  const dir = mkdtempSync(join(tmpdir(), 'xmig-bench-qemu-'));
  const initramfs = buildInitramfs(dir, busybox);
  const network = new UdpNetwork(MIGRATION_HOSTS);
  await network.start();
  const qemus: ChildProcess[] = [];
  const startQemu = (name: string, incoming?: string): { log: string; qmp: string } => {
    const log = join(dir, `${name}.log`);
    const qmp = join(dir, `${name}.qmp`);
    rmSync(log, { force: true });
    const guestEnv = { XMIG_WSS_MB: workingSetMb, XMIG_WSS_PAUSE_MS: 1000, XMIG_DIRTY_BLOCKS: 1 };
    qemus.push(spawn('qemu-system-x86_64', qemuArgs({ kernel, initramfs, memoryMb: guestMb, serialLog: log, qmpSocket: qmp, incoming, guestEnv }), { stdio: 'ignore' }));
    return { log, qmp };
  };
  const xmig = [process.execPath, ...XMIG_ARGV].join(' ');
  interface Run {
    report: MigrationReport;
    totalTimeMs: number;
    downtimeMs: number;
  }
  const once = async (transport: MigrateTransport, run: number): Promise<Run> => {
    const port = 40000 + Math.floor(Math.random() * 20000);
    const incoming =
      transport === 'qemu-tcp'
        ? `tcp:127.0.0.1:${port}`
        : transport === 'tcp'
          ? `exec:${xmig} recv --transport tcp --listen 127.0.0.1:${port}`
          : `exec:${xmig} recv --api ${network.api('B')}`;
    const destination = startQemu(`${transport}-${run}-destination`, incoming);
    const source = startQemu(`${transport}-${run}-source`);
    try {
      await waitFor(() => serialCounts(source.log).length > 5 && serialLog(source.log).includes(WSS_READY), 120_000, 'the source guest and its working set');
      const to = transport === 'xia' ? network.serviceDag('B', 'AD1', WellKnownSid.MIGRATION).toString() : `127.0.0.1:${port}`;
      const watch = await QmpClient.connect(destination.qmp);
      const report = await migrate({ qmp: source.qmp, to, transport, api: network.api('A'), xmigCommand: xmig, pollMs: 20 });
      // XMIG_BENCH_REPORTS=DIR keeps every run's report (QEMU's samples included) for a closer look.
      const keep = process.env['XMIG_BENCH_REPORTS'];
      if (keep) writeFileSync(join(keep, `${transport}-${run}.json`), JSON.stringify(report, null, 1));
      if (report.status !== 'completed') throw new Error(`${transport} migration ${report.status}: ${report.error ?? ''}`);
      // The guest must run on at the destination, or the figures mean nothing.
      const counted = serialCounts(destination.log).length;
      await waitFor(() => serialCounts(destination.log).length > counted + 2, 30_000, 'the guest to count at the destination');
      const status = (await watch.execute<{ status: string }>('query-status')).status;
      const resume = watch.events.find((e) => e.event === 'RESUME')?.timestamp;
      await watch.close();
      if (status !== 'running' || !resume || report.sourceStoppedAt === undefined) throw new Error(`the destination guest is ${status} after the ${transport} migration (RESUME event: ${resume ? 'seen' : 'missing'})`);
      const resumedAt = resume.seconds * 1000 + resume.microseconds / 1000;
      return { report, totalTimeMs: Math.round(resumedAt - report.startedAt), downtimeMs: Math.round(resumedAt - report.sourceStoppedAt) };
    } finally {
      for (const q of qemus.splice(0)) q.kill('SIGKILL');
    }
  };
  const reports = new Map<MigrateTransport, Run[]>(transports.map((t) => [t, []]));
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
    };
  });
  const native = results[transports.indexOf('qemu-tcp')];
  if (native) {
    for (const r of results) {
      r.totalTimeRatio = Math.round((r.totalTimeMs / native.totalTimeMs) * 100) / 100;
      r.extraDowntimeMs = r.downtimeMs - native.downtimeMs;
    }
  }
  return results;
}
