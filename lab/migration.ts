/**
 * One live migration of the lab VM from hypervisor `from` to hypervisor `to`, as the
 * paper does it: the destination QEMU is started first, in `to`'s namespace, with its
 * own tap on `to`'s segment and `-incoming "exec:xmig recv"` (or QEMU's own
 * `tcp:`, for the TCP/IP baseline); then `xmig migrate`, run in `from`'s namespace
 * against `from`'s node, drives the source QEMU over QMP to `exec:xmig send`. With the
 * `unix` channel, QEMU's own `unix:` migration channel goes straight into the hosts'
 * nodes instead: the destination QEMU listens on `-incoming unix:`, `xmig recv
 * --qemu-socket` (in `to`'s namespace) has `to`'s node connect to it, and `xmig migrate
 * --channel unix` has `from`'s node listen for the source QEMU.
 *
 * The lab watches both QEMUs on their observer monitors (QMP serves one client per
 * monitor; `xmig migrate` holds the other): the source's progress (query-migrate) and
 * STOP, the destination's RESUME. Total time is migrate → destination RESUME, downtime
 * source STOP → destination RESUME, both on QEMU's event clock (this machine's). QEMU's
 * own figures (`total-time`, `downtime`) come from `xmig migrate`'s report beside them.
 * Once the destination runs, the source QEMU (paused, post-migrate) is stopped.
 *
 * With a disk: on shared storage both QEMUs open the one image and only RAM moves; in a
 * full migration the destination QEMU gets a new, empty image of the source's size, and
 * `xmig disk-target` beside it (in `to`'s namespace) exports it to the source's mirror —
 * over XIA through the mover's NBD tunnel, or for the TCP/IP baseline QEMU's own NBD over
 * TCP — and `xmig migrate --disk` drives both. A failed move removes the new image.
 */
import { existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { XmigError, errorMessage } from '../shared/errors.js';
import type { DiskReport } from '../mover/disk-migration.js';
import type { MigrationReport, MigrationSample } from '../mover/migrate.js';
import { QmpClient, type QmpEvent } from '../mover/qmp-client.js';
import type { GuestConfig } from './guest/guest-config.js';
import type { LabImage } from './image/build-image.js';
import { emptyDisk } from './lab-disk.js';
import { LabProcess, xmigCommand } from './lab-process.js';
import type { DataDisk } from './qemu-command.js';
import { bridgeOf, DISK_TARGET_TCP_PORT, NBD_TCP_PORT, QEMU_TCP_PORT, type Hypervisor } from './topology.js';
import { LabVm } from './vm.js';
import type { LabWorld } from './world.js';

export type MoveTransport = 'xia' | 'qemu-tcp';

export interface MoveProgress {
  phase: 'destination' | 'migrating' | 'switchover' | 'resumed';
  status?: string;
  transferred?: number;
  total?: number;
  ms: number;
}

export interface MoveOptions {
  world: LabWorld;
  image: Pick<LabImage, 'kernel' | 'initramfs'>;
  config: GuestConfig;
  mac: string;
  memoryMb?: number;
  source: LabVm;
  from: Hypervisor;
  to: Hypervisor;
  transport: MoveTransport;
  /** xia: the destination's migration DAG and the source host's node API socket. */
  xia?: { to: string; sourceApi: string; destinationApi: string };
  /** xia: QEMU's stream through `exec:xmig send|recv` (default, the paper's mode) or QEMU's `unix:` channel into the nodes. */
  channel?: 'exec' | 'unix';
  /** qemu-tcp: the destination host's IPv4 address. */
  tcpAddress?: string;
  /** This move's directory (the destination VM's files, the report). */
  dir: string;
  /** A unique tap name for the destination. */
  tap: string;
  /**
   * The VM's disk. shared: the image both QEMUs open; full: the source's image, and the
   * destination gets a new empty one at `destinationFile`.
   */
  disk?: { mode: 'shared'; image: DataDisk } | { mode: 'full'; image: DataDisk; sizeBytes: number; destinationFile: string };
  /** QEMU's auto-converge (throttle a guest that dirties memory faster than it migrates). */
  autoConverge?: boolean;
  deadlineMs: number;
  signal?: AbortSignal;
  onProgress?: (progress: MoveProgress) => void;
}

export interface MoveResult {
  from: Hypervisor;
  to: Hypervisor;
  transport: MoveTransport;
  destination: LabVm;
  /** Epoch ms (lab clock) the lab issued `xmig migrate`. */
  requestedAt: number;
  /** xmig migrate's report (its `startedAt`: when it issued QMP migrate). */
  report: MigrationReport;
  /** QEMU event clock: source STOP, destination RESUME (epoch ms). */
  sourceStoppedAt?: number;
  resumedAt: number;
  /** migrate issued → destination RESUME. */
  totalMs: number;
  /** source STOP → destination RESUME. */
  downtimeMs?: number;
  /** The source's query-migrate samples, as the lab saw them (for the timeline). */
  samples: Array<MigrationSample & { at: number }>;
  /** The destination VM's disk (full migration: its new image). */
  disk?: DataDisk;
  /** Full migration: the disk's figures (xmig migrate's). */
  diskReport?: DiskReport;
}

const eventTime = (event: QmpEvent): number | undefined => (event.timestamp ? event.timestamp.seconds * 1000 + event.timestamp.microseconds / 1000 : undefined);

function waitForQmpEvent(qmp: QmpClient, name: string, deadlineMs: number, signal?: AbortSignal, failure?: () => string | undefined): Promise<QmpEvent> {
  return new Promise((resolve, reject) => {
    const seen = qmp.events.find((e) => e.event === name);
    if (seen) return resolve(seen);
    let poll: NodeJS.Timeout | undefined;
    const finish = (error?: Error, event?: QmpEvent): void => {
      clearTimeout(timer);
      clearInterval(poll);
      off();
      signal?.removeEventListener('abort', onAbort);
      if (error) reject(error);
      else resolve(event!);
    };
    const off = qmp.onEvent((e) => e.event === name && finish(undefined, e));
    const onAbort = (): void => finish(new XmigError('ERR_TIMEOUT', `aborted waiting for QEMU's ${name}`));
    const timer = setTimeout(() => finish(new XmigError('ERR_TIMEOUT', `no ${name} from QEMU within ${Math.round(deadlineMs / 1000)} s`)), deadlineMs);
    if (failure) {
      poll = setInterval(() => {
        const why = failure();
        if (why) finish(new XmigError('ERR_MIGRATION', why));
      }, 200);
    }
    if (signal?.aborted) return onAbort();
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

export async function moveVm(options: MoveOptions): Promise<MoveResult> {
  const { world, from, to } = options;
  mkdirSync(options.dir, { recursive: true });
  const t0 = performance.now();
  const ms = (): number => Math.round(performance.now() - t0);
  options.onProgress?.({ phase: 'destination', ms: ms() });
  const recvStats = join(options.dir, 'recv.json');
  let incoming: string;
  const unixChannel = options.transport === 'xia' && options.channel === 'unix';
  const qemuSocket = join(options.dir, 'incoming.sock');
  if (options.transport === 'xia') {
    if (!options.xia) throw new XmigError('ERR_CONFIG', 'a move over XIA needs the destination DAG and the node sockets');
    incoming = unixChannel ? `unix:${qemuSocket}` : `exec:${xmigCommand().join(' ')} recv --api ${options.xia.destinationApi} --stats ${recvStats}`;
  } else {
    incoming = `tcp:0.0.0.0:${QEMU_TCP_PORT}`;
  }
  const disk = options.disk;
  const destinationDisk: DataDisk | undefined = disk?.mode === 'full' ? { file: disk.destinationFile, format: 'qcow2' } : disk?.image;
  if (disk?.mode === 'full') await emptyDisk(disk.destinationFile, disk.sizeBytes, options.signal);
  const destination = new LabVm({
    netns: world.ns(to),
    tap: options.tap,
    bridge: bridgeOf(to),
    mac: options.mac,
    image: options.image,
    config: options.config,
    dir: join(options.dir, 'vm'),
    memoryMb: options.memoryMb,
    incoming,
    ...(destinationDisk ? { disk: destinationDisk } : {}),
    deadlineMs: options.deadlineMs,
    signal: options.signal,
  });
  let diskTarget: LabProcess | undefined;
  let recv: LabProcess | undefined;
  let sourceObserver: QmpClient | undefined;
  let destinationObserver: QmpClient | undefined;
  let migrate: LabProcess | undefined;
  let sampler: NodeJS.Timeout | undefined;
  try {
    await destination.start();
    if (disk?.mode === 'full') diskTarget = await startDiskTarget(options, destination);
    if (unixChannel) {
      // Holds the destination's side open: to's node connects to the QEMU listening above and writes the stream into it.
      const args = ['recv', '--api', options.xia!.destinationApi, '--qemu-socket', qemuSocket, '--stats', recvStats];
      recv = new LabProcess({ net: world.net, ns: world.ns(to), name: `xmig recv --qemu-socket on ${to}`, args, stderrFile: join(options.dir, 'recv.stderr') });
      await recv.start();
    }
    destinationObserver = await QmpClient.connect(destination.observerQmpSocket, 30_000);
    sourceObserver = await QmpClient.connect(options.source.observerQmpSocket, 30_000);
    await sourceObserver.execute('migrate-set-capabilities', { capabilities: [{ capability: 'events', state: true }] }).catch(() => undefined);
    const samples: MoveResult['samples'] = [];
    const reportFile = join(options.dir, 'migrate.json');
    const target = options.transport === 'xia' ? options.xia!.to : `${options.tcpAddress}:${QEMU_TCP_PORT}`;
    const args = ['migrate', '--qmp', options.source.qmpSocket, '--to', target, '--transport', options.transport, '--report', reportFile, '--json', '--no-progress', '--status-file', join(options.dir, 'status.json')];
    if (options.transport === 'xia') args.push('--api', options.xia!.sourceApi, '--xmig', xmigCommand().join(' '));
    if (unixChannel) args.push('--channel', 'unix');
    if (options.autoConverge) args.push('--auto-converge');
    if (disk?.mode === 'full') args.push('--disk', ...(options.transport === 'qemu-tcp' ? ['--disk-to', `${options.tcpAddress}:${DISK_TARGET_TCP_PORT}`] : []));
    migrate = new LabProcess({ net: world.net, ns: world.ns(from), name: `xmig migrate ${from}->${options.to}`, args, stderrFile: join(options.dir, 'migrate.stderr') });
    const requestedAt = Date.now();
    await migrate.start();
    const observer = sourceObserver;
    sampler = setInterval(() => {
      observer
        .execute<{ status?: string; ram?: { transferred: number; remaining: number; total: number } }>('query-migrate', undefined, { timeoutMs: 5000 })
        .then((info) => {
          const ram = info.ram;
          const sample = {
            at: Date.now(),
            t: Date.now() - requestedAt,
            status: info.status ?? 'none',
            transferred: ram?.transferred ?? 0,
            remaining: ram?.remaining ?? 0,
            total: ram?.total ?? 0,
            rateBytesPerSecond: 0,
            qemuMbps: 0,
            passes: 0,
          };
          samples.push(sample);
          options.onProgress?.({ phase: 'migrating', status: sample.status, transferred: sample.transferred, total: sample.total, ms: ms() });
        })
        .catch(() => undefined);
    }, 500);
    const abort = (): void => void migrate?.interrupt(30_000);
    options.signal?.addEventListener('abort', abort, { once: true });
    let code: number | null;
    try {
      code = await migrate.waitForExit(options.deadlineMs, options.signal);
    } finally {
      options.signal?.removeEventListener('abort', abort);
      clearInterval(sampler);
    }
    const report = existsSync(reportFile) ? (JSON.parse(readFileSync(reportFile, 'utf8')) as MigrationReport) : undefined;
    if (!report || report.status !== 'completed' || code !== 0) {
      const why = report?.error ?? migrate.exitReason() ?? `exit code ${code}`;
      throw new XmigError('ERR_MIGRATION', `migration ${from} -> ${options.to} over ${options.transport} ${report?.status ?? 'failed'}: ${why}`);
    }
    if (recv) {
      // It exits 0 once to's node has written the whole stream into the destination QEMU.
      const recvCode = await recv.waitForExit(60_000, options.signal);
      if (recvCode !== 0) throw new XmigError('ERR_MIGRATION', `migration ${from} -> ${options.to}: xmig recv --qemu-socket on ${options.to} ${recv.exitReason() ?? `exited ${recvCode}`}`);
    }
    if (diskTarget) {
      // The target exits 0 once the destination runs on the migrated disk.
      const targetCode = await diskTarget.waitForExit(60_000, options.signal);
      if (targetCode !== 0) throw new XmigError('ERR_MIGRATION', `migration ${from} -> ${options.to}: xmig disk-target on ${options.to} ${diskTarget.exitReason() ?? `exited ${targetCode}`}`);
    }
    options.onProgress?.({ phase: 'switchover', ms: ms() });
    const resume = await waitForQmpEvent(destinationObserver, 'RESUME', 60_000, options.signal, () => destination.pid === undefined ? 'the destination QEMU is gone' : undefined);
    const resumedAt = eventTime(resume) ?? Date.now();
    const stop = sourceObserver.events.find((e) => e.event === 'STOP');
    const sourceStoppedAt = stop ? eventTime(stop) : report.sourceStoppedAt;
    options.onProgress?.({ phase: 'resumed', ms: ms() });
    return {
      from,
      to: options.to,
      transport: options.transport,
      destination,
      requestedAt,
      report,
      ...(sourceStoppedAt !== undefined ? { sourceStoppedAt } : {}),
      resumedAt,
      totalMs: Math.round(resumedAt - report.startedAt),
      ...(sourceStoppedAt !== undefined ? { downtimeMs: Math.round(resumedAt - sourceStoppedAt) } : {}),
      samples,
      ...(destinationDisk ? { disk: destinationDisk } : {}),
      ...(report.disk ? { diskReport: report.disk } : {}),
    };
  } catch (error) {
    await recv?.stop();
    await diskTarget?.stop();
    await destination.stop();
    if (disk?.mode === 'full') rmSync(disk.destinationFile, { force: true });
    throw error instanceof XmigError ? error : new XmigError('ERR_MIGRATION', errorMessage(error), { cause: error });
  } finally {
    clearInterval(sampler);
    await migrate?.stop();
    await recv?.stop();
    await diskTarget?.stop();
    await sourceObserver?.close();
    await destinationObserver?.close();
  }
}

/** `xmig disk-target` beside the destination QEMU, once it says where it listens. */
async function startDiskTarget(options: MoveOptions, destination: LabVm): Promise<LabProcess> {
  const stats = join(options.dir, 'disk-target.json');
  const args =
    options.transport === 'xia'
      ? ['disk-target', '--qmp', destination.qmpSocket, '--api', options.xia!.destinationApi, '--stats', stats]
      : ['disk-target', '--qmp', destination.qmpSocket, '--transport', 'tcp', '--listen', `${options.tcpAddress}:${DISK_TARGET_TCP_PORT}`, '--nbd-listen', `${options.tcpAddress}:${NBD_TCP_PORT}`, '--stats', stats];
  const target = new LabProcess({ net: options.world.net, ns: options.world.ns(options.to), name: `xmig disk-target on ${options.to}`, args, stderrFile: join(options.dir, 'disk-target.stderr') });
  await target.start();
  try {
    await target.waitForEvent('disk-target.listening', { deadlineMs: 60_000, signal: options.signal });
  } catch (error) {
    await target.stop();
    throw error;
  }
  return target;
}
