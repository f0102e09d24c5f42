/**
 * The lab VM's configuration, carried on its kernel command line: the guest has no disk
 * to keep a config on and no network to fetch one, and the lab must know the VM's HID
 * (and the Goldbach service's SID) before it boots, so it makes the keys and hands them
 * over here. The guest's init (lab/guest/init-script.ts) reads /proc/cmdline and writes
 * the node's and agent's config files from these words.
 *
 * The words (no value contains a space, quote, `$` or `\`; the builder refuses any that
 * would):
 *
 * | word | meaning | default |
 * |---|---|---|
 * | `xmig.name=NAME` | the VM's node name (its Click element prefix on its control port) | required |
 * | `xmig.key=B64URL` | the VM's Ed25519 private key, PKCS#8 DER in base64url (64 chars); HID = SHA-1 of its public key | required |
 * | `xmig.port=N` | xianet's UDP port on eth0 | 7000 (`XIANET_PORT`) |
 * | `xmig.group=ADDR` | the segment's multicast group, joined on eth0 (ff02::/16) | ff02::c0de (`XIANET_GROUP`) |
 * | `xmig.mtu=N` | eth0's IP MTU (xianet sends no datagram larger than fits) | 1500 (what the NIC has) |
 * | `xmig.log=LEVEL` | log level of the guest's xmig processes: error, warn, info, debug | info |
 * | `xmig.trust=HEX,...` | ADs (40-hex ids) whose beacons the node believes; none: any signed beacon | none |
 * | `xmig.calkey=B64URL` | the Goldbach service's key (its SID); without it no `xmig cal serve` runs | none |
 * | `xmig.calname=NAME` | the name `xmig cal serve` registers for the service | none |
 * | `xmig.caltcp=PORT` | the service also answers plain TCP on this port (all addresses) | none |
 * | `xmig.names=LIST` | what the agent (re-)registers after each move: `name` (the VM) or `name@HEX` (a service SID), comma-separated | `calname@SID` of the service |
 * | `xmig.ipv4=ADDR/LEN` | a fixed IPv4 address on eth0 (the TCP/IP baseline) | none |
 * | `xmig.gw4=ADDR` | the IPv4 default gateway | none |
 * | `xmig.metrics=PORT` | the node's /metrics on [::]:PORT | 9100 |
 * | `xmig.agentmetrics=PORT` | the agent's /metrics on [::]:PORT | 9101 |
 * | `xmig.control=PORT` | the VM's route tables readable from its segment on TCP PORT: the node's control port moves to loopback TCP (writes need a token only the guest can read; the agent has it) and a relay opens PORT to it | none (a Unix socket) |
 * | `xmig.files=N` | with /data mounted, a writer keeps N (1-64) files /data/xmig-files/f00.. of 1 MiB (urandom, fsynced), rewriting one a second round robin; each write logs `guest.file-wrote` (file, sha1, seq) | none |
 * | `xmig.dbench=N` | with /data mounted, Debian's dbench with N (1-64) clients in /data/dbench for a day, restarted when it ends; each line it prints is a `guest.dbench` event (`line`) | none |
 * | `xmig.iperf3=PORT` | `iperf3 -s -p PORT` on all addresses, restarted when it ends; `guest.iperf3-listening` once it listens | none |
 * | `xmig.tunnelkey=B64URL` | `xmig tunnel serve` with this key (its SID: the tunnel's address) in front of a TCP service on loopback: TCP clients elsewhere reach it over XIA through `xmig tunnel connect`; the guest is ready once it listens | none |
 * | `xmig.tunnelto=PORT` | the service's port on 127.0.0.1 (with xmig.tunnelkey, required) | none |
 *
 * The workloads start after `guest.ready` (they must not slow the boot), and need the image
 * to hold their programs (`checkWorkloads`).
 *
 * `guestCommandLine(config)` gives the whole `-append` line: the kernel's own words
 * (serial console, rdinit, panic) and these. `parseGuestCommandLine` reads one back.
 */
