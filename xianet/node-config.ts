/**
 * The config file of `xmig node`: who the node is, its interfaces (UDP), static
 * routes, and where its control port, application socket and metrics listen.
 */
import { listenPort, nameText, parsedBy, pathText, portNumber, timerMs, z } from '../shared/config.js';
import { Dag } from '../shared/dag.js';
import { Xid } from '../shared/xid.js';
import { DEFAULT_CONTROL_SOCKET, isLoopbackHost, type ControlLimits, type ControlListen } from './click-control-port.js';
import { impairmentSchema } from './link-impairment.js';

export const xidText = z.string().max(64).refine(
  parsedBy((text) => Xid.parse(text)),
  { message: 'not an XID (TYPE:40-hex)' },
);

export const dagText = z.string().max(8192).refine(
  parsedBy((text) => Dag.parse(text)),
  { message: 'not a DAG ("RE ..." or "DAG ...")' },
);

const socketAddress = z
  .string()
  .max(300)
  .regex(/^(\[[^\]]+\]|[^:[\]\s]+):\d{1,5}$/, 'expected host:port or [v6addr]:port')
  .refine((text) => {
    const port = Number(text.slice(text.lastIndexOf(':') + 1));
    return port >= 1 && port <= 65535;
  }, 'the port must be 1..65535');

/** A host name or address (to bind or listen on). */
const hostText = z.string().min(1).max(255).regex(/^[^\s\0]+$/, 'a host name or address, no spaces');

export const interfaceSchema = z.strictObject({
  name: nameText,
  /** Local address to bind. */
  bind: hostText.default('127.0.0.1'),
  port: portNumber,
  /** The other members of this segment (broadcast = a copy to each). */
  peers: z.array(socketAddress).max(1024).default([]),
  /** Or a multicast group standing for the segment. */
  multicastGroup: hostText.optional(),
  multicastInterface: hostText.optional(),
  hostFacing: z.boolean().default(false),
  /**
   * The interface's IP MTU (1500 on Ethernet). Default: read from the system; the
   * smaller wins when both are known. Datagrams never exceed it (no IP fragmentation).
   */
  mtu: z.number().int().min(576).max(65536).optional(),
  /** Link impairment on what this interface sends (tests, benchmarks, the lab): see link-impairment.ts. */
  impairment: impairmentSchema.optional(),
  /**
   * The socket's kernel buffers, each way (default 16 MiB): what a long path has in
   * flight toward this host while it pauses. Past net.core.rmem_max only with
   * CAP_NET_ADMIN (udp-link.ts sizeBuffers); `node.ready` says what the kernel gave.
   */
  socketBufferBytes: z.number().int().min(64 * 1024).max(1024 * 1024 * 1024).optional(),
});

/** An interface's socket buffers when its config does not say (see socketBufferBytes). */
export const DEFAULT_SOCKET_BUFFER_BYTES = 16 * 1024 * 1024;

export const staticRouteSchema = z.strictObject({
  type: z.enum(['AD', 'HID', 'SID', 'CID', 'IP']),
  /** The XID, or "-" for the default route. */
  xid: z.union([xidText, z.literal('-')]),
  /** An interface index, or a special port (-1 discard, -2 local, -4 broadcast, -7 fallback). */
  port: z.number().int().min(-7).max(65535),
  nextHop: xidText.optional(),
  /** Click's flags: a 32-bit word. */
  flags: z.number().int().min(0).max(0xffff_ffff).default(0),
});

/** Socket file modes as JSON allows: "0660" / "660", or a number (432 = 0o660). */
const modeSchema = z
  .union([z.string().regex(/^0?[0-7]{3}$/, 'an octal mode such as "0660"'), z.number().int().min(0).max(0o777)])
  .transform((mode) => (typeof mode === 'string' ? Number.parseInt(mode, 8) : mode))
  .refine((mode) => (mode & 0o007) === 0, 'the mode must give others nothing (connecting needs write permission: o+w lets every local user write routes)');

const groupSchema = z.union([z.string().min(1).max(64).regex(/^[^\s:\0]+$/, 'a group name'), z.number().int().min(0).max(0xffff_ffff)]);

/** Byte limits: a JS string or Buffer past 2 GiB is not a limit but a crash. */
const MAX_BYTES = 2 ** 31 - 1;

const controlLimitsSchema = z
  .object({
    maxConnections: z.number().int().min(1).max(65_536),
    idleTimeoutMs: timerMs(10),
    commandTimeoutMs: timerMs(10),
    maxLineBytes: z.number().int().min(256).max(MAX_BYTES),
    maxDataBytes: z.number().int().min(256).max(MAX_BYTES),
    maxBufferedBytes: z.number().int().min(4096).max(MAX_BYTES),
    maxOutputBytes: z.number().int().min(4096).max(MAX_BYTES),
  })
  .partial()
  .strict();

