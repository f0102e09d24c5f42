/**
 * The lab's Linux plumbing: network namespaces (one per physical host), bridges
 * (segments), veth pairs (cables) and taps (a VM's NIC), made through iproute2 and
 * every one of them written into a registry, so that `teardown()` removes all of it and
 * nothing else — on success, on failure, on Ctrl-C.
 *
 * Names carry a per-run prefix (`xmig-lab-1a2b3c-A`): two runs, or a run and the
 * leftovers of a killed one, never meet. Interfaces are created directly inside their
 * namespaces (`ip link add … netns NS`), so their short names never collide with the
 * root namespace's. A namespace that already exists is a one-line error, never reused.
 *
 * Teardown order: the processes this run started (SIGTERM, then SIGKILL), then anything
 * still running inside our namespaces (QEMU's `exec:` children included), then the
 * namespaces, which takes their interfaces with them.
 */
import { execFile, spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigError, XmigError, errorMessage } from '../shared/errors.js';
import { processAlive } from '../shared/process-alive.js';

/** Every namespace a lab run makes starts with this. */
export const LAB_NETNS_PREFIX = 'xmig-lab-';
/** Where a run notes its pid, so `xmig lab clean` can tell a kept or killed run from a live one. */
export const LAB_OWNERS_DIR = '/run/xmig/lab';
/** Linux interface names are at most 15 bytes. */
const IFNAMSIZ = 15;
/** `ip` itself takes milliseconds; this only ends a hung one. */
const IP_DEADLINE_MS = 20_000;

export interface IpResult {
  stdout: string;
  stderr: string;
}

/** Runs `ip ARGS…` (or another command) and rejects with a one-line error naming it. */
export function run(command: string, args: readonly string[], deadlineMs = IP_DEADLINE_MS): Promise<IpResult> {
  return new Promise((resolve, reject) => {
    execFile(command, args, { timeout: deadlineMs, encoding: 'utf8' }, (error, stdout, stderr) => {
      if (error) {
        const detail = (stderr || error.message).trim().split('\n')[0];
        reject(new XmigError('ERR_STATE', `${command} ${args.join(' ')}: ${detail}`, { cause: error }));
      } else resolve({ stdout, stderr });
    });
  });
}

/** The network namespaces that exist now (`ip netns list`). */
export async function listNamespaces(): Promise<string[]> {
  const { stdout } = await run('ip', ['-json', 'netns', 'list']);
  if (!stdout.trim()) return [];
  const parsed = JSON.parse(stdout) as Array<{ name: string }>;
  return parsed.map((n) => n.name);
}

/** A fresh per-run prefix: `xmig-lab-` and 6 hex digits. */
export function newRunPrefix(): string {
  return `${LAB_NETNS_PREFIX}${randomBytes(3).toString('hex')}`;
}

/** A prefix given by a user: letters, digits and "-", short enough to leave room for host names. */
export function checkPrefix(prefix: string): string {
  if (!/^[A-Za-z0-9][A-Za-z0-9-]{0,39}$/.test(prefix)) {
    throw new ConfigError(`namespace prefix "${prefix}": letters, digits and "-" only, at most 40 characters`);
  }
  return prefix;
}

export function checkInterfaceName(name: string): string {
  if (!/^[A-Za-z0-9_.-]+$/.test(name) || Buffer.byteLength(name) > IFNAMSIZ) {
    throw new XmigError('ERR_CONFIG', `interface name "${name}": at most ${IFNAMSIZ} letters, digits, "_", "." or "-"`);
  }
  return name;
}

export interface LinkOptions {
  mtu?: number;
  /** Enslave to this bridge (in the same namespace). */
  master?: string;
  /** A fixed MAC address (a bridge's stays put as ports come and go). */
  mac?: string;
}

export interface EndPoint {
  /** Namespace (full name). */
  ns: string;
  /** Interface name inside it. */
  name: string;
  options?: LinkOptions;
}

type Made =
  | { kind: 'namespace'; name: string }
  | { kind: 'process'; ns: string; child: ChildProcess; what: string };