import { isIPv4, isIPv6 } from 'node:net';
import { XmigError } from '../../shared/errors.js';
import { Identity } from '../../shared/identity.js';
import type { LogLevel } from '../../shared/logger.js';
import { Xid, XidType } from '../../shared/xid.js';
import { GUEST_AGENT_METRICS_PORT, GUEST_NODE_METRICS_PORT, LAB_MTU, XIANET_GROUP, XIANET_PORT } from '../lab-constants.js';

export interface GuestName {
  name: string;
  /** The service this name stands for; without it the name stands for the VM. */
  sid?: Xid;
}

export interface GuestGoldbach {
  /** The service's key: its SID is the service's address in the VM. */
  key: Identity;
  /** The name it registers (and the agent re-registers after each move). */
  name?: string;
  /** Also answer plain TCP on this port (the TCP/IP baseline's service). */
  tcpPort?: number;
}

export interface GuestConfig {
  name: string;
  key: Identity;
  port?: number;
  group?: string;
  mtu?: number;
  logLevel?: LogLevel;
  trustedAds?: Xid[];
  goldbach?: GuestGoldbach;
  /** Default: the Goldbach service's name with its SID. */
  names?: GuestName[];
  /** "10.1.0.10/24" */
  ipv4?: string;
  gateway4?: string;
  nodeMetricsPort?: number;
  agentMetricsPort?: number;
  /** The VM's control port readable (not writable) from its segment on this TCP port: the lab reads the VM's routes. */
  controlPort?: number;
  /** Rotating fsynced 1 MiB files on /data, their sha1s logged: the disk's content checked across a move. */
  files?: number;
  /** dbench clients on /data (the paper's I/O workload). */
  dbench?: number;
  /** An iperf3 server on this TCP port (the paper's network workload). */
  iperf3?: number;
  /** `xmig tunnel serve` in front of a TCP service on the guest's loopback (iperf3's, for the network workload over XIA). */
  tunnel?: GuestTunnel;
}

export interface GuestTunnel {
  /** The tunnel's key: its SID is the tunnel's address in the VM (name it in `names` for the agent to re-register it). */
  key: Identity;
  /** The service's TCP port on 127.0.0.1. */
  to: number;
}

/** The workloads a guest config can run, with the Debian package that has each program. */
export const WORKLOAD_PACKAGES = { dbench: 'dbench', iperf3: 'iperf3' } as const;
export type Workload = keyof typeof WORKLOAD_PACKAGES;

/** The file writer's count and dbench's clients are bounded: names are two digits, and a TCG guest runs few clients. */
export const MAX_GUEST_FILES = 64;
export const MAX_DBENCH_CLIENTS = 64;

/** The kernel's own words: console on the first serial port, our init, reboot (QEMU exits) on panic. */
export const KERNEL_WORDS: readonly string[] = ['console=ttyS0', 'quiet', 'panic=-1', 'rdinit=/init'];

/** x86's COMMAND_LINE_SIZE is 2048 bytes; stay well under it. */
export const MAX_COMMAND_LINE = 1536;

const NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;
const KEY = /^[A-Za-z0-9_-]{64}$/;
const HEX40 = /^[0-9a-f]{40}$/;
const LEVELS: readonly LogLevel[] = ['error', 'warn', 'info', 'debug'];

function bad(message: string): XmigError {
  return new XmigError('ERR_CONFIG', `guest config: ${message}`);
}

function checkName(what: string, name: string): string {
  if (!NAME.test(name)) throw bad(`${what} "${name}" must be 1-63 letters, digits, "_", "." or "-", starting with a letter or digit`);
  return name;
}

function checkPort(what: string, port: number): number {
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw bad(`${what} ${port} is not a port (1-65535)`);
  return port;
}

