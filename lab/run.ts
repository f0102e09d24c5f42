/**
 * `xmig lab`: the paper's experiment (Sect. 5, Fig. 1, Table 1) on a real VM.
 *
 * One world of namespaced machines (R1, R2, A, B, C; lab/world.ts) is built once, and the
 * VM (lab/vm.ts: QEMU, the lab image, the agent and the Goldbach service inside) boots
 * once, on host A. Then, per topology — Fig. 1a (intra-ad), Fig. 1b (inter-ad), cabled in
 * turn on the same machines —
 *
 *  1. every host runs its `xmig node` (routers with the mobility plugin), host A the name
 *     server (lab/hosts.ts);
 *  2. on host C, xping (Δt = 10 ms) and the Goldbach client address the VM's DAG of before
 *     the first move, pinned, throughout (lab/clients.ts);
 *  3. the VM moves A → B → A → … over XIA (`xmig migrate` in the source's namespace to a
 *     destination QEMU started with `-incoming "exec:xmig recv"`; lab/migration.ts); after
 *     each move the lab waits for the clients to hear from the VM again, reads the route
 *     tables of every router, of the old host and of the VM, and asks a new client on C to
 *     resolve the name and talk to it;
 *  4. the TCP/IP baseline: the xianet daemons stop, IPv4 goes on the same machines
 *     (Fig. 1a: A's and B's segments one L2 subnet; Fig. 1b: a subnet each, behind IPv4
 *     routers), a TCP Goldbach client on C holds a connection to the VM, and QEMU's own
 *     `tcp:` migrates it.
 *
 * With a disk (`storage`, lab/lab-disk.ts: the paper's 4 GB, a few hundred MB used) the
 * VM keeps rewriting files on it through every move; on shared storage only RAM moves, in
 * a full migration the disk too (`xmig migrate --disk` to `xmig disk-target`). After each
 * move the guest reads its files back at the destination; after the last, with its file
 * system unmounted and QEMU gone, the lab checks the image itself (e2fsck, every file's
 * SHA-1). A `workload` beside the calculation is judged by its own output after each
 * move: dbench on the disk by what it prints at the destination; iperf3 (a stream from C
 * at IPERF3_RATE_MBPS, over XIA through `xmig tunnel connect` on C and the VM's `xmig
 * tunnel serve`, in the baseline to the VM's IPv4 address) by its client's reports on C.
 *
 * Everything the lab made — namespaces, bridges, veths, taps, processes — goes at the
 * end, on failure and on abort (the signal), unless `keep`.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Dag } from '../shared/dag.js';
import { ConfigError, XmigError, errorMessage } from '../shared/errors.js';
import type { LogLevel } from '../shared/logger.js';
import { XidType } from '../shared/xid.js';
import type { ImpairmentConfig } from '../xianet/link-impairment.js';
import { GoldbachClient, Iperf3Client, XpingClient } from './clients.js';
import {
  agentFigures,
  answerRecovery,
  badFiles,
  dbenchCheck,
  dbenchProgressLines,
  firstAfter,
  goldbachGap,
  iperf3Check,
  lastWrites,
  mirrorFigures,
  pingRecovery,
  xpingDowntime,
  type MoveDisk,
  type TcpMove,
  type TcpRow,
  type Timeline,
  type TopologyReport,
  type WorkloadCheck,
  type XiaMove,
  type XiaRow,
} from './figures.js';
import { checkWorkloads, type GuestConfig } from './guest/guest-config.js';
import { LAB_WORKLOADS, type LabWorkload } from './lab-constants.js';
import { LabHosts, LabKeys } from './hosts.js';
import { buildImage, type BuiltImage, type ImageProgress } from './image/build-image.js';
import { checkDiskSizes, checkLabDisk, LAB_STORAGE_MODES, makeLabDisk, type DiskCheck, type LabDisk, type LabStorage } from './lab-disk.js';
import { LabProcess } from './lab-process.js';
import { moveVm, type MoveOptions, type MoveProgress, type MoveResult } from './migration.js';
import type { DataDisk } from './qemu-command.js';
import { NetnsRegistry, type TeardownReport } from './netns.js';
import { checkLabRequirements } from './requirements.js';
import { describeChange, routeChanges, routeFor, snapshotRoutes, type RouteSnapshot } from './routes.js';
import {
  bridgeOf,
  CLIENT_HOST,
  GOLDBACH_TCP_PORT,
  ipv4ModeFor,
  ipv4Plan,
  LAB_HOSTS,
  LAB_TOPOLOGIES,
  VM_GATEWAY4,
  VM_IPV4,
  VM_IPV4_CIDR,
  wiringPlan,
  type Hypervisor,
  type LabHost,
  type LabTopologyName,
} from './topology.js';
import { LabVm } from './vm.js';
import { LabWorld } from './world.js';

/** The name the VM's Goldbach service registers (and its agent re-registers after each move). */
export const GOLDBACH_NAME = 'goldbach.lab';
export const VM_NAME = 'vm';
export const VM_MAC = '52:54:00:58:49:41';
/** Where the VM's route tables can be read (xmig.control), through a relay in its host's namespace. */
export const VM_CONTROL_PORT = 7101;

export { LAB_WORKLOADS, type LabWorkload } from './lab-constants.js';
/**
 * The network workload: iperf3 from C to the VM at this rate, over XIA and over TCP/IP
 * alike, and the port its server listens on in the VM. TCP/IP carries all of it; over XIA
 * the TCG guest's user-space stack, beside the Goldbach service, delivered 0.1-0.2 Mbit/s
 * (bench/README, Table 2's Netperf rows): the rate is the offered load, not what arrives.
 */
export const IPERF3_RATE_MBPS = 8;
export const IPERF3_PORT = 5201;
/** Files the guest keeps rewriting on its disk (one a second), read back after every move. */
export const DISK_FILES = 8;
/** Where the guest's rotating files are in its disk's file system (it mounts the disk at /data). */
export const DISK_FILES_DIR = '/xmig-files';

export interface LabProgress {
  phase: string;
  state: 'start' | 'progress' | 'end';
  detail?: string;
  bytes?: number;
  totalBytes?: number;
  /** Since the phase started. */
  ms: number;
}