/**
 * The control port: a Unix socket (`path`, default /run/xmig/control.sock, `mode` 0660,
 * `group`), or TCP on loopback only (`host`, `port`; writes after `auth` with the
 * contents of `tokenFile`, read-only without one). See click-control-port.ts.
 */
export const controlPortSchema = z
  .object({
    path: pathText.optional(),
    mode: modeSchema.optional(),
    group: groupSchema.optional(),
    readOnly: z.boolean().optional(),
    host: hostText.optional(),
    port: listenPort.optional(),
    tokenFile: pathText.optional(),
    limits: controlLimitsSchema.optional(),
  })
  .strict()
  .superRefine((value, context) => {
    const tcp = value.port !== undefined || value.host !== undefined || value.tokenFile !== undefined;
    if (!tcp) return;
    if (value.port === undefined) context.addIssue({ code: 'custom', path: ['port'], message: 'a TCP control port needs "port" (or give "path" for a Unix socket)' });
    if (value.path !== undefined) context.addIssue({ code: 'custom', path: ['path'], message: 'either "path" (a Unix socket) or "host"/"port" (TCP), not both' });
    if (value.mode !== undefined) context.addIssue({ code: 'custom', path: ['mode'], message: '"mode" is for a Unix socket' });
    if (value.readOnly !== undefined) context.addIssue({ code: 'custom', path: ['readOnly'], message: 'TCP is read-only unless "tokenFile" is given' });
    const host = value.host ?? '127.0.0.1';
    if (!isLoopbackHost(host)) {
      context.addIssue({
        code: 'custom',
        path: ['host'],
        message: `"${host}" is not a loopback address: on TCP the control port listens on loopback only (127.0.0.1, ::1); give a Unix socket a group to let other users in`,
      });
    }
  })
  .transform((value): ControlPortConfig => {
    const common = { ...(value.group !== undefined && { group: value.group }), ...(value.limits && { limits: value.limits }) };
    if (value.port === undefined) return { path: value.path ?? DEFAULT_CONTROL_SOCKET, mode: value.mode ?? 0o660, readOnly: value.readOnly ?? false, ...common };
    return { host: value.host ?? '127.0.0.1', port: value.port, ...(value.tokenFile && { tokenFile: value.tokenFile }), ...common };
  });

export type ControlPortConfig = ControlListen & { limits?: Partial<ControlLimits> };

export const nodeConfigSchema = z.strictObject({
  name: nameText,
  role: z.enum(['router', 'host']),
  /** The node's key (HID = SHA-1 of its public key); created if missing. */
  keyFile: pathText,
  /** Routers: the AD's key (AD = SHA-1 of its public key). */
  adKeyFile: pathText.optional(),
  /** Hosts: believe beacons from these ADs only. */
  trustedAds: z.array(xidText).max(1024).default([]),
  acceptUnsignedBeacons: z.boolean().default(false),
  beaconIntervalMs: z.number().int().min(5).max(60_000).default(100),
  helloIntervalMs: z.number().int().min(10).max(60_000).default(1000),
  /** Routers: how long a registered host's link address outlasts its last registration (default 60 s; see XrouteServiceOptions). */
  registeredHostMs: z.number().int().min(1000).max(86_400_000).optional(),
  /** Routers: the name server's DAG, announced in beacons. */
  nameServer: dagText.optional(),
  interfaces: z.array(interfaceSchema).min(1).max(64),
  routes: z.array(staticRouteSchema).max(10_000).default([]),
  /** Click ControlSocket-compatible control port (none if absent; `{}` is the Unix socket at its default path). */
  controlPort: controlPortSchema.optional(),
  /** Unix socket of the application API. */
  apiSocket: pathText.optional(),
  metrics: z.strictObject({ host: hostText.default('127.0.0.1'), port: listenPort }).optional(),
  /** Mobility plugin inside the node process (routers). */
  plugins: z.array(z.enum(['mobility'])).max(8).default([]),
  logLevel: z.enum(['error', 'warn', 'info', 'debug']).default('info'),
  /**
   * Freed memory the allocator keeps rather than give back to the kernel and fault in
   * again (glibc's trim threshold, process-wide; xianet/allocator.ts). Default 64 MiB
   * (DEFAULT_KEEP_FREED_MEMORY_BYTES); 0: glibc's own (128 KiB).
   */
  keepFreedMemoryBytes: z.number().int().min(0).max(1024 * 1024 * 1024).optional(),
});

export type NodeConfig = z.output<typeof nodeConfigSchema>;
export type InterfaceConfig = z.output<typeof interfaceSchema>;