function checkIpv4Cidr(text: string): string {
  const [address, length, ...rest] = text.split('/');
  const bits = Number(length);
  if (rest.length > 0 || !address || !isIPv4(address) || !/^\d{1,2}$/.test(length ?? '') || bits < 1 || bits > 32) {
    throw bad(`ipv4 "${text}" is not ADDR/LEN (e.g. 10.1.0.10/24)`);
  }
  return text;
}

function checkCount(what: string, value: number, max: number): number {
  if (!Number.isInteger(value) || value < 1 || value > max) throw bad(`${what} ${value} is not 1-${max}`);
  return value;
}

/** The workloads `config` runs that need a program from the image. */
export function configWorkloads(config: GuestConfig): Workload[] {
  const wanted: Workload[] = [];
  if (config.dbench !== undefined) wanted.push('dbench');
  if (config.iperf3 !== undefined) wanted.push('iperf3');
  return wanted;
}

/**
 * Refuses (ERR_CONFIG, one line naming the Debian package) a config asking for a workload
 * the image lacks: the image holds dbench and iperf3 only if the host that built it had them.
 */
export function checkWorkloads(image: { workloads?: readonly string[] }, config: GuestConfig): void {
  const have = new Set(image.workloads ?? []);
  const missing = configWorkloads(config).filter((w) => !have.has(w));
  if (missing.length > 0) {
    const packages = missing.map((w) => WORKLOAD_PACKAGES[w]).join(' ');
    throw bad(`${missing.join(' and ')} asked for, but the lab image has no ${missing.join(' or ')}: apt-get install ${packages} on the host, then rebuild the image (xmig lab image)`);
  }
}

function encodeKey(identity: Identity): string {
  return identity.toPkcs8().toString('base64url');
}

function decodeKey(what: string, text: string): Identity {
  if (!KEY.test(text)) throw bad(`${what} must be 64 base64url characters (Ed25519 PKCS#8 DER)`);
  try {
    return Identity.fromPkcs8(Buffer.from(text, 'base64url'));
  } catch (error) {
    throw bad(`${what} is not an Ed25519 key: ${(error as Error).message}`);
  }
}

/** The names the agent registers: given, or the Goldbach service's name for its SID. */
export function guestNames(config: GuestConfig): GuestName[] {
  if (config.names) return config.names;
  const cal = config.goldbach;
  return cal?.name ? [{ name: cal.name, sid: cal.key.xid(XidType.SID) }] : [];
}