export interface LabRunOptions {
  /** Default both, always run in the order intra-ad, inter-ad. */
  topologies?: LabTopologyName[];
  /** Moves over XIA per topology, A → B → A → … (default 4). */
  moves?: number;
  /** TCP/IP baseline (default on): moves by QEMU's tcp: intra-subnet (default 2); inter-subnet stops at the first, which breaks. */
  tcpBaseline?: boolean;
  tcpMoves?: number;
  /** TCP/IP moves in the WAN case (default 1: the connection breaks at the first; more only measure the migration). */
  tcpWanMoves?: number;
  mtu?: number;
  pingIntervalMs?: number;
  /**
   * An echo unanswered this long is lost (default 5 s, not xping's 1 s: a TCG guest
   * saturated by the Goldbach client answers late, and a late answer is not an outage).
   */
  pingTimeoutMs?: number;
  memoryMb?: number;
  /** The VM's disk (default none): `shared` storage (RAM moves, one image) or `full` migration (RAM and disk). */
  storage?: LabStorage;
  /** Its virtual size (default 4096 MB, the paper's) and the random data put on it before boot (default 300 MB). */
  diskSizeMb?: number;
  diskSeedMb?: number;
  /**
   * QEMU's auto-converge on every move, over XIA and by tcp: alike (default: on with a disk).
   * A TCG guest rewriting files on its disk dirtied memory (its page cache, the writer)
   * about as fast as a loaded 2-core machine migrated it over XIA: without it a move did
   * not converge in 150 passes.
   */
  autoConverge?: boolean;
  /** Moves over XIA: QEMU's stream through `exec:xmig send|recv` (default, the paper's mode) or QEMU's `unix:` channel into the hosts' nodes. */
  channel?: 'exec' | 'unix';
  /** Beside the calculation: dbench on the VM's disk (needs a disk), or iperf3 from C. Default goldbach: the calculation alone. */
  workload?: LabWorkload;
  /** Traffic after each move has recovered, before the next (default 2 s). */
  settleMs?: number;
  interAdImpairment?: ImpairmentConfig;
  kernel?: string;
  cacheDir?: string;
  /** Namespace prefix (default xmig-lab-<6 hex>). */
  prefix?: string;
  /** Run directory (configs, logs, sockets, VM files); default a fresh one under /tmp. */
  dir?: string;
  /** Leave the namespaces, processes and VM running for inspection. */
  keep?: boolean;
  bootDeadlineMs?: number;
  moveDeadlineMs?: number;
  /** How long the clients may take to hear from the VM after it resumed (default 120 s). */
  recoverDeadlineMs?: number;
  /**
   * A TCP connection silent this long after the VM resumed is broken (default 60 s: the
   * client's retransmissions back off to seconds, and a TCG guest on a loaded machine
   * answers late; a connection that merely answers late must not be counted broken).
   */
  brokenAfterMs?: number;
  logLevel?: LogLevel;
  signal?: AbortSignal;
  onProgress?: (progress: LabProgress) => void;
}

export interface LabReport {
  startedAt: string;
  durationMs: number;
  dir: string;
  prefix: string;
  kept: boolean;
  machine: { cpus: number; memoryGiB: number; kernel: string; node: string; qemu?: string };
  image: { hash: string; cached: boolean; initramfsMiB: number };
  vm: { memoryMb: number; bootMs: number; memUsedMb: number | null; hid: string };
  /** Every machine's HID and every AD, as the lab made their keys. */
  hids: Record<string, string>;
  ads: Record<string, string>;
  options: { moves: number; tcpMoves: number; pingIntervalMs: number; pingTimeoutMs: number; mtu: number; interAdImpairment?: ImpairmentConfig; storage: LabStorage; workload: LabWorkload; autoConverge?: boolean; channel: 'exec' | 'unix' };
  /** With a disk: its size and seed, and the image read on the host after the last move. */
  disk?: { storage: 'shared' | 'full'; sizeMb: number; seedMb: number; files: number; check: DiskCheck };
  topologies: TopologyReport[];
  teardown?: TeardownReport;
}

const round = (v: number): number => Math.round(v);

export async function runLab(options: LabRunOptions = {}): Promise<LabReport> {
  return new LabRun(options).run();
}

class LabRun {
  private readonly o: Required<Pick<LabRunOptions, 'moves' | 'tcpMoves' | 'tcpWanMoves' | 'mtu' | 'pingIntervalMs' | 'pingTimeoutMs' | 'memoryMb' | 'settleMs' | 'bootDeadlineMs' | 'moveDeadlineMs' | 'recoverDeadlineMs' | 'brokenAfterMs' | 'storage' | 'diskSizeMb' | 'diskSeedMb' | 'workload'>> & LabRunOptions;
  private readonly dir: string;
  private net: NetnsRegistry | undefined;
  private world: LabWorld | undefined;
  private keys: LabKeys | undefined;
  private image: BuiltImage | undefined;
  private vm: LabVm | undefined;
  private vmHost: Hypervisor = 'A';
  private vmCount = 0;
  private readonly alive = new Set<{ stop(): Promise<void> }>();
  private relays: Partial<Record<Hypervisor, LabProcess>> = {};
  /** The disk as made, and the image the VM runs on now (full migration: the last destination's). */
  private disk: LabDisk | undefined;
  private diskImage: DataDisk | undefined;
  /** File name → SHA-1 the guest last logged writing, over every QEMU the VM has left. */
  private readonly writes = new Map<string, string>();
  private readonly started = Date.now();

  constructor(options: LabRunOptions) {
    this.o = {
      moves: 4,
      tcpMoves: 2,
      tcpWanMoves: 1,
      mtu: 1500,
      pingIntervalMs: 10,
      pingTimeoutMs: 5000,
      memoryMb: 640,
      settleMs: 2000,
      bootDeadlineMs: 600_000,
      moveDeadlineMs: 600_000,
      recoverDeadlineMs: 120_000,
      brokenAfterMs: 60_000,
      storage: 'none',
      diskSizeMb: 4096,
      diskSeedMb: 300,
      workload: 'goldbach',
      ...options,
    };
    if (!Number.isInteger(this.o.moves) || this.o.moves < 1) throw new ConfigError(`moves must be a whole number of at least 1 (got ${this.o.moves})`);
    if (!Number.isInteger(this.o.tcpMoves) || this.o.tcpMoves < 1) throw new ConfigError(`TCP moves must be a whole number of at least 1 (got ${this.o.tcpMoves})`);
    if (!LAB_STORAGE_MODES.includes(this.o.storage)) throw new ConfigError(`storage must be one of ${LAB_STORAGE_MODES.join(', ')} (got ${String(this.o.storage)})`);
    if (!LAB_WORKLOADS.includes(this.o.workload)) throw new ConfigError(`workload must be one of ${LAB_WORKLOADS.join(', ')} (got ${String(this.o.workload)})`);
    if (this.o.workload === 'dbench' && this.o.storage === 'none') throw new ConfigError('the dbench workload writes to the VM\'s disk: give it one (--disk, or --storage shared)');
    if (this.o.storage !== 'none') checkDiskSizes(this.o.diskSizeMb, this.o.diskSeedMb);
    this.dir = options.dir ?? mkdtempSync(join(tmpdir(), 'xmig-lab-'));
  }

