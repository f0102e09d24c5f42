/**
 * The lab VM as a process: QEMU (TCG) running the lab image, inside a network namespace
 * (a "physical host"), its virtio-net NIC on a tap in that host's segment bridge.
 *
 *     const vm = await LabVm.start({ netns: 'xl-A', tap: 'tap-vm', bridge: 'br-A', mac,
 *       image, config, dir, deadlineMs: 300_000, signal });
 *     vm.hid; vm.ready?.dag; await vm.waitForEvent((e) => e.event === 'move.registered');
 *     await vm.stop();
 *
 * `start()` returns once the guest's init has printed `guest.ready` (node, agent and
 * Goldbach service up), or — with `incoming` (a migration's destination) — once QEMU
 * listens for the migration (its observer monitor says `inmigrate`; both monitors are free
 * when start() returns). A guest that does not come up in time, or a QEMU that exits,
 * is one ERR_TIMEOUT / ERR_STATE line naming what the guest last printed; whatever was
 * started is stopped first. `stop()` ends QEMU (SIGTERM, then SIGKILL), the event-log
 * tail, and the tap if this VM made it (`bridge` given); the files in `dir` stay.
 *
 * Files in `dir`: console.log (ttyS0: kernel, init, daemons' stderr), events.log (ttyS1:
 * JSON events), command.sock (ttyS2: commands into the guest), qmp.sock (for `xmig
 * migrate`), observer.qmp.sock (for anyone watching), qemu.stderr.
 *
 * Commands into the guest (its init's reader on ttyS2, lab/guest/init-script.ts): `command`
 * writes a line; `verifyFiles` and `finishData` send one with an id and wait for the answer
 * event carrying that id, re-sending it meanwhile (a line sent before the guest's reader
 * opened the port is lost, and the guest ignores what it cannot read).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, rmSync } from 'node:fs';
import { createConnection, type Socket } from 'node:net';
import { join } from 'node:path';
import { XmigError } from '../shared/errors.js';
import type { Startable } from '../shared/startable.js';
import { XidType, type Xid } from '../shared/xid.js';
import { checkWorkloads, guestCommandLine, type GuestConfig } from './guest/guest-config.js';
import { GuestEventLog, lastLine, type GuestEvent, type WaitOptions } from './guest-events.js';
import type { LabImage } from './image/build-image.js';
import { isLabMac, linkLocalFromMac } from './lab-constants.js';
import { labQemuArgs, QEMU_BINARY, type DataDisk } from './qemu-command.js';
import { QmpClient } from '../mover/qmp-client.js';

export interface LabVmOptions {
  /** The namespace QEMU runs in (the hosting "physical host"); none: this process's. */
  netns?: string;
  /** The tap QEMU opens. Made (and removed on stop) by the VM if `bridge` is given; else it must exist. */
  tap: string;
  /** The segment bridge to put the tap on. */
  bridge?: string;
  /** The NIC's fixed MAC (unicast; the lab uses 52:54:00:…): its link-local address follows from it. */
  mac: string;
  /** With `workloads` (a built image's), a config asking for one the image lacks is refused before QEMU starts. */
  image: Pick<LabImage, 'kernel' | 'initramfs'> & { workloads?: readonly string[] };
  config: GuestConfig;
  /** Where the VM's files go (created if missing). Unix socket paths must stay under 108 bytes. */
  dir: string;
  memoryMb?: number;
  cpus?: number;
  /** `-incoming` URI: this QEMU is a migration's destination and does not boot. */
  incoming?: string;
  disk?: DataDisk;
  /** How long the guest may take to report ready (default 300 s: TCG on a shared machine). */
  deadlineMs?: number;
  signal?: AbortSignal;
  qemu?: string;
}

const NAME = /^[A-Za-z0-9_.-]{1,15}$/;
const SOCKET_PATH_MAX = 107;
/** A command line for the guest: what its reader reads as one line of words. */
const COMMAND = /^[a-z][a-z0-9 ._-]{0,199}$/;
const SHA1 = /^[0-9a-f]{40}$/;
/** How long a command waits for its answer before it is sent again (the guest answers in a second or two, more under load). */
const RESEND_MS = 15_000;

