/**
 * Full migration (RAM and disk) of the paper's VM — Sect. 5: 640 MB of RAM and a 4 GB
 * virtual disk, a few hundred MB of it used — side by side in one run, transports
 * interleaved, medians of `runs`:
 *
 *  - `xia`: `xmig migrate --disk`, RAM through `xmig send|recv` and the disk through the
 *    NBD tunnel to `xmig disk-target`, over xianet (host daemons A and B behind router R1
 *    on UDP);
 *  - `qemu-tcp`: the TCP/IP baseline, QEMU's own `tcp:` for RAM and NBD over TCP for the
 *    disk (`xmig disk-target --transport tcp --nbd-listen`).
 *
 * Workloads in the guest: `counter` (the e2e guest: it counts and rewrites a few MiB of
 * memory every 100 ms, where the paper's calculation would need a network) and `dbench`
 * (Debian's dbench on the guest's ext4 disk through the whole move; its own output, read
 * at the destination, says whether it ran on without an error). The paper's Table 2 with
 * its Goldbach and network workloads needs the VM on a network: that is the lab's
 * (`npm run bench lab-full`).
 *
 * Total time runs from the start of the mirror to the destination's RESUME event, downtime
 * from the source's STOP event to it (QMP event timestamps, one host clock); QEMU's own
 * downtime is given beside. XMIG_BENCH_RUNS (5), XMIG_BENCH_WORKLOADS (counter,dbench),
 * XMIG_BENCH_TRANSPORTS (xia,qemu-tcp), XMIG_BENCH_USED_MB (300).
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { WellKnownSid } from '../shared/xid.js';
import { QmpClient } from '../mover/qmp-client.js';
import { buildInitramfs, DBENCH_PREFIX, DISK_MODULES, DISK_WROTE, diskLines, findBusybox, findDbench, findKernel, kernelRelease, moduleFiles, qemuArgs, serialLog } from '../test/e2e/guest.js';
import { runXmig, startXmig, XMIG_ARGV } from '../test/support/processes.js';
import { MIGRATION_HOSTS, UdpNetwork } from '../test/support/udp-network.js';
import { waitFor } from '../test/support/wait.js';
import { median } from './two-nodes.js';

type Workload = 'counter' | 'dbench';
type Transport = 'xia' | 'qemu-tcp';

export interface FullMigrationResult {
  bench: 'full-migration';
  transport: Transport;
  workload: Workload;
  guestMb: number;
  diskGb: number;
  usedMb: number;
  runs: number;
  completed: number;
  totalTimeMs: number | null;
  downtimeMs: number | null;
  qemuDowntimeMs: number | null;
  /** The disk's sync phase (copying what is used). */
  mirrorSyncMs: number | null;
  ramMegabytes: number | null;
  /** NBD bytes through the tunnel (xia; QEMU's own NBD over TCP is not counted). */
  diskWireMegabytes: number | null;
  /** dbench ran on at the destination without an error, in every run. */
  workloadOk: boolean;
  failures?: string[];
}

const MIB = 1024 * 1024;