  private get signal(): AbortSignal | undefined {
    return this.o.signal;
  }

  private progress(phase: string, state: LabProgress['state'], extra: Partial<LabProgress> = {}, since = Date.now()): void {
    this.o.onProgress?.({ phase, state, ms: Date.now() - since, ...extra });
  }

  private async phase<T>(phase: string, detail: string, work: (since: number) => Promise<T>): Promise<T> {
    this.signal?.throwIfAborted();
    const since = Date.now();
    this.progress(phase, 'start', { detail }, since);
    const result = await work(since);
    this.progress(phase, 'end', { detail }, since);
    return result;
  }

  async run(): Promise<LabReport> {
    const topologies = LAB_TOPOLOGIES.filter((t) => (this.o.topologies ?? LAB_TOPOLOGIES).includes(t));
    if (topologies.length === 0) throw new ConfigError('no topology to run');
    checkLabRequirements(undefined, undefined, { disk: this.o.storage !== 'none', iperf3: this.o.workload === 'iperf3' });
    mkdirSync(this.dir, { recursive: true });
    let teardown: TeardownReport | undefined;
    try {
      this.net = new NetnsRegistry(this.o.prefix);
      this.world = new LabWorld(this.net, { mtu: this.o.mtu });
      await this.phase('world', `namespaces ${this.net.prefix}-*`, () => this.world!.build());
      this.image = await this.phase('image', 'the lab VM image', () =>
        buildImage({
          kernel: this.o.kernel,
          cacheDir: this.o.cacheDir,
          signal: this.signal,
          onProgress: (p: ImageProgress) => p.state === 'progress' && this.progress('image', 'progress', { detail: p.phase, bytes: p.bytes, totalBytes: p.totalBytes, ms: p.ms }),
        }),
      );
      if (this.o.storage !== 'none') {
        const storage = this.o.storage;
        this.disk = await this.phase('disk', `the VM's disk: ${this.o.diskSizeMb} MB qcow2 with ${this.o.diskSeedMb} MB of files (${storage} storage)`, () =>
          makeLabDisk(join(this.dir, 'disk', storage === 'shared' ? 'shared.qcow2' : 'A.qcow2'), { sizeMb: this.o.diskSizeMb, seedMb: this.o.diskSeedMb, signal: this.signal }),
        );
        this.diskImage = { file: this.disk.file, format: this.disk.format };
      }
      this.keys = new LabKeys(join(this.dir, 'keys'));
      // A workload the image lacks (its host had no dbench, say): one line before anything boots.
      checkWorkloads(this.image, this.guestConfig());
      const reports: TopologyReport[] = [];
      let boot: { ms: number; memUsedMb: number | null } | undefined;
      for (const topology of topologies) {
        const result = await this.runTopology(topology, boot === undefined);
        boot ??= result.boot;
        reports.push(result.report);
      }
      const disk = this.disk ? await this.phase('disk-check', 'the guest unmounts its disk; e2fsck and every file on the host', () => this.checkDisk()) : undefined;
      const image = this.image;
      return {
        startedAt: new Date(this.started).toISOString(),
        durationMs: Date.now() - this.started,
        dir: this.dir,
        prefix: this.net.prefix,
        kept: this.o.keep ?? false,
        machine: await machineFacts(),
        image: { hash: image.hash, cached: image.cached, initramfsMiB: Math.round((image.initramfsBytes / 1048576) * 10) / 10 },
        vm: { memoryMb: this.o.memoryMb, bootMs: boot?.ms ?? 0, memUsedMb: boot?.memUsedMb ?? null, hid: this.keys.vmHid.toString() },
        hids: Object.fromEntries(LAB_HOSTS.map((h) => [h, this.keys!.hid(h).toString()])),
        ads: Object.fromEntries(['AD1', 'AD2'].map((ad) => [ad, this.keys!.ad(ad).toString()])),
        options: {
          moves: this.o.moves,
          tcpMoves: this.o.tcpMoves,
          pingIntervalMs: this.o.pingIntervalMs,
          pingTimeoutMs: this.o.pingTimeoutMs,
          mtu: this.o.mtu,
          ...(this.o.interAdImpairment ? { interAdImpairment: this.o.interAdImpairment } : {}),
          storage: this.o.storage,
          workload: this.o.workload,
          autoConverge: this.autoConverge,
          channel: this.o.channel ?? 'exec',
        },
        ...(disk ? { disk } : {}),
        topologies: reports,
      };
    } finally {
      teardown = await this.cleanup();
      this.lastTeardown = teardown;
    }
  }

  /** What the last teardown removed (for the CLI and tests). */
  lastTeardown: TeardownReport | undefined;

  private async cleanup(): Promise<TeardownReport | undefined> {
    if (this.o.keep && this.net) {
      this.net.keep();
      return undefined;
    }
    for (const part of [...this.alive].reverse()) await part.stop().catch(() => undefined);
    this.alive.clear();
    for (const relay of Object.values(this.relays)) await relay?.stop().catch(() => undefined);
    await this.vm?.stop().catch(() => undefined);
    return this.net?.teardown();
  }

  private track<T extends { stop(): Promise<void> }>(part: T): T {
    this.alive.add(part);
    return part;
  }

  private async release(part: { stop(): Promise<void> }): Promise<void> {
    this.alive.delete(part);
    await part.stop();
  }

  private guestConfig(): GuestConfig {
    const keys = this.keys!;
    return {
      name: VM_NAME,
      key: keys.vm,
      mtu: this.o.mtu,
      logLevel: this.o.logLevel ?? 'info',
      trustedAds: [keys.ad('AD1'), keys.ad('AD2')],
      goldbach: { key: keys.goldbach, name: GOLDBACH_NAME, tcpPort: GOLDBACH_TCP_PORT },
      ipv4: VM_IPV4_CIDR,
      gateway4: VM_GATEWAY4,
      controlPort: VM_CONTROL_PORT,
      ...(this.disk ? { files: DISK_FILES } : {}),
      ...(this.o.workload === 'dbench' ? { dbench: 1 } : {}),
      // Over XIA iperf3 reaches its server through the VM's `xmig tunnel serve` (TCP on its loopback).
      ...(this.o.workload === 'iperf3' ? { iperf3: IPERF3_PORT, tunnel: { key: keys.tunnel, to: IPERF3_PORT } } : {}),
    };
  }