export interface CommandOptions {
  /** How long to wait in all (default 120 s). */
  deadlineMs?: number;
  signal?: AbortSignal;
  /** Re-send a command unanswered this long (default 15 s). */
  resendMs?: number;
}

/** The guest's /data/xmig-files as read back from its disk (`verify`). */
export interface VerifiedFiles {
  files: number;
  /** File name (f00, f01, ...) -> sha1 (40 hex). */
  sha1s: Record<string, string>;
  /** False if the file writer did not pause for the read (a file may have been mid-write). */
  settled: boolean;
}

function ip(netns: string | undefined, args: string[]): void {
  const full = netns ? ['-n', netns, ...args] : args;
  const result = spawnSync('ip', full, { encoding: 'utf8' });
  if (result.status !== 0) throw new XmigError('ERR_STATE', `ip ${full.join(' ')}: ${(result.stderr || result.error?.message || '').trim()}`);
}

export class LabVm implements Startable {
  readonly serialLog: string;
  readonly eventLog: string;
  readonly qmpSocket: string;
  readonly observerQmpSocket: string;
  /** ttyS2's host end: the guest reads commands there. */
  readonly commandSocket: string;
  readonly stderrFile: string;
  /** The VM's HID (SHA-1 of its key): known before it boots. */
  readonly hid: Xid;
  /** Its IPv6 link-local address on eth0, the same on every segment. */
  readonly linkLocal: string;
  /** The guest's `guest.ready` event (hid, ad, dag, memUsedKb, uptimeMs), once it came. */
  ready: GuestEvent | undefined;
  private readonly log: GuestEventLog;
  private child: ChildProcess | undefined;
  private exit: { code: number | null; signal: NodeJS.Signals | null; error?: string } | undefined;
  private exited: Promise<void> = Promise.resolve();
  private madeTap = false;
  private commandConnection: Socket | undefined;
  private commandId = 0;

  /** Starts a VM and waits until it is ready (or listening for its migration). */
  static async start(options: LabVmOptions): Promise<LabVm> {
    const vm = new LabVm(options);
    await vm.start();
    return vm;
  }

  constructor(readonly options: LabVmOptions) {
    if (!NAME.test(options.tap)) throw new XmigError('ERR_CONFIG', `tap name "${options.tap}" must be 1-15 letters, digits, "_", "." or "-"`);
    if (options.bridge !== undefined && !NAME.test(options.bridge)) throw new XmigError('ERR_CONFIG', `bridge name "${options.bridge}" is not an interface name`);
    if (!isLabMac(options.mac)) throw new XmigError('ERR_CONFIG', `MAC "${options.mac}" is not a unicast MAC (xx:xx:xx:xx:xx:xx)`);
    if (/,/.test(options.dir + options.image.kernel + options.image.initramfs + (options.disk?.file ?? ''))) {
      throw new XmigError('ERR_CONFIG', 'QEMU option values cannot hold a ","; use paths without one');
    }
    this.serialLog = join(options.dir, 'console.log');
    this.eventLog = join(options.dir, 'events.log');
    this.qmpSocket = join(options.dir, 'qmp.sock');
    this.observerQmpSocket = join(options.dir, 'observer.qmp.sock');
    this.commandSocket = join(options.dir, 'command.sock');
    this.stderrFile = join(options.dir, 'qemu.stderr');
    if ((options.config.files !== undefined || options.config.dbench !== undefined) && !options.disk) {
      throw new XmigError('ERR_CONFIG', `guest ${options.config.name}: files and dbench write to /data, and the VM has no data disk (give it one)`);
    }
    if (Buffer.byteLength(this.observerQmpSocket) > SOCKET_PATH_MAX) throw new XmigError('ERR_CONFIG', `VM dir ${options.dir} is too long for a Unix socket path`);
    this.hid = options.config.key.xid(XidType.HID);
    this.linkLocal = linkLocalFromMac(options.mac);
    this.log = new GuestEventLog(this.eventLog);
  }