export async function runFullMigrationBench(): Promise<FullMigrationResult[]> {
  const kernel = findKernel();
  const busybox = findBusybox();
  const modules = kernel ? moduleFiles(kernelRelease(kernel), DISK_MODULES) : undefined;
  const dbench = findDbench();
  if (!kernel || !busybox || !modules) {
    process.stderr.write('full-migration: SKIPPED - needs QEMU 10, a kernel in /boot with its modules, static busybox, qemu-utils, e2fsprogs\n');
    return [];
  }
  const runs = Number(process.env['XMIG_BENCH_RUNS'] ?? 5);
  const usedMb = Number(process.env['XMIG_BENCH_USED_MB'] ?? 300);
  const workloads = (process.env['XMIG_BENCH_WORKLOADS'] ?? 'counter,dbench').split(',') as Workload[];
  const transports = (process.env['XMIG_BENCH_TRANSPORTS'] ?? 'xia,qemu-tcp').split(',') as Transport[];
  if (workloads.includes('dbench') && !dbench) process.stderr.write('full-migration: dbench is not installed (apt-get install dbench): its cells are skipped\n');
  const guestMb = 640;
  const diskGb = 4;
  const dir = mkdtempSync(join(tmpdir(), 'xmig-bench-full-'));
  const initramfs = buildInitramfs(dir, busybox, modules, { dbench });
  // The paper's disk: 4 GB virtual, a few hundred MB used (files of random data), ext4.
  const rootDir = join(dir, 'disk-root');
  mkdirSync(rootDir);
  const chunk = Buffer.allocUnsafe(64 * MIB);
  for (let i = 0; i * 64 < usedMb; i++) writeFileSync(join(rootDir, `used-${i}.bin`), randomFillSync(chunk).subarray(0, Math.min(64, usedMb - i * 64) * MIB));
  writeFileSync(join(rootDir, 'before.bin'), randomFillSync(Buffer.allocUnsafe(MIB)));
  const raw = join(dir, 'guest.raw');
  execFileSync('mkfs.ext4', ['-q', '-F', '-d', rootDir, raw, `${diskGb}G`]);
  const template = join(dir, 'guest.qcow2');
  execFileSync('qemu-img', ['convert', '-O', 'qcow2', raw, template]);
  rmSync(raw);
  rmSync(rootDir, { recursive: true });
  const network = new UdpNetwork(MIGRATION_HOSTS);
  await network.start();
  const xmig = [process.execPath, ...XMIG_ARGV].join(' ');
  const qemus: ChildProcess[] = [];
  const freePort = (): Promise<number> =>
    new Promise((resolve) => {
      const server = createServer().listen(0, '127.0.0.1', () => {
        const { port } = server.address() as AddressInfo;
        server.close(() => resolve(port));
      });
    });

  interface Run {
    totalTimeMs: number;
    downtimeMs: number;
    qemuDowntimeMs: number;
    mirrorSyncMs: number;
    ramBytes: number;
    diskWire: number;
    workloadOk: boolean;
    /** What the workload said that was not right. */
    workloadNote?: string;
  }

  const once = async (transport: Transport, workload: Workload, run: string): Promise<Run> => {
    const guest = (name: string, image: string, incoming?: string): { log: string; qmp: string; observer: string } => {
      const log = join(dir, `${name}.log`);
      const qmp = join(dir, `${name}.qmp`);
      const observer = join(dir, `${name}.observer.qmp`);
      for (const f of [log, qmp, observer]) rmSync(f, { force: true });
      const guestEnv = { XMIG_DISK: 1, XMIG_DIRTY_BLOCKS: 32, ...(workload === 'dbench' ? { XMIG_DBENCH: 3600 } : {}) };
      qemus.push(
        spawn('qemu-system-x86_64', qemuArgs({ kernel, initramfs, memoryMb: guestMb, serialLog: log, qmpSocket: qmp, observerSocket: observer, incoming, commandSocket: join(dir, `${name}.cmd`), disk: { image, format: 'qcow2' }, guestEnv }), { stdio: 'ignore' }),
      );
      return { log, qmp, observer };
    };
    const sourceImage = join(dir, `${run}-src.qcow2`);
    copyFileSync(template, sourceImage);
    const destImage = join(dir, `${run}-dst.qcow2`);
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', destImage, `${diskGb}G`]);
    const ports = { ram: await freePort(), control: await freePort(), nbd: await freePort() };
    const source = guest(`${run}-src`, sourceImage);
    const incoming = transport === 'xia' ? `exec:${xmig} recv --api ${network.api('B')}` : `tcp:127.0.0.1:${ports.ram}`;
    const dest = guest(`${run}-dst`, destImage, incoming);
    try {
      await waitFor(() => diskLines(source.log, DISK_WROTE).size >= 2 && (workload !== 'dbench' || serialLog(source.log).includes(`${DBENCH_PREFIX} `)), 300_000, 'the source guest to mount its disk and start its workload');
      const target = startXmig(
        transport === 'xia'
          ? ['disk-target', '--qmp', dest.qmp, '--api', network.api('B')]
          : ['disk-target', '--qmp', dest.qmp, '--transport', 'tcp', '--listen', `127.0.0.1:${ports.control}`, '--nbd-listen', `127.0.0.1:${ports.nbd}`],
      );
      await target.waitForLog('disk-target.listening', 60_000);
      const observer = await QmpClient.connect(dest.observer);
      const resumed = new Promise<number>((resolve) =>
        observer.onEvent((e) => {
          if (e.event === 'RESUME' && e.timestamp) resolve(e.timestamp.seconds * 1000 + e.timestamp.microseconds / 1000);
        }),
      );
      const args =
        transport === 'xia'
          ? ['--to', network.serviceDag('B', 'AD1', WellKnownSid.MIGRATION).toString(), '--api', network.api('A')]
          : ['--transport', 'qemu-tcp', '--to', `127.0.0.1:${ports.ram}`, '--disk-to', `127.0.0.1:${ports.control}`];
      const result = await runXmig(['migrate', '--qmp', source.qmp, ...args, '--disk', '--xmig', xmig, '--json', '--no-progress'], 1_800_000);
      if (result.code !== 0) throw new Error(`${transport}/${workload}: ${result.stderr.trim()} ${result.stdout.slice(0, 500)}`);
      const report = JSON.parse(result.stdout) as { startedAt: number; sourceStoppedAt: number; downtimeMs: number; bytes: number; disk: { wire: { toTarget: number }; phases: Array<{ phase: string; startMs: number; endMs: number }> } };
      const resumedAt = await resumed;
      await observer.close();
      await target.exited;
      let workloadOk = true;
      let workloadNote: string | undefined;
      if (workload === 'dbench') {
        // dbench's own word at the destination: it goes on printing, and never an error.
        const at = serialLog(dest.log).split('\n').filter((l) => l.includes(DBENCH_PREFIX)).length;
        await waitFor(() => serialLog(dest.log).split('\n').filter((l) => l.includes(DBENCH_PREFIX)).length >= at + 3, 120_000, 'dbench to go on at the destination');
        // dbench 4.0 says "failed to create barrier semaphore" when semget gives it id 0, the
        // first one on a fresh kernel, and goes on with it: that line is not an error.
        const bad = (serialLog(source.log) + serialLog(dest.log))
          .split('\n')
          .filter((l) => l.includes(DBENCH_PREFIX) && /error|fail|unable|no such/i.test(l) && !l.includes('failed to create barrier semaphore'));
        workloadOk = bad.length === 0;
        if (bad.length) workloadNote = bad.slice(0, 3).join(' | ');
      }
      const sync = report.disk.phases.find((p) => p.phase === 'mirror-sync')!;
      return {
        totalTimeMs: Math.round(resumedAt - report.startedAt),
        downtimeMs: Math.round(resumedAt - report.sourceStoppedAt),
        qemuDowntimeMs: report.downtimeMs,
        mirrorSyncMs: sync.endMs - sync.startMs,
        ramBytes: report.bytes,
        diskWire: report.disk.wire.toTarget,
        workloadOk,
        ...(workloadNote ? { workloadNote } : {}),
      };
    } finally {
      for (const q of qemus.splice(0)) q.kill('SIGKILL');
      rmSync(sourceImage, { force: true });
      rmSync(destImage, { force: true });
    }
  };

  const cells = new Map<string, { transport: Transport; workload: Workload; runs: Run[]; failures: string[] }>();
  for (const workload of workloads) for (const transport of transports) cells.set(`${transport}/${workload}`, { transport, workload, runs: [], failures: [] });
  try {
    for (let run = 0; run < runs; run++) {
      for (const cell of cells.values()) {
        if (cell.workload === 'dbench' && !dbench) continue;
        try {
          const result = await once(cell.transport, cell.workload, `${cell.transport}-${cell.workload}-${run}`);
          cell.runs.push(result);
          if (result.workloadNote) cell.failures.push(`${cell.workload}: ${result.workloadNote}`);
        } catch (error) {
          cell.failures.push((error as Error).message.slice(0, 300));
        }
        process.stderr.write(`full-migration: ${cell.transport}/${cell.workload} run ${run + 1} of ${runs} done\n`);
      }
    }
  } finally {
    for (const q of qemus) q.kill('SIGKILL');
    await network.stop();
    rmSync(dir, { recursive: true, force: true });
  }
  const med = (runs: Run[], f: (r: Run) => number): number | null => (runs.length ? Math.round(median(runs.map(f))) : null);
  return [...cells.values()].map((cell) => ({
    bench: 'full-migration',
    transport: cell.transport,
    workload: cell.workload,
    guestMb,
    diskGb,
    usedMb,
    runs,
    completed: cell.runs.length,
    totalTimeMs: med(cell.runs, (r) => r.totalTimeMs),
    downtimeMs: med(cell.runs, (r) => r.downtimeMs),
    qemuDowntimeMs: med(cell.runs, (r) => r.qemuDowntimeMs),
    mirrorSyncMs: med(cell.runs, (r) => r.mirrorSyncMs),
    ramMegabytes: cell.runs.length ? Number((median(cell.runs.map((r) => r.ramBytes)) / MIB).toFixed(1)) : null,
    diskWireMegabytes: cell.runs.length ? Number((median(cell.runs.map((r) => r.diskWire)) / MIB).toFixed(1)) : null,
    workloadOk: cell.runs.length > 0 && cell.runs.every((r) => r.workloadOk),
    ...(cell.failures.length ? { failures: cell.failures } : {}),
  }));
}