  private get autoConverge(): boolean {
    return this.o.autoConverge ?? this.o.storage !== 'none';
  }

  /** A move's disk: the one image (shared storage), or the current one and a new, empty image for the destination (full). */
  private moveDisk(dir: string): MoveOptions['disk'] {
    if (!this.disk || !this.diskImage) return undefined;
    if (this.o.storage === 'shared') return { mode: 'shared', image: this.diskImage };
    return { mode: 'full', image: this.diskImage, sizeBytes: this.disk.sizeBytes, destinationFile: join(dir, 'disk.qcow2') };
  }

  /**
   * After a move: the VM runs at the destination; the source QEMU goes, what it logged of
   * the guest's writes is kept, and in a full migration the source's image goes too.
   */
  private async retire(source: LabVm, result: MoveResult): Promise<void> {
    this.vm = result.destination;
    this.vmHost = result.to;
    await source.stop();
    lastWrites(source.events(), this.writes);
    if (this.o.storage === 'full' && result.disk && this.diskImage && result.disk.file !== this.diskImage.file) {
      rmSync(this.diskImage.file, { force: true });
      this.diskImage = result.disk;
    }
  }

  /** The disk after a move: what the mirror moved, and the guest's files read back at the destination. */
  private async diskAfterMove(result: MoveResult): Promise<MoveDisk | undefined> {
    if (!this.disk) return undefined;
    const vm = this.vm!;
    const figures = { storage: this.o.storage as 'shared' | 'full', ...mirrorFigures(result.diskReport) };
    try {
      const read = await vm.verifyFiles({ deadlineMs: this.o.recoverDeadlineMs, signal: this.signal });
      // What the guest had written when it read them back: the source's log, then the
      // destination's up to its answer (the writer paused while it read).
      const events = vm.events();
      const answered = events.findLastIndex((e) => e.event === 'guest.files-verified');
      const written = lastWrites(events.slice(0, answered + 1), new Map(this.writes));
      const bad = badFiles(written, read.sha1s);
      if (!read.settled) bad.push('the writer did not pause while the guest read its files (a file may have been mid-write)');
      return { ...figures, filesChecked: Object.keys(read.sha1s).length, filesBad: bad };
    } catch (error) {
      return { ...figures, filesChecked: null, filesBad: [`the guest did not read its files back: ${errorMessage(error)}`] };
    }
  }

  /** The workload beside the calculation after a move: dbench's own output at the destination, or iperf3's on C. */
  private async workloadAfterMove(result: MoveResult, iperf3?: Iperf3Client): Promise<WorkloadCheck | undefined> {
    if (iperf3) {
      // A second's report read a second after RESUME carries bytes sent at the destination.
      await iperf3.sentAfter(result.resumedAt + 1000, { deadlineMs: this.o.recoverDeadlineMs, signal: this.signal }).catch(() => undefined);
      return iperf3Check(iperf3.report(), { from: result.requestedAt, resumedAt: result.resumedAt, to: Date.now() });
    }
    if (this.o.workload !== 'dbench') return undefined;
    const vm = this.vm!;
    const lines = (): string[] => vm.events().filter((e) => e.event === 'guest.dbench').map((e) => String(e['line'] ?? ''));
    // dbench prints a line a second; three at the destination show it runs on there.
    await vm.waitForEvent(() => dbenchProgressLines(lines()) >= 3, { deadlineMs: this.o.recoverDeadlineMs, signal: this.signal, what: 'dbench to go on at the destination' }).catch(() => undefined);
    return dbenchCheck(lines());
  }

  /** After the last move: the guest unmounts its disk, QEMU goes, and the image is read on the host. */
  private async checkDisk(): Promise<LabReport['disk']> {
    const vm = this.vm!;
    const disk = this.disk!;
    const finished = await vm.finishData({ deadlineMs: this.o.recoverDeadlineMs, signal: this.signal });
    if (!finished.ok) throw new XmigError('ERR_STATE', "the guest could not unmount its disk after the last move: the image cannot be checked");
    await vm.stop();
    lastWrites(vm.events(), this.writes);
    const files = [...disk.seeds, ...[...this.writes].map(([name, sha1]) => ({ path: `${DISK_FILES_DIR}/${name}`, sha1 }))];
    const check = await checkLabDisk(this.diskImage!.file, files, this.signal);
    return { storage: this.o.storage as 'shared' | 'full', sizeMb: this.o.diskSizeMb, seedMb: this.o.diskSeedMb, files: files.length, check };
  }

  private nextVmDir(): { dir: string; tap: string } {
    const n = this.vmCount++;
    return { dir: join(this.dir, `vm-${n}`), tap: `vm${n}` };
  }

  private async bootVm(): Promise<{ ms: number; memUsedMb: number | null }> {
    const { dir, tap } = this.nextVmDir();
    return this.phase('boot', `QEMU ${this.o.memoryMb} MB on host A (TCG)`, async (since) => {
      const vm = new LabVm({
        netns: this.world!.ns('A'),
        tap,
        bridge: bridgeOf('A'),
        mac: VM_MAC,
        image: this.image!,
        config: this.guestConfig(),
        dir,
        memoryMb: this.o.memoryMb,
        ...(this.diskImage ? { disk: this.diskImage } : {}),
        deadlineMs: this.o.bootDeadlineMs,
        signal: this.signal,
      });
      this.vm = vm;
      this.vmHost = 'A';
      const ticker = setInterval(() => this.progress('boot', 'progress', { detail: String(vm.events().filter((e) => e.component === 'guest-init').at(-1)?.event ?? 'starting') }, since), 2000);
      try {
        await vm.start();
      } finally {
        clearInterval(ticker);
      }
      await this.startRelays(vm);
      const used = Number(vm.ready?.['memUsedKb']);
      return { ms: Date.now() - since, memUsedMb: Number.isFinite(used) ? Math.round(used / 1024) : null };
    });
  }

  /** A relay in A's and in B's namespace to the VM's control port at its link-local address there. */
  private async startRelays(vm: LabVm): Promise<void> {
    for (const host of ['A', 'B'] as const) {
      const relay = new LabProcess({
        net: this.net!,
        ns: this.world!.ns(host),
        name: `relay on ${host}`,
        args: ['lab', 'relay', '--listen', this.vmControl(host), '--to', `[${vm.linkLocal}%${bridgeOf(host)}]:${VM_CONTROL_PORT}`],
        stderrFile: join(this.dir, `relay-${host}.stderr`),
      });
      await relay.start();
      await relay.waitForEvent('relay.listening', { deadlineMs: 60_000, signal: this.signal });
      this.relays[host] = relay;
    }
  }