export interface TeardownReport {
  namespaces: string[];
  processesStopped: number;
  /** Processes still inside a namespace at teardown that this run did not start itself (QEMU's children). */
  strays: number;
  errors: string[];
}

export class NetnsRegistry {
  private readonly made: Made[] = [];
  private tornDown = false;

  constructor(readonly prefix: string = newRunPrefix()) {
    checkPrefix(prefix);
  }

  /** The full name of a host's namespace. */
  nsName(host: string): string {
    return `${this.prefix}-${host}`;
  }

  get namespaces(): string[] {
    return this.made.flatMap((m) => (m.kind === 'namespace' ? [m.name] : []));
  }

  /**
   * Makes the namespace of `host`, with its loopback up and IPv6 duplicate address
   * detection off (the lab sets its link-local addresses itself, and a tentative
   * address cannot be bound). Refuses a name that already exists.
   */
  async addNamespace(host: string, options: { ipv4Forwarding?: boolean } = {}): Promise<string> {
    this.assertLive();
    const name = this.nsName(host);
    if ((await listNamespaces()).includes(name)) {
      throw new XmigError('ERR_STATE', `network namespace ${name} already exists (a leftover of another run? remove it: ip netns del ${name})`);
    }
    if (this.namespaces.length === 0) this.noteOwner();
    await run('ip', ['netns', 'add', name]);
    this.made.push({ kind: 'namespace', name });
    await this.ip(name, ['link', 'set', 'lo', 'up']);
    const sysctls = ['net.ipv6.conf.all.accept_dad=0', 'net.ipv6.conf.default.accept_dad=0', `net.ipv4.ip_forward=${options.ipv4Forwarding ? 1 : 0}`];
    await run('ip', ['netns', 'exec', name, 'sysctl', '-q', '-w', ...sysctls]);
    return name;
  }

  /** `ip -n NS ARGS…` */
  ip(ns: string, args: readonly string[]): Promise<IpResult> {
    return run('ip', ['-n', ns, ...args]);
  }

  async addBridge(ns: string, name: string, options: LinkOptions = {}): Promise<void> {
    checkInterfaceName(name);
    // No STP and no forwarding delay: a segment is one cable, and a port must pass traffic at
    // once. No MLD snooping: the segment's group is flooded to every port, as on a plain switch
    // (a VM that just landed has sent no MLD report on its new segment yet).
    await this.ip(ns, ['link', 'add', name, 'type', 'bridge', 'stp_state', '0', 'forward_delay', '0', 'mcast_snooping', '0']);
    await this.configure(ns, name, options);
  }

  /** A veth pair from `a` to `b`, created inside both namespaces at once. */
  async addVeth(a: EndPoint, b: EndPoint): Promise<void> {
    checkInterfaceName(a.name);
    checkInterfaceName(b.name);
    await run('ip', ['link', 'add', a.name, 'netns', a.ns, 'type', 'veth', 'peer', 'name', b.name, 'netns', b.ns]);
    await this.configure(a.ns, a.name, a.options ?? {});
    await this.configure(b.ns, b.name, b.options ?? {});
  }

  /** A tap for a VM's NIC (QEMU opens it by name from inside the namespace). */
  async addTap(ns: string, name: string, options: LinkOptions = {}): Promise<void> {
    checkInterfaceName(name);
    await this.ip(ns, ['tuntap', 'add', 'dev', name, 'mode', 'tap']);
    await this.configure(ns, name, options);
  }

  async deleteLink(ns: string, name: string): Promise<void> {
    await this.ip(ns, ['link', 'del', name]);
  }

  /** Adds an address (`fe80::1/64`, `10.1.0.1/24`); IPv6 ones without DAD, usable at once. */
  async addAddress(ns: string, dev: string, cidr: string): Promise<void> {
    await this.ip(ns, ['addr', 'add', cidr, 'dev', dev, ...(cidr.includes(':') ? ['nodad'] : [])]);
  }