/** The `-append` line for this VM; refuses (ERR_CONFIG) a value the guest's init could misread. */
export function guestCommandLine(config: GuestConfig): string {
  const words = [...KERNEL_WORDS, `xmig.name=${checkName('name', config.name)}`, `xmig.key=${encodeKey(config.key)}`];
  const add = (word: string, value: string | number | undefined): void => {
    if (value !== undefined) words.push(`xmig.${word}=${value}`);
  };
  add('port', config.port === undefined ? undefined : checkPort('port', config.port));
  if (config.group !== undefined && !(isIPv6(config.group) && /^ff02:/i.test(config.group))) {
    throw bad(`group "${config.group}" is not a link-local scope IPv6 multicast group (ff02::...)`);
  }
  add('group', config.group);
  if (config.mtu !== undefined && !(Number.isInteger(config.mtu) && config.mtu >= 1280 && config.mtu <= 65535)) {
    throw bad(`mtu ${config.mtu} is not 1280-65535 (IPv6 needs 1280)`);
  }
  add('mtu', config.mtu);
  if (config.logLevel !== undefined && !LEVELS.includes(config.logLevel)) throw bad(`log level "${String(config.logLevel)}" is not one of ${LEVELS.join(', ')}`);
  add('log', config.logLevel);
  if (config.trustedAds?.length) {
    for (const ad of config.trustedAds) if (ad.type !== XidType.AD) throw bad(`trusted AD ${ad.toString()} is not an AD`);
    add('trust', config.trustedAds.map((ad) => ad.id.toString('hex')).join(','));
  }
  const cal = config.goldbach;
  if (cal) {
    add('calkey', encodeKey(cal.key));
    add('calname', cal.name === undefined ? undefined : checkName('goldbach name', cal.name));
    add('caltcp', cal.tcpPort === undefined ? undefined : checkPort('goldbach TCP port', cal.tcpPort));
  }
  const names = guestNames(config);
  if (names.length > 0) {
    add(
      'names',
      names
        .map((n) => {
          if (n.sid && n.sid.type !== XidType.SID) throw bad(`name ${n.name}: ${n.sid.toString()} is not a SID`);
          return n.sid ? `${checkName('name', n.name)}@${n.sid.id.toString('hex')}` : checkName('name', n.name);
        })
        .join(','),
    );
  }
  add('ipv4', config.ipv4 === undefined ? undefined : checkIpv4Cidr(config.ipv4));
  if (config.gateway4 !== undefined && !isIPv4(config.gateway4)) throw bad(`gw4 "${config.gateway4}" is not an IPv4 address`);
  add('gw4', config.gateway4);
  add('metrics', config.nodeMetricsPort === undefined ? undefined : checkPort('node metrics port', config.nodeMetricsPort));
  add('agentmetrics', config.agentMetricsPort === undefined ? undefined : checkPort('agent metrics port', config.agentMetricsPort));
  add('control', config.controlPort === undefined ? undefined : checkPort('control port', config.controlPort));
  add('files', config.files === undefined ? undefined : checkCount('files', config.files, MAX_GUEST_FILES));
  add('dbench', config.dbench === undefined ? undefined : checkCount('dbench clients', config.dbench, MAX_DBENCH_CLIENTS));
  add('iperf3', config.iperf3 === undefined ? undefined : checkPort('iperf3 port', config.iperf3));
  if (config.tunnel) {
    add('tunnelkey', encodeKey(config.tunnel.key));
    add('tunnelto', checkPort('tunnel service port', config.tunnel.to));
  }
  const line = words.join(' ');
  if (line.length > MAX_COMMAND_LINE) throw bad(`the kernel command line would be ${line.length} bytes (at most ${MAX_COMMAND_LINE})`);
  return line;
}

/** A guest config with every default filled in, as the guest's init applies them. */
export interface ResolvedGuestConfig extends Required<Omit<GuestConfig, 'goldbach' | 'ipv4' | 'gateway4' | 'controlPort' | 'files' | 'dbench' | 'iperf3' | 'tunnel'>> {
  controlPort?: number;
  tunnel?: GuestTunnel;
  files?: number;
  dbench?: number;
  iperf3?: number;
  goldbach?: GuestGoldbach;
  ipv4?: string;
  gateway4?: string;
}

export function resolveGuestConfig(config: GuestConfig): ResolvedGuestConfig {
  return {
    ...config,
    port: config.port ?? XIANET_PORT,
    group: config.group ?? XIANET_GROUP,
    mtu: config.mtu ?? LAB_MTU,
    logLevel: config.logLevel ?? 'info',
    trustedAds: config.trustedAds ?? [],
    names: guestNames(config),
    nodeMetricsPort: config.nodeMetricsPort ?? GUEST_NODE_METRICS_PORT,
    agentMetricsPort: config.agentMetricsPort ?? GUEST_AGENT_METRICS_PORT,
  };
}

/**
 * Reads the `xmig.*` words of a kernel command line back into a config (other words are
 * the kernel's and ignored). Refuses, with ERR_CONFIG, what `guestCommandLine` would not write.
 */