  private vmControl(host: Hypervisor): string {
    return join(this.dir, `vm-control-${host}.sock`);
  }

  private async runTopology(topology: LabTopologyName, boot: boolean): Promise<{ report: TopologyReport; boot?: { ms: number; memUsedMb: number | null } }> {
    const world = this.world!;
    const wiring = wiringPlan(topology);
    await this.phase('wire', topology, () => world.wire(wiring));
    const hosts = this.track(
      new LabHosts({
        world,
        wiring,
        keys: this.keys!,
        dir: join(this.dir, topology),
        logLevel: this.o.logLevel,
        interAdImpairment: topology === 'inter-ad' ? this.o.interAdImpairment : undefined,
        deadlineMs: 120_000,
        signal: this.signal,
      }),
    );
    await this.phase('hosts', `${topology}: xmig node on ${hosts.hosts.join(', ')}; name server on A`, () => hosts.start());
    const booted = boot ? await this.bootVm() : undefined;
    const timeline: Timeline = { start: Date.now(), end: 0, pings: [], answers: [], tcpAnswers: [], migrations: [] };
    const xia = await this.xiaPhase(topology, hosts, timeline);
    await this.release(hosts);
    const tcp = this.o.tcpBaseline === false ? undefined : await this.tcpPhase(topology, timeline);
    timeline.end = Date.now();
    return { report: { topology, xia, ...(tcp ? { tcp } : {}), timeline }, ...(booted ? { boot: booted } : {}) };
  }

  /** The VM's current DAG as a host (AD → HID) and as the Goldbach service (AD → HID → SID). */
  private vmDag(hosts: LabHosts): { host: Dag; service: Dag } {
    const keys = this.keys!;
    const host = Dag.hostAddress(keys.ad(hosts.options.wiring.adOf[this.vmHost]), keys.vmHid);
    return { host, service: Dag.hostAddress(keys.ad(hosts.options.wiring.adOf[this.vmHost]), keys.vmHid, keys.goldbachSid) };
  }

  /** Runs a short xmig command on a host and returns its stdout lines (ERR_TIMEOUT past the deadline). */
  private async once(host: LabHost, name: string, args: string[], deadlineMs: number): Promise<{ code: number | null; lines: string[]; error?: string }> {
    const p = new LabProcess({ net: this.net!, ns: this.world!.ns(host), name, args, stderrFile: join(this.dir, 'once.stderr') });
    await p.start();
    try {
      const code = await p.waitForExit(deadlineMs, this.signal);
      return { code, lines: p.lines.map((l) => l.text), ...(code === 0 ? {} : { error: p.exitReason() }) };
    } catch (error) {
      return { code: null, lines: p.lines.map((l) => l.text), error: errorMessage(error) };
    } finally {
      await p.stop();
    }
  }

  /**
   * A new Goldbach client on C, by name, asking 5 times: its JSON report, or undefined if
   * none answered within `deadlineMs`. A client that could not connect (its own 10 s
   * connect deadline: a TCG guest still starved just after a move answered the held
   * connection but not yet a new handshake, seen once in a loaded lab run) tries again,
   * as an application would, until the deadline.
   */
  private async askByName(hosts: LabHosts, deadlineMs: number): Promise<string | undefined> {
    const end = Date.now() + deadlineMs;
    for (;;) {
      const asked = await this.once(CLIENT_HOST, 'new Goldbach client', ['cal', 'ask', GOLDBACH_NAME, '--api', hosts.api(CLIENT_HOST), '--count', '5', '--json'], Math.max(1000, end - Date.now()));
      const report = asked.lines.find((l) => l.startsWith('{'));
      if (report && answersIn(report) > 0) return report;
      if (Date.now() + 1000 >= end) return report;
      await sleep(1000, undefined, this.signal ? { signal: this.signal } : undefined);
    }
  }

  /** Until a fresh resolution of the name on C gives the VM's current service DAG (its AD, its HID, its SID). */
  private async resolveCurrent(hosts: LabHosts, deadlineMs: number): Promise<{ dag: string; current: boolean }> {
    const keys = this.keys!;
    const wantedAd = keys.ad(hosts.options.wiring.adOf[this.vmHost]);
    const end = Date.now() + deadlineMs;
    let last = '';
    for (;;) {
      const result = await this.once(CLIENT_HOST, 'xmig resolve', ['resolve', GOLDBACH_NAME, '--api', hosts.api(CLIENT_HOST)], 60_000);
      last = result.lines.join(' ').trim() || result.error || '';
      try {
        const dag = Dag.parse(last);
        const hid = dag.find(XidType.HID);
        if (dag.find(XidType.AD)?.equals(wantedAd) && hid?.equals(keys.vmHid) && dag.sink.equals(keys.goldbachSid)) return { dag: last, current: true };
      } catch {
        // not a DAG (yet): ask again
      }
      if (Date.now() > end) return { dag: last, current: false };
      this.signal?.throwIfAborted();
      await new Promise((r) => setTimeout(r, 500));
    }
  }

  private async snapshots(hosts: LabHosts, nodes: LabHost[]): Promise<Map<string, RouteSnapshot>> {
    const snaps = new Map<string, RouteSnapshot>();
    for (const node of nodes) snaps.set(node, await snapshotRoutes(node, { path: hosts.control(node) }));
    snaps.set('VM', await snapshotRoutes(VM_NAME, { path: this.vmControl(this.vmHost) }));
    return snaps;
  }

  /**
   * The route tables once the old host's entry for the VM and the VM's entry for the old
   * host are gone (the old gateway tells the host, the agent cleans the VM's: both take a
   * while on a TCG guest), or as they are at the deadline — then the report shows them stale.
   */
  private async snapshotsOnceClean(hosts: LabHosts, nodes: LabHost[], oldHost: Hypervisor): Promise<Map<string, RouteSnapshot>> {
    const vmHid = this.keys!.vmHid.toString();
    const oldHid = this.keys!.hid(oldHost).toString();
    const end = Date.now() + this.o.recoverDeadlineMs;
    for (;;) {
      const snaps = await this.snapshots(hosts, nodes);
      const host = snaps.get(oldHost)!;
      const vm = snaps.get('VM')!;
      const clean = !host.error && routeFor(host, vmHid) === undefined && !vm.error && routeFor(vm, oldHid) === undefined;
      if (clean || Date.now() > end) return snaps;
      this.signal?.throwIfAborted();
      await new Promise((r) => setTimeout(r, 500));
    }
  }