  async addRoute(ns: string, args: readonly string[]): Promise<void> {
    await this.ip(ns, ['route', 'add', ...args]);
  }

  private async configure(ns: string, name: string, options: LinkOptions): Promise<void> {
    const set = ['link', 'set', 'dev', name];
    if (options.mac) await this.ip(ns, [...set, 'address', options.mac]);
    if (options.mtu) await this.ip(ns, [...set, 'mtu', String(options.mtu)]);
    if (options.master) await this.ip(ns, [...set, 'master', options.master]);
    await this.ip(ns, [...set, 'up']);
  }

  /**
   * Starts `argv` inside namespace `ns` (`ip netns exec`, which execs it: the child's
   * pid is the command's). The registry stops it at teardown if nobody did before.
   */
  spawn(ns: string, argv: readonly string[], options: SpawnOptions = {}): ChildProcess {
    this.assertLive();
    if (!this.namespaces.includes(ns)) throw new XmigError('ERR_STATE', `namespace ${ns} is not one of this run's`);
    const child = spawn('ip', ['netns', 'exec', ns, ...argv], options);
    this.made.push({ kind: 'process', ns, child, what: argv.join(' ') });
    return child;
  }

  /** Pids of every process inside a namespace (`ip netns pids`). */
  async pidsIn(ns: string): Promise<number[]> {
    const { stdout } = await run('ip', ['netns', 'pids', ns]).catch(() => ({ stdout: '' }));
    return stdout.split(/\s+/).filter(Boolean).map(Number).filter((pid) => pid > 0 && pid !== process.pid);
  }

  /**
   * Removes everything this run made, in reverse: its processes (SIGTERM, and SIGKILL
   * after `graceMs`), whatever else still runs in its namespaces, then the namespaces.
   * Safe to call again; never throws (what failed is in the report).
   */
  async teardown(graceMs = 5000): Promise<TeardownReport> {
    const report: TeardownReport = { namespaces: [], processesStopped: 0, strays: 0, errors: [] };
    if (this.tornDown) return report;
    this.tornDown = true;
    const processes = this.made.flatMap((m) => (m.kind === 'process' ? [m] : []));
    await Promise.all(
      processes.map(async ({ child }) => {
        if (await stopChild(child, graceMs)) report.processesStopped++;
      }),
    );
    const namespaces = this.namespaces.reverse();
    for (const ns of namespaces) {
      const strays = await this.pidsIn(ns);
      report.strays += strays.length;
      for (const pid of strays) signalPid(pid, 'SIGTERM');
      if (strays.length) await waitUntil(async () => (await this.pidsIn(ns)).length === 0, graceMs);
      for (const pid of await this.pidsIn(ns)) signalPid(pid, 'SIGKILL');
      if (strays.length) await waitUntil(async () => (await this.pidsIn(ns)).length === 0, graceMs);
    }
    for (const ns of namespaces) {
      try {
        await run('ip', ['netns', 'del', ns]);
        report.namespaces.push(ns);
      } catch (error) {
        report.errors.push(errorMessage(error));
      }
    }
    this.made.length = 0;
    if (report.errors.length === 0) rmSync(this.ownerFile, { force: true });
    return report;
  }

  private get ownerFile(): string {
    return ownerPath(this.prefix);
  }

  private noteOwner(): void {
    try {
      mkdirSync(LAB_OWNERS_DIR, { recursive: true });
      writeFileSync(this.ownerFile, `${process.pid}\n`);
    } catch {
      // Only `xmig lab clean` reads it; a run without one is taken for a leftover there.
    }
  }

  /** Takes over a namespace another run left (`xmig lab clean`): teardown then removes it too. */
  adopt(namespace: string): void {
    this.assertLive();
    if (!namespace.startsWith(`${this.prefix}-`)) throw new XmigError('ERR_STATE', `namespace ${namespace} is not one of ${this.prefix}'s`);
    this.made.push({ kind: 'namespace', name: namespace });
  }