export function parseGuestCommandLine(line: string): GuestConfig {
  const words = new Map<string, string>();
  for (const word of line.trim().split(/\s+/)) {
    const match = /^xmig\.([a-z0-9]+)=(.*)$/.exec(word);
    if (!match) continue;
    if (words.has(match[1]!)) throw bad(`xmig.${match[1]} appears twice`);
    words.set(match[1]!, match[2]!);
  }
  const known = new Set(['name', 'key', 'port', 'group', 'mtu', 'log', 'trust', 'calkey', 'calname', 'caltcp', 'names', 'ipv4', 'gw4', 'metrics', 'agentmetrics', 'control', 'files', 'dbench', 'iperf3', 'tunnelkey', 'tunnelto']);
  for (const word of words.keys()) if (!known.has(word)) throw bad(`unknown word xmig.${word}`);
  const name = words.get('name');
  const key = words.get('key');
  if (name === undefined || key === undefined) throw bad('xmig.name and xmig.key are required');
  const int = (word: string): number | undefined => {
    const text = words.get(word);
    if (text === undefined) return undefined;
    // No leading zeros: the guest's shell arithmetic would read 010 as octal.
    if (!/^(0|[1-9]\d{0,4})$/.test(text)) throw bad(`xmig.${word}=${text} is not a number`);
    return Number(text);
  };
  const hex = (what: string, text: string): Buffer => {
    if (!HEX40.test(text)) throw bad(`${what} "${text}" is not 40 lower-case hex digits`);
    return Buffer.from(text, 'hex');
  };
  const config: GuestConfig = { name, key: decodeKey('xmig.key', key) };
  const port = int('port');
  if (port !== undefined) config.port = port;
  const group = words.get('group');
  if (group !== undefined) config.group = group;
  const mtu = int('mtu');
  if (mtu !== undefined) config.mtu = mtu;
  const log = words.get('log');
  if (log !== undefined) config.logLevel = log as LogLevel;
  const trust = words.get('trust');
  if (trust !== undefined) config.trustedAds = trust.split(',').map((t) => Xid.of(XidType.AD, hex('trusted AD', t)));
  const calKey = words.get('calkey');
  if (calKey !== undefined) {
    config.goldbach = { key: decodeKey('xmig.calkey', calKey) };
    const calName = words.get('calname');
    if (calName !== undefined) config.goldbach.name = calName;
    const tcp = int('caltcp');
    if (tcp !== undefined) config.goldbach.tcpPort = tcp;
  } else if (words.has('calname') || words.has('caltcp')) {
    throw bad('xmig.calname and xmig.caltcp need xmig.calkey');
  }
  const names = words.get('names');
  if (names !== undefined) {
    config.names = names.split(',').map((entry) => {
      const [n, sid, ...rest] = entry.split('@');
      if (rest.length > 0 || !n) throw bad(`xmig.names entry "${entry}" is not name or name@HEX`);
      return sid === undefined ? { name: n } : { name: n, sid: Xid.of(XidType.SID, hex(`name ${n}'s SID`, sid)) };
    });
  }
  const ipv4 = words.get('ipv4');
  if (ipv4 !== undefined) config.ipv4 = ipv4;
  const gw4 = words.get('gw4');
  if (gw4 !== undefined) config.gateway4 = gw4;
  const metrics = int('metrics');
  if (metrics !== undefined) config.nodeMetricsPort = metrics;
  const agentMetrics = int('agentmetrics');
  if (agentMetrics !== undefined) config.agentMetricsPort = agentMetrics;
  const control = int('control');
  if (control !== undefined) config.controlPort = control;
  const files = int('files');
  if (files !== undefined) config.files = files;
  const dbench = int('dbench');
  if (dbench !== undefined) config.dbench = dbench;
  const iperf3 = int('iperf3');
  if (iperf3 !== undefined) config.iperf3 = iperf3;
  const tunnelKey = words.get('tunnelkey');
  const tunnelTo = int('tunnelto');
  if ((tunnelKey === undefined) !== (tunnelTo === undefined)) throw bad('xmig.tunnelkey and xmig.tunnelto go together');
  if (tunnelKey !== undefined) config.tunnel = { key: decodeKey('xmig.tunnelkey', tunnelKey), to: tunnelTo! };
  // Everything read goes through the builder's checks once more.
  guestCommandLine(config);
  return config;
}