  /** Until the VM answers xping from C at its current DAG (after a boot, or after re-cabling). */
  private async waitReachable(hosts: LabHosts): Promise<void> {
    await this.phase('join', 'the VM reachable from C and its name current', async () => {
      const end = Date.now() + this.o.recoverDeadlineMs * 2;
      for (;;) {
        const result = await this.once(CLIENT_HOST, 'xmig ping', ['ping', this.vmDag(hosts).host.toString(), '--api', hosts.api(CLIENT_HOST), '--count', '5', '--interval', '100', '--json'], 60_000);
        const summary = result.lines.find((l) => l.startsWith('{'));
        if (summary && (JSON.parse(summary) as { received?: number }).received! > 0) break;
        if (Date.now() > end) throw new XmigError('ERR_TIMEOUT', `the VM on host ${this.vmHost} does not answer xping from C (${result.error ?? summary ?? 'no reply'})`);
        this.signal?.throwIfAborted();
      }
      const resolved = await this.resolveCurrent(hosts, this.o.recoverDeadlineMs);
      if (!resolved.current) throw new XmigError('ERR_TIMEOUT', `the name ${GOLDBACH_NAME} does not resolve to the VM's DAG on host ${this.vmHost} (got "${resolved.dag}")`);
    });
  }

  /**
   * The network workload over XIA: on C, `xmig tunnel connect` to the VM's tunnel at its
   * DAG of before the first move (pinned, as the Goldbach client's), and iperf3's client
   * through it to the VM's iperf3 server — TCP local at each end, one XIA STREAM between.
   */
  private async startIperf3Xia(hosts: LabHosts, dir: string, target: Dag): Promise<{ tunnel: LabProcess; iperf3: Iperf3Client }> {
    const tunnel = this.track(
      new LabProcess({
        net: this.net!,
        ns: this.world!.ns(CLIENT_HOST),
        name: `xmig tunnel connect on ${CLIENT_HOST}`,
        args: ['tunnel', 'connect', '--listen', '127.0.0.1:0', '--to', target.toString(), '--api', hosts.api(CLIENT_HOST)],
        stderrFile: join(dir, 'tunnel-connect.stderr'),
      }),
    );
    await tunnel.start();
    const listening = await tunnel.waitForEvent('tunnel.listening', { deadlineMs: 60_000, signal: this.signal });
    const port = Number(String(listening['address']).split(':').at(-1));
    if (!Number.isInteger(port) || port <= 0) throw new XmigError('ERR_STATE', `xmig tunnel connect said it listens on "${String(listening['address'])}"`);
    const iperf3 = this.track(new Iperf3Client({ world: this.world!, host: CLIENT_HOST, dir, address: '127.0.0.1', port, rateMbps: IPERF3_RATE_MBPS }));
    await iperf3.start();
    return { tunnel, iperf3 };
  }

