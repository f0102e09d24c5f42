/**
 * The config file of `xmig node`: who the node is, its interfaces (UDP), static
 * routes, and where its control port, application socket and metrics listen.
 */
import { z } from '../shared/config.js';
import { Dag } from '../shared/dag.js';
import { Xid } from '../shared/xid.js';
import { impairmentSchema } from './link-impairment.js';

const xidText = z.string().refine(
  (text) => {
    try {
      Xid.parse(text);
      return true;
    } catch {
      return false;
    }
  },
  { message: 'not an XID (TYPE:40-hex)' },
);

const dagText = z.string().refine(
  (text) => {
    try {
      Dag.parse(text);
      return true;
    } catch {
      return false;
    }
  },
  { message: 'not a DAG ("RE ..." or "DAG ...")' },
);

const socketAddress = z.string().regex(/^(\[[^\]]+\]|[^:[\]]+):\d{1,5}$/, 'expected host:port or [v6addr]:port');

export const interfaceSchema = z.object({
  name: z.string().min(1),
  /** Local address to bind. */
  bind: z.string().default('127.0.0.1'),
  port: z.number().int().min(0).max(65535),
  /** The other members of this segment (broadcast = a copy to each). */
  peers: z.array(socketAddress).default([]),
  /** Or a multicast group standing for the segment. */
  multicastGroup: z.string().optional(),
  multicastInterface: z.string().optional(),
  hostFacing: z.boolean().default(false),
  /**
   * The interface's IP MTU (1500 on Ethernet). Default: read from the system; the
   * smaller wins when both are known. Datagrams never exceed it (no IP fragmentation).
   */
  mtu: z.number().int().min(576).max(65536).optional(),
  /** Link impairment on what this interface sends (tests, benchmarks, the lab): see link-impairment.ts. */
  impairment: impairmentSchema.optional(),
});

export const staticRouteSchema = z.object({
  type: z.enum(['AD', 'HID', 'SID', 'CID', 'IP']),
  /** The XID, or "-" for the default route. */
  xid: z.union([xidText, z.literal('-')]),
  port: z.number().int().min(-7),
  nextHop: xidText.optional(),
  flags: z.number().int().min(0).default(0),
});

const listenSchema = z.union([
  z.object({ host: z.string().default('127.0.0.1'), port: z.number().int().min(0).max(65535) }),
  z.object({ path: z.string().min(1) }),
]);

export const nodeConfigSchema = z.object({
  name: z.string().min(1).regex(/^[A-Za-z0-9_.-]+$/, 'letters, digits, "_", "." and "-" only'),
  role: z.enum(['router', 'host']),
  /** The node's key (HID = SHA-1 of its public key); created if missing. */
  keyFile: z.string().min(1),
  /** Routers: the AD's key (AD = SHA-1 of its public key). */
  adKeyFile: z.string().optional(),
  /** Hosts: believe beacons from these ADs only. */
  trustedAds: z.array(xidText).default([]),
  acceptUnsignedBeacons: z.boolean().default(false),
  beaconIntervalMs: z.number().int().min(5).max(60_000).default(100),
  helloIntervalMs: z.number().int().min(10).max(60_000).default(1000),
  /** Routers: the name server's DAG, announced in beacons. */
  nameServer: dagText.optional(),
  interfaces: z.array(interfaceSchema).min(1),
  routes: z.array(staticRouteSchema).default([]),
  /** Click ControlSocket-compatible control port. */
  controlPort: listenSchema.optional(),
  /** Unix socket of the application API. */
  apiSocket: z.string().optional(),
  metrics: z.object({ host: z.string().default('127.0.0.1'), port: z.number().int().min(0).max(65535) }).optional(),
  /** Mobility plugin inside the node process (routers). */
  plugins: z.array(z.enum(['mobility'])).default([]),
  logLevel: z.enum(['error', 'warn', 'info', 'debug']).default('info'),
});

export type NodeConfig = z.output<typeof nodeConfigSchema>;
export type InterfaceConfig = z.output<typeof interfaceSchema>;