  get name(): string {
    return this.options.config.name;
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  /** Parsed events of the guest so far. */
  events(): readonly GuestEvent[] {
    return this.log.events;
  }

  /** The position after the events seen so far: pass it as `from` to wait only for what comes next. */
  get eventCount(): number {
    return this.log.count;
  }

  waitForEvent(predicate: (event: GuestEvent) => boolean, options: WaitOptions = {}): Promise<GuestEvent> {
    return this.log.waitFor(predicate, {
      failure: () => this.exitReason(),
      context: () => this.lastPrinted(),
      ...options,
    });
  }

  /** What the guest last printed on its console (and the last event it logged). */
  lastPrinted(): string {
    const console = lastLine(this.serialLog);
    const event = this.log.events.at(-1);
    const parts = [console ? `console: "${console.slice(0, 200)}"` : 'nothing on its console'];
    if (event) parts.push(`last event: ${event.event}`);
    return parts.join(', ');
  }

  private exitReason(): string | undefined {
    if (!this.exit) return undefined;
    const stderr = lastLine(this.stderrFile);
    if (this.exit.error) return `QEMU of ${this.name} did not start: ${this.exit.error}`;
    return `QEMU of ${this.name} exited (${this.exit.signal ?? `code ${this.exit.code}`})${stderr ? `: ${stderr.slice(0, 200)}` : ''}; ${this.lastPrinted()}`;
  }

  async start(): Promise<void> {
    if (this.child) return;
    const o = this.options;
    o.signal?.throwIfAborted();
    for (const file of [o.image.kernel, o.image.initramfs, ...(o.disk ? [o.disk.file] : [])]) {
      if (!existsSync(file)) throw new XmigError('ERR_STATE', `no such file: ${file}`);
    }
    if (o.netns !== undefined && !existsSync(`/run/netns/${o.netns}`)) throw new XmigError('ERR_STATE', `no network namespace ${o.netns}`);
    const append = guestCommandLine(o.config);
    if (o.image.workloads) checkWorkloads({ workloads: o.image.workloads }, o.config);
    mkdirSync(o.dir, { recursive: true });
    for (const file of [this.serialLog, this.eventLog, this.qmpSocket, this.observerQmpSocket, this.commandSocket]) rmSync(file, { force: true });
    try {
      if (o.bridge !== undefined) {
        ip(o.netns, ['tuntap', 'add', 'dev', o.tap, 'mode', 'tap']);
        this.madeTap = true;
        ip(o.netns, ['link', 'set', o.tap, 'master', o.bridge, 'up']);
      }
      const args = labQemuArgs({
        name: this.name,
        kernel: o.image.kernel,
        initramfs: o.image.initramfs,
        append,
        memoryMb: o.memoryMb,
        cpus: o.cpus,
        tap: o.tap,
        mac: o.mac,
        disk: o.disk,
        serialLog: this.serialLog,
        eventLog: this.eventLog,
        commandSocket: this.commandSocket,
        qmpSocket: this.qmpSocket,
        observerQmpSocket: this.observerQmpSocket,
        incoming: o.incoming,
      });
      const qemu = o.qemu ?? QEMU_BINARY;
      const [command, argv] = o.netns !== undefined ? ['ip', ['netns', 'exec', o.netns, qemu, ...args]] : [qemu, args];
      // QEMU's stderr (and that of an `exec:` migration command it runs) goes to a file: a
      // pipe nobody reads would fill up and stall it.
      const stderr = openSync(this.stderrFile, 'w');
      try {
        this.child = spawn(command, argv, { stdio: ['ignore', 'ignore', stderr] });
      } finally {
        closeSync(stderr);
      }
      const child = this.child;
      this.exited = new Promise<void>((resolve) => {
        child.once('exit', (code, signal) => {
          this.exit = { code, signal };
          this.log.notify();
          resolve();
        });
        child.once('error', (error) => {
          this.exit = { code: null, signal: null, error: error.message };
          this.log.notify();
          resolve();
        });
      });
      await this.log.start();
      const deadlineMs = o.deadlineMs ?? 300_000;
      if (o.incoming !== undefined) {
        await this.waitForIncoming(deadlineMs);
      } else {
        this.ready = await this.waitForEvent((e) => e.event === 'guest.ready' || e.event === 'guest.failed', {
          signal: o.signal,
          deadlineMs,
          what: `guest ${this.name} ready`,
        });
        if (this.ready.event === 'guest.failed') throw new XmigError('ERR_STATE', `guest ${this.name} failed: ${String(this.ready['reason'])}; ${this.lastPrinted()}`);
      }
    } catch (error) {
      await this.stop();
      if (error instanceof XmigError && error.code === 'ERR_TIMEOUT' && !/^aborted/.test(error.message)) {
        throw new XmigError('ERR_TIMEOUT', `guest ${this.name} did not come up: ${error.message}`, { cause: error });
      }
      throw error;
    }
  }

  /**
   * Until QEMU listens for its migration: its monitors answer only once its main loop runs,
   * which is after it opened the `-incoming` listener, so an answer of `inmigrate` on the
   * observer monitor (left free again at once) means a sender can connect.
   */
  private async waitForIncoming(deadlineMs: number): Promise<void> {
    const deadline = Date.now() + deadlineMs;
    for (;;) {
      this.options.signal?.throwIfAborted();
      const failed = this.exitReason();
      if (failed) throw new XmigError('ERR_STATE', failed);
      if (Date.now() > deadline) throw new XmigError('ERR_TIMEOUT', `QEMU of ${this.name} did not listen for its migration within ${Math.round(deadlineMs / 1000)} s`);
      if (existsSync(this.qmpSocket) && existsSync(this.observerQmpSocket)) {
        const qmp = await QmpClient.connect(this.observerQmpSocket, Math.max(1000, deadline - Date.now())).catch(() => undefined);
        if (qmp) {
          try {
            const { status } = await qmp.execute<{ status: string }>('query-status', undefined, { timeoutMs: Math.max(1000, deadline - Date.now()) });
            if (status === 'inmigrate') return;
            throw new XmigError('ERR_STATE', `QEMU of ${this.name} is ${status}, not waiting for a migration`);
          } finally {
            await qmp.close();
          }
        }
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /**
   * Writes one line to the guest's command port (ttyS2), connecting to QEMU's socket first
   * (again, if the last connection was lost). Resolves once written; what the guest makes of
   * it shows in its events. QEMU takes one client on the socket: this VM keeps its one open.
   */
  async command(line: string, options: CommandOptions = {}): Promise<void> {
    if (!COMMAND.test(line)) throw new XmigError('ERR_CONFIG', `guest command "${line.slice(0, 60)}" is not 1-200 lower-case letters, digits, spaces, ".", "_" or "-"`);
    const deadline = Date.now() + (options.deadlineMs ?? 120_000);
    for (;;) {
      options.signal?.throwIfAborted();
      const failed = this.exitReason();
      if (failed) throw new XmigError('ERR_STATE', `${failed} before the command "${line}"`);
      const socket = this.commandConnection ?? (await this.connectCommand(deadline).catch(() => undefined));
      if (socket) {
        // A newline first ends whatever partial line the guest may have read.
        const written = await new Promise<boolean>((resolve) => socket.write(`\n${line}\n`, (error) => resolve(!error)));
        if (written) return;
        this.dropCommandConnection();
      }
      if (Date.now() > deadline) throw new XmigError('ERR_TIMEOUT', `could not write "${line}" to ${this.commandSocket} (QEMU of ${this.name} not listening there)`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  private connectCommand(deadline: number): Promise<Socket> {
    return new Promise<Socket>((resolve, reject) => {
      const socket = createConnection(this.commandSocket);
      const timer = setTimeout(() => socket.destroy(new Error('connect timeout')), Math.max(100, Math.min(5000, deadline - Date.now())));
      socket.once('connect', () => {
        clearTimeout(timer);
        socket.removeAllListeners('error');
        // The guest does not echo; whatever comes back is read and dropped, never left to pile up.
        socket.resume();
        socket.on('error', () => this.dropCommandConnection(socket));
        socket.on('close', () => this.dropCommandConnection(socket));
        this.commandConnection = socket;
        resolve(socket);
      });
      socket.once('error', (error) => {
        clearTimeout(timer);
        socket.destroy();
        reject(error);
      });
    });
  }

  private dropCommandConnection(socket = this.commandConnection): void {
    socket?.destroy();
    if (this.commandConnection === socket) this.commandConnection = undefined;
  }

  /** Sends `NAME ID` until the event `answer` with that id comes; returns it. */
  private async request(name: string, answer: string, options: CommandOptions): Promise<GuestEvent> {
    const id = ++this.commandId;
    const from = this.eventCount;
    const deadlineMs = options.deadlineMs ?? 120_000;
    const deadline = Date.now() + deadlineMs;
    for (;;) {
      await this.command(`${name} ${id}`, { deadlineMs: Math.max(1, deadline - Date.now()), signal: options.signal });
      const wait = Math.min(options.resendMs ?? RESEND_MS, deadline - Date.now());
      try {
        return await this.waitForEvent((e) => e.event === answer && e['id'] === id, { from, deadlineMs: Math.max(1, wait), signal: options.signal, what: `${answer} ${id}` });
      } catch (error) {
        const timedOut = error instanceof XmigError && error.code === 'ERR_TIMEOUT' && !options.signal?.aborted;
        if (!timedOut) throw error;
        if (Date.now() >= deadline) {
          throw new XmigError('ERR_TIMEOUT', `guest ${this.name} did not answer "${name}" within ${Math.round(deadlineMs / 1000)} s; ${this.lastPrinted()}`, { cause: error });
        }
      }
    }
  }

  /**
   * The guest's /data/xmig-files read back from its disk (page cache dropped, the writer
   * paused between two writes): compare with the last `guest.file-wrote` of each file.
   */
  async verifyFiles(options: CommandOptions = {}): Promise<VerifiedFiles> {
    const event = await this.request('verify', 'guest.files-verified', options);
    const sha1s = event['sha1s'];
    const files = event['files'];
    if (typeof files !== 'number' || !sha1s || typeof sha1s !== 'object' || Array.isArray(sha1s) || !Object.values(sha1s).every((v) => typeof v === 'string' && SHA1.test(v))) {
      throw new XmigError('ERR_MESSAGE_MALFORMED', `guest ${this.name}: guest.files-verified is not {files, sha1s: {name: sha1}}`);
    }
    return { files, sha1s: sha1s as Record<string, string>, settled: event['settled'] !== false };
  }

  /** Stops the guest's file writer and dbench, syncs and unmounts /data; `ok` says whether the unmount worked. */
  async finishData(options: CommandOptions = {}): Promise<{ ok: boolean }> {
    const event = await this.request('finish', 'guest.data-unmounted', options);
    return { ok: event['ok'] === true };
  }

  async stop(): Promise<void> {
    this.dropCommandConnection();
    const child = this.child;
    if (child && !this.exit) {
      child.kill('SIGTERM');
      const killer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await this.exited;
      clearTimeout(killer);
    }
    await this.log.stop();
    if (this.madeTap) {
      this.madeTap = false;
      try {
        ip(this.options.netns, ['link', 'del', this.options.tap]);
      } catch {
        // The namespace may be gone already (and the tap with it).
      }
    }
    for (const file of [this.qmpSocket, this.observerQmpSocket, this.commandSocket]) rmSync(file, { force: true });
  }
}