  private async xiaPhase(topology: LabTopologyName, hosts: LabHosts, timeline: Timeline): Promise<XiaRow> {
    const world = this.world!;
    const keys = this.keys!;
    const wiring = hosts.options.wiring;
    const phaseDir = join(this.dir, topology);
    await this.waitReachable(hosts);
    const old = this.vmDag(hosts);
    const xping = this.track(new XpingClient({ world, host: CLIENT_HOST, api: hosts.api(CLIENT_HOST), dir: phaseDir, target: old.host, intervalMs: this.o.pingIntervalMs, timeoutMs: this.o.pingTimeoutMs }));
    const goldbach = this.track(new GoldbachClient({ world, host: CLIENT_HOST, api: hosts.api(CLIENT_HOST), dir: phaseDir, target: old.service }));
    await xping.start();
    await goldbach.start();
    const wait = { deadlineMs: this.o.recoverDeadlineMs, signal: this.signal };
    await this.phase('clients', `xping and Goldbach on C to ${old.service.toString().slice(0, 40)}…`, async () => {
      await xping.answeredAfter(0, wait);
      await goldbach.answeredAfter(0, wait);
    });
    const network =
      this.o.workload === 'iperf3'
        ? await this.phase('iperf3', `iperf3 on C at ${IPERF3_RATE_MBPS} Mbit/s through xmig tunnel to the VM`, async () => {
            const started = await this.startIperf3Xia(hosts, phaseDir, Dag.hostAddress(keys.ad(wiring.adOf[this.vmHost]), keys.vmHid, keys.tunnelSid));
            await started.iperf3.sentAfter(0, wait);
            return started;
          })
        : undefined;
    const moves: Array<Omit<XiaMove, 'lostPings' | 'xpingDowntimeMs' | 'precopyPings' | 'precopyLostPings' | 'goldbachGapMs'> & { requestedAt: number }> = [];
    const results: MoveResult[] = [];
    const watched: LabHost[] = [...wiring.routers, 'A', 'B'];
    for (let i = 0; i < this.o.moves; i++) {
      const from = this.vmHost;
      const to: Hypervisor = from === 'A' ? 'B' : 'A';
      const before = await this.snapshots(hosts, watched);
      const { dir, tap } = this.nextVmDir();
      const label = `${topology} move ${i + 1}: ${from} -> ${to} over XIA`;
      const result = await this.phase('move', label, (since) =>
        moveVm({
          world,
          image: this.image!,
          config: this.guestConfig(),
          mac: VM_MAC,
          memoryMb: this.o.memoryMb,
          source: this.vm!,
          from,
          to,
          transport: 'xia',
          xia: { to: hosts.migrationDag(to).toString(), sourceApi: hosts.api(from), destinationApi: hosts.api(to) },
          channel: this.o.channel ?? 'exec',
          dir,
          tap,
          disk: this.moveDisk(dir),
          autoConverge: this.autoConverge,
          deadlineMs: this.o.moveDeadlineMs,
          signal: this.signal,
          onProgress: (p: MoveProgress) => this.progress('move', 'progress', { detail: `${label}: ${p.status ?? p.phase}`, bytes: p.transferred, totalBytes: p.total }, since),
        }),
      );
      results.push(result);
      await this.retire(this.vm!, result);
      // The clients hear from the VM again: an echo sent after RESUME answered, an answer read after it.
      const recovered = await this.phase('recover', `${label}: clients on C hear the VM again`, async () => {
        const [ping, answer] = await Promise.all([xping.answeredAfter(result.resumedAt, wait).catch(() => undefined), goldbach.answeredAfter(result.resumedAt, wait).catch(() => undefined)]);
        return { ping, answer };
      });
      // What the hosts logged: the new gateway registering the VM, each router's rewrite, the name server's new record.
      const vmHid = keys.vmHid.toString();
      const logTimes = (p: LabProcess | undefined, event: string, match: (e: Record<string, unknown>) => boolean): number[] =>
        (p?.events(event) ?? []).filter(match).map((e) => (typeof e['ts'] === 'string' ? Date.parse(e['ts']) : e.receivedAt));
      const gateway = wiring.routers.find((r) => wiring.interfaces.some((iface) => iface.host === r && iface.segment === `seg-${to}`))!;
      await hosts.nodes
        .get(gateway)!
        .waitForEvent('route.rewritten', wait, (e) => e['hid'] === vmHid && Date.parse(String(e['ts'])) >= result.requestedAt)
        .catch(() => undefined);
      const nameRegistered = await hosts.nameServer!.waitForEvent('name.registered', { ...wait, deadlineMs: Math.min(wait.deadlineMs, 30_000) }, (e) => e['name'] === GOLDBACH_NAME && Date.parse(String(e['ts'])) >= result.requestedAt).catch(() => undefined);
      await new Promise((r) => setTimeout(r, this.o.settleMs));
      const after = await this.snapshotsOnceClean(hosts, watched, from);
      const changes = [...after.keys()].flatMap((node) => routeChanges(before.get(node)!, after.get(node)!).map(describeChange));
      const vmRouteAfter: XiaMove['vmRouteAfter'] = {};
      for (const node of watched) {
        const route = routeFor(after.get(node)!, vmHid);
        vmRouteAfter[node] = route ? { port: route.port, nextHop: route.nextHop } : null;
      }
      const fromSnapshot = after.get(from)!;
      const vmSnapshot = after.get('VM')!;
      const resolved = await this.resolveCurrent(hosts, this.o.recoverDeadlineMs);
      const askedReport = await this.askByName(hosts, this.o.recoverDeadlineMs);
      const disk = await this.diskAfterMove(result);
      const workload = await this.workloadAfterMove(result, network?.iperf3);
      const rewrittenMs: Record<string, number | null> = {};
      for (const router of wiring.routers) rewrittenMs[router] = firstAfter(logTimes(hosts.nodes.get(router), 'route.rewritten', (e) => e['hid'] === vmHid), result.resumedAt);
      moves.push({
        move: i + 1,
        from,
        to,
        requestedAt: result.requestedAt,
        totalMs: result.totalMs,
        downtimeMs: result.downtimeMs ?? null,
        qemuTotalMs: result.report.totalTimeMs ?? null,
        qemuDowntimeMs: result.report.downtimeMs ?? null,
        bytes: result.report.bytes ?? null,
        pingRecoveredMs: recovered.ping ? round(recovered.ping.sentAt - result.resumedAt) : null,
        answerRecoveredMs: recovered.answer ? round(recovered.answer.at - result.resumedAt) : null,
        gatewayRegisteredMs: firstAfter(logTimes(hosts.nodes.get(gateway), 'host.registered', (e) => e['hid'] === vmHid), result.resumedAt),
        rewrittenMs,
        nameRegisteredMs: nameRegistered ? firstAfter([Date.parse(String(nameRegistered['ts']))], result.resumedAt) : null,
        agent: agentFigures(this.vm!.events()),
        routeChanges: changes,
        vmRouteAfter,
        staleHostEntryGone: !fromSnapshot.error && routeFor(fromSnapshot, vmHid) === undefined,
        staleVmEntryGone: vmSnapshot.error ? null : routeFor(vmSnapshot, keys.hid(from).toString()) === undefined,
        resolvedDag: resolved.dag,
        resolvedCurrent: resolved.current,
        newClientAnswers: askedReport ? answersIn(askedReport) : 0,
        ...(disk ? { disk } : {}),
        ...(workload ? { workload } : {}),
      });
    }
    await xping.finish();
    await goldbach.finish();
    if (network) {
      await network.iperf3.finish();
      await this.release(network.iperf3);
      await this.release(network.tunnel);
    }
    const pings = xping.records();
    const answers = goldbach.answers();
    const end = Date.now();
    const figures: XiaMove[] = moves.map((m, i) => {
      const until = moves[i + 1]?.requestedAt ?? end;
      const r = results[i]!;
      const down = xpingDowntime(pings, { requestedAt: r.report.startedAt, stoppedAt: r.sourceStoppedAt ?? null, resumedAt: r.resumedAt }, this.o.pingIntervalMs);
      const { requestedAt: _requestedAt, ...rest } = m;
      return {
        ...rest,
        lostPings: down.lost,
        xpingDowntimeMs: down.ms,
        precopyPings: down.precopySent,
        precopyLostPings: down.precopyLost,
        goldbachGapMs: goldbachGap(answers, m.requestedAt, until),
      };
    });
    for (const m of figures) {
      const r = results[m.move - 1]!;
      m.pingRecoveredMs ??= pingRecovery(pings, r.resumedAt);
      m.answerRecoveredMs ??= answerRecovery(answers, r.resumedAt);
    }
    timeline.pings.push(...pings.map((p) => ({ t: p.sentAt, rttMs: p.rttMs ?? null })));
    timeline.answers.push(...answers.map((a) => a.at));
    for (const r of results) timeline.migrations.push(migrationSpan(`${r.from}→${r.to} XIA`, r));
    const end_ = goldbach.end();
    await this.release(xping);
    await this.release(goldbach);
    return {
      moves: figures,
      brokenConnections: goldbach.broken ? 1 : 0,
      goldbach: { answers: answers.length, maxGapMs: end_?.maxGapMs ?? goldbachGap(answers, 0, end), ended: end_?.ended ?? 'unknown', ...(end_?.error ? { error: end_.error } : {}) },
      xping: { sent: pings.length, answered: pings.filter((p) => p.rttMs !== undefined).length },
    };
  }

