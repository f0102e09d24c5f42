/**
 * Turns a topology into one `xmig node` config per node, on UDP: each interface
 * gets its own address:port, and its peers are the other interfaces on the same
 * segment. With `addresses` per node (network namespaces) every node binds the
 * same port on its own address; on loopback they share 127.0.0.1 and differ by port.
 */
import { join } from 'node:path';
import { impairmentSchema, type ImpairmentConfig } from './link-impairment.js';
import type { NodeConfig } from './node-config.js';
import type { Topology } from './topology.js';

export interface UdpLayoutOptions {
  /** Directory for keys and sockets. */
  dir: string;
  /** First UDP port on loopback (default 17000). */
  basePort?: number;
  /** Per node, the address its interfaces bind (default 127.0.0.1 for all, one port each). */
  addresses?: Record<string, string>;
  beaconIntervalMs?: number;
  helloIntervalMs?: number;
  /** Control ports on TCP loopback from this port, one per node (read-only: TCP writes need a token); default a Unix socket per node in `dir`. */
  controlBasePort?: number;
  logLevel?: NodeConfig['logLevel'];
  /** /metrics on loopback from this port, one per node (default: none). */
  metricsBasePort?: number;
  /** Every interface's IP MTU (default: what the system says of the bind address's interface). */
  mtu?: number;
  /** Per segment, link impairment on each interface attached to it (over the topology's own). */
  impairments?: Record<string, ImpairmentConfig>;
}

export interface UdpLayout {
  configs: Map<string, NodeConfig>;
  /** AD name -> its key file. */
  adKeyFiles: Map<string, string>;
}

export function udpLayout(topology: Topology, options: UdpLayoutOptions): UdpLayout {
  const basePort = options.basePort ?? 17000;
  const controlBase = options.controlBasePort;
  const shared = options.addresses !== undefined;
  const endpoint = new Map<string, { host: string; port: number }>();
  let next = basePort;
  for (const node of topology.nodes) {
    node.interfaces.forEach((_, port) => {
      const host = options.addresses?.[node.name] ?? '127.0.0.1';
      endpoint.set(`${node.name}/${port}`, { host, port: shared ? basePort + port : next++ });
    });
  }
  const members = new Map<string, string[]>();
  for (const node of topology.nodes) {
    node.interfaces.forEach((iface, port) => {
      const list = members.get(iface.segment) ?? [];
      list.push(`${node.name}/${port}`);
      members.set(iface.segment, list);
    });
  }
  const adKeyFiles = new Map(topology.ads.map((ad) => [ad, join(options.dir, `${ad}.ad.key`)]));
  const configs = new Map<string, NodeConfig>();
  topology.nodes.forEach((node, index) => {
    configs.set(node.name, {
      name: node.name,
      role: node.role,
      keyFile: join(options.dir, `${node.name}.key`),
      adKeyFile: node.ad ? adKeyFiles.get(node.ad) : undefined,
      trustedAds: [],
      acceptUnsignedBeacons: false,
      beaconIntervalMs: options.beaconIntervalMs ?? 100,
      helloIntervalMs: options.helloIntervalMs ?? 1000,
      interfaces: node.interfaces.map((iface, port) => {
        const self = endpoint.get(`${node.name}/${port}`)!;
        const peers = members
          .get(iface.segment)!
          .filter((m) => m !== `${node.name}/${port}`)
          .map((m) => {
            const peer = endpoint.get(m)!;
            return `${peer.host}:${peer.port}`;
          });
        return {
          name: `${iface.segment}`,
          bind: self.host,
          port: self.port,
          peers,
          hostFacing: iface.hostFacing,
          mtu: options.mtu,
          impairment: impairmentOf(options.impairments?.[iface.segment] ?? topology.impairments[iface.segment]),
        };
      }),
      routes: [],
      controlPort:
        controlBase === undefined
          ? { path: join(options.dir, `${node.name}.ctl`), mode: 0o660, readOnly: false }
          : { host: '127.0.0.1', port: controlBase + index },
      apiSocket: join(options.dir, `${node.name}.sock`),
      metrics: options.metricsBasePort === undefined ? undefined : { host: '127.0.0.1', port: options.metricsBasePort + index },
      plugins: [],
      logLevel: options.logLevel ?? 'info',
    });
  });
  return { configs, adKeyFiles };
}

function impairmentOf(config: ImpairmentConfig | undefined): NodeConfig['interfaces'][number]['impairment'] {
  return config === undefined ? undefined : impairmentSchema.parse(config);
}