  /** For `--keep`: how to look inside what was left. */
  enterHints(): string[] {
    return this.namespaces.map((ns) => `ip netns exec ${ns} bash`);
  }

  /** Forgets everything without removing it (`--keep`): teardown() then does nothing. */
  keep(): void {
    this.tornDown = true;
  }

  private assertLive(): void {
    if (this.tornDown) throw new XmigError('ERR_STATE', `lab network ${this.prefix} is already torn down`);
  }
}

function signalPid(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal);
  } catch {
    // already gone
  }
}

/** SIGTERM, then SIGKILL after `graceMs`; resolves true if this call had to stop it. */
export async function stopChild(child: ChildProcess, graceMs: number): Promise<boolean> {
  if (child.exitCode !== null || child.signalCode !== null) return false;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  let timer: NodeJS.Timeout | undefined;
  const killed = await Promise.race([
    exited.then(() => false),
    new Promise<boolean>((resolve) => {
      timer = setTimeout(() => resolve(true), graceMs);
    }),
  ]);
  clearTimeout(timer);
  if (killed) {
    child.kill('SIGKILL');
    await exited;
  }
  return true;
}

async function waitUntil(condition: () => Promise<boolean>, deadlineMs: number): Promise<void> {
  const end = Date.now() + deadlineMs;
  while (Date.now() < end) {
    if (await condition()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** The prefix of a lab namespace (`xmig-lab-1a2b3c-A` -> `xmig-lab-1a2b3c`). */
function prefixOf(namespace: string): string {
  return namespace.slice(0, namespace.lastIndexOf('-'));
}

/**
 * Removes the namespaces, and what runs in them, of lab runs that are gone (kept with
 * --keep, or killed): every run of the family (`xmig-lab-*`) whose owner is not alive, or
 * exactly `prefix`'s if given. A live run's namespaces are never touched unless named.
 * Owner files of dead runs that left no namespace go too.
 */
export async function cleanLeftovers(prefix?: string, family = LAB_NETNS_PREFIX): Promise<string[]> {
  if (prefix !== undefined) checkPrefix(prefix);
  const removed: string[] = [];
  const inFamily = (n: string): boolean => n.startsWith(family);
  const namespaces = (await listNamespaces()).filter((n) => (prefix === undefined ? inFamily(n) : prefixOf(n) === prefix));
  for (const runPrefix of new Set(namespaces.map(prefixOf))) {
    const pid = ownerOf(runPrefix);
    if (prefix === undefined && pid !== undefined && pid !== process.pid && processAlive(pid)) continue;
    const registry = new NetnsRegistry(runPrefix);
    for (const name of namespaces.filter((n) => prefixOf(n) === runPrefix)) registry.adopt(name);
    const report = await registry.teardown(2000);
    removed.push(...report.namespaces);
    rmSync(ownerPath(runPrefix), { force: true });
  }
  const left = new Set((await listNamespaces()).filter(inFamily).map(prefixOf));
  let files: string[] = [];
  try {
    files = readdirSync(LAB_OWNERS_DIR);
  } catch {
    // no run ever noted an owner here
  }
  for (const file of files) {
    const runPrefix = file.endsWith('.pid') ? file.slice(0, -'.pid'.length) : undefined;
    if (!runPrefix || !runPrefix.startsWith(family) || left.has(runPrefix) || (prefix !== undefined && runPrefix !== prefix)) continue;
    const pid = ownerOf(runPrefix);
    if (pid === undefined || pid === process.pid || !processAlive(pid)) rmSync(ownerPath(runPrefix), { force: true });
  }
  return removed;
}

function ownerPath(runPrefix: string): string {
  return join(LAB_OWNERS_DIR, `${runPrefix}.pid`);
}

/** The pid a run noted as its owner, if it noted one. */
function ownerOf(runPrefix: string): number | undefined {
  const path = ownerPath(runPrefix);
  if (!existsSync(path)) return undefined;
  const pid = Number(readFileSync(path, 'utf8').trim());
  return Number.isInteger(pid) && pid > 0 ? pid : undefined;
}