  private async tcpPhase(topology: LabTopologyName, timeline: Timeline): Promise<TcpRow> {
    const world = this.world!;
    const mode = ipv4ModeFor(topology);
    const plan = ipv4Plan(world.current!, mode);
    const phaseDir = join(this.dir, `${topology}-tcp`);
    mkdirSync(phaseDir, { recursive: true });
    await this.phase('ipv4', `${mode}: IPv4 on the same hosts${plan.join ? ', A and B one L2 domain' : ', a subnet per segment'}`, () => world.applyIpv4(plan));
    const tcpMove = async (to: Hypervisor, label: string): Promise<MoveResult> => {
      const from = this.vmHost;
      const { dir, tap } = this.nextVmDir();
      const result = await this.phase('move', label, (since) =>
        moveVm({
          world,
          image: this.image!,
          config: this.guestConfig(),
          mac: VM_MAC,
          memoryMb: this.o.memoryMb,
          source: this.vm!,
          from,
          to,
          transport: 'qemu-tcp',
          tcpAddress: plan.migrationAddress[to],
          dir,
          tap,
          disk: this.moveDisk(dir),
          autoConverge: this.autoConverge,
          deadlineMs: this.o.moveDeadlineMs,
          signal: this.signal,
          onProgress: (p: MoveProgress) => this.progress('move', 'progress', { detail: `${label}: ${p.status ?? p.phase}`, bytes: p.transferred, totalBytes: p.total }, since),
        }),
      );
      await this.retire(this.vm!, result);
      return result;
    };
    // The baseline starts with the VM on A's subnet (its address is A's).
    if (mode === 'inter-subnet' && this.vmHost !== 'A') await tcpMove('A', `${topology} TCP/IP: back to A before the baseline (not counted)`);
    const target = `${VM_IPV4}:${GOLDBACH_TCP_PORT}`;
    const client = this.track(new GoldbachClient({ world, host: CLIENT_HOST, api: '', dir: phaseDir, target, tcp: true, name: 'TCP Goldbach client on C' }));
    await client.start();
    const wait = { deadlineMs: this.o.recoverDeadlineMs, signal: this.signal };
    await this.phase('clients', `TCP Goldbach client on C to ${target}`, () => client.answeredAfter(0, wait));
    let iperf3: Iperf3Client | undefined;
    if (this.o.workload === 'iperf3') {
      const direct = this.track(new Iperf3Client({ world, host: CLIENT_HOST, dir: phaseDir, address: VM_IPV4, port: IPERF3_PORT, rateMbps: IPERF3_RATE_MBPS, name: 'iperf3 TCP client on C' }));
      iperf3 = direct;
      await direct.start();
      await this.phase('iperf3', `iperf3 on C at ${IPERF3_RATE_MBPS} Mbit/s to ${VM_IPV4}:${IPERF3_PORT}`, () => direct.sentAfter(0, wait));
    }
    const moves: Array<Omit<TcpMove, 'goldbachGapMs'> & { requestedAt: number; resumedAt: number }> = [];
    const count = mode === 'intra-subnet' ? this.o.tcpMoves : this.o.tcpWanMoves;
    let brokenAt: number | undefined;
    for (let i = 0; i < count; i++) {
      const from = this.vmHost;
      const to: Hypervisor = from === 'A' ? 'B' : 'A';
      const result = await tcpMove(to, `${topology} TCP/IP move ${i + 1}: ${from} -> ${to} (QEMU tcp:, ${mode})`);
      timeline.migrations.push(migrationSpan(`${from}→${to} TCP`, result));
      // A new connection from C, asked at the same time as the held one is watched: both wait
      // as long, and neither wait adds to the other's.
      const freshRun = this.once(CLIENT_HOST, 'new TCP client', ['cal', 'ask', '--tcp', target, '--count', '3', '--json'], this.o.brokenAfterMs);
      // Once the held connection is broken it stays counted so; later moves only measure the migration.
      const survived =
        brokenAt === undefined &&
        (await this.phase('recover', `TCP connection after the move (broken if silent ${Math.round(this.o.brokenAfterMs / 1000)} s)`, () =>
          client.answeredAfter(result.resumedAt, { deadlineMs: this.o.brokenAfterMs, signal: this.signal }).then(
            () => true,
            () => false,
          ),
        ));
      const fresh = await freshRun;
      const disk = await this.diskAfterMove(result);
      const workload = await this.workloadAfterMove(result, iperf3);
      if (!survived && brokenAt === undefined) {
        brokenAt = i;
        await client.finish();
      }
      const freshReport = fresh.lines.find((l) => l.startsWith('{'));
      const freshAnswers = freshReport ? Number((JSON.parse(freshReport) as { answers?: number }).answers ?? 0) : 0;
      moves.push({
        move: i + 1,
        from,
        to,
        requestedAt: result.requestedAt,
        resumedAt: result.resumedAt,
        totalMs: result.totalMs,
        downtimeMs: result.downtimeMs ?? null,
        qemuTotalMs: result.report.totalTimeMs ?? null,
        qemuDowntimeMs: result.report.downtimeMs ?? null,
        survived,
        newConnection: freshAnswers > 0 ? 'answered' : 'failed',
        bytes: result.report.bytes ?? null,
        ...(disk ? { disk } : {}),
        ...(workload ? { workload } : {}),
      });
      await new Promise((r) => setTimeout(r, this.o.settleMs));
    }
    await client.finish();
    if (iperf3) {
      await iperf3.finish();
      await this.release(iperf3);
    }
    const answers = client.answers();
    timeline.tcpAnswers.push(...answers.map((a) => a.at));
    const end = client.end();
    const broken = brokenAt !== undefined || client.broken;
    await this.release(client);
    await world.removeIpv4();
    const finished = Date.now();
    return {
      mode,
      moves: moves.map((m, i) => {
        const { requestedAt, resumedAt: _resumedAt, ...rest } = m;
        return { ...rest, goldbachGapMs: m.survived ? goldbachGap(answers, requestedAt, moves[i + 1]?.requestedAt ?? finished) : null };
      }),
      brokenConnections: broken ? 1 : 0,
      goldbach: { answers: answers.length, ended: end?.ended ?? 'unknown', ...(end?.error ? { error: end.error } : {}) },
    };
  }
}

function migrationSpan(label: string, r: MoveResult): Timeline['migrations'][number] {
  return {
    label,
    transport: r.transport,
    requestedAt: r.report.startedAt,
    stoppedAt: r.sourceStoppedAt ?? null,
    resumedAt: r.resumedAt,
    samples: r.samples.map((s) => ({ t: s.at, transferred: s.transferred, total: s.total })),
  };
}

async function machineFacts(): Promise<LabReport['machine']> {
  const os = await import('node:os');
  const { qemuMajor } = await import('./qemu-command.js');
  const major = qemuMajor();
  return {
    cpus: os.cpus().length,
    memoryGiB: Math.round(os.totalmem() / 2 ** 30),
    kernel: os.release(),
    node: process.version,
    ...(major ? { qemu: String(major) } : {}),
  };
}

/** The answers a `cal ask --json` report counts (0 if the line is not one). */
function answersIn(report: string): number {
  try {
    const answers = (JSON.parse(report) as { answers?: unknown }).answers;
    return typeof answers === 'number' ? answers : 0;
  } catch {
    return 0;
  }
}
