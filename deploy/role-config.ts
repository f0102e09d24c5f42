/**
 * What one machine of a deployment runs, by role, and the config files that say so:
 *
 *   router      `xmig node` (role router, the mobility plugin in its process), AD key
 *   hypervisor  `xmig node` (role host); QEMU starts `xmig send` / `xmig recv` itself
 *   vm          `xmig node` (role host) and `xmig agent`
 *
 * With a topology (xianet/topology.ts) and the machine's name in it, the node's
 * interfaces and peers come from xianet/udp-topology.ts, as for the multi-process tests,
 * with every node on its own address (`addresses`) and the same UDP port per interface.
 * Without one, the machine joins one LAN segment through a multicast group: nothing to
 * list, every xmig node on the link hears the others.
 */
import { join } from 'node:path';
import type { AgentConfig } from '../agent/agent-config.js';
import { XmigError } from '../shared/errors.js';
import type { NodeConfig } from '../xianet/node-config.js';
import type { Topology } from '../xianet/topology.js';
import { udpLayout } from '../xianet/udp-topology.js';

export type Role = 'router' | 'hypervisor' | 'vm';
export const ROLES: readonly Role[] = ['router', 'hypervisor', 'vm'];

/** Where an installed xmig keeps things (the package's and the units' paths). */
export const INSTALL = {
  configDir: '/etc/xmig',
  stateDir: '/var/lib/xmig',
  runtimeDir: '/run/xmig',
  apiSocket: '/run/xmig/node.sock',
  nodeKey: '/var/lib/xmig/node.key',
  adKey: '/var/lib/xmig/ad.key',
  agentState: '/var/lib/xmig/agent.json',
  names: '/var/lib/xmig/names.log',
  /**
   * The node's Click-compatible control port, a Unix socket (0660, group xmig: the agent
   * and a separate router plugin, both user xmig, write routes through it).
   */
  controlSocket: '/run/xmig/control.sock',
  /** /metrics of each daemon, on loopback (scrape through a reverse proxy or change host). */
  metricsPort: { node: 9560, agent: 9561, 'router-plugin': 9562, nameserver: 9563 },
  /** Without a topology: the LAN segment's multicast group and the UDP port of every interface. */
  segmentGroup: '239.255.88.1',
  udpPort: 7000,
} as const;

/** The units a role enables (in start order). */
export const ROLE_UNITS: Record<Role, readonly string[]> = {
  router: ['xmig-node.service'],
  hypervisor: ['xmig-node.service'],
  vm: ['xmig-node.service', 'xmig-agent.service'],
};

export interface RoleConfigOptions {
  role: Role;
  /** The node's name (its Click element prefix on the control port); default: from the topology, or the role. */
  name?: string;
  /** A topology and this machine's node in it. */
  topology?: Topology;
  node?: string;
  /** Per node of the topology, the address its interfaces bind and peers reach it at. */
  addresses?: Record<string, string>;
  /** UDP port of interface 0 (interface i uses port + i). */
  port?: number;
  /** Routers: the name server's DAG to announce in beacons. */
  nameServer?: string;
  /** Also run the name server here. */
  withNameServer?: boolean;
}

export interface ConfigFile {
  path: string;
  content: string;
  /** Read by the daemons (group xmig), written by root only. */
  mode: number;
}

export interface RoleConfig {
  node: NodeConfig;
  agent?: AgentConfig;
  files: ConfigFile[];
  units: string[];
}

function nodeFromTopology(options: RoleConfigOptions): NodeConfig {
  const topology = options.topology!;
  const name = options.node;
  if (!name) throw new XmigError('ERR_USAGE', 'with --topology, name this machine with --node');
  const entry = topology.nodes.find((n) => n.name === name);
  if (!entry) throw new XmigError('ERR_USAGE', `node "${name}" is not in topology ${topology.name} (${topology.nodes.map((n) => n.name).join(', ')})`);
  const wanted = options.role === 'router' ? 'router' : 'host';
  if (entry.role !== wanted) {
    throw new XmigError('ERR_USAGE', `node "${name}" is a ${entry.role} in the topology; role ${options.role} runs a ${wanted}`);
  }
  const missing = topology.nodes.filter((n) => !options.addresses?.[n.name]).map((n) => n.name);
  if (missing.length > 0) {
    throw new XmigError('ERR_USAGE', `give every node's address (--address NODE=IP): missing ${missing.join(', ')}`);
  }
  const layout = udpLayout(topology, { dir: INSTALL.stateDir, basePort: options.port ?? INSTALL.udpPort, addresses: options.addresses });
  const config = layout.configs.get(name)!;
  return {
    ...config,
    keyFile: INSTALL.nodeKey,
    adKeyFile: entry.role === 'router' ? INSTALL.adKey : undefined,
    // Real links: the interface's MTU is read from the system (udp-link.ts).
    interfaces: config.interfaces.map(({ mtu: _mtu, ...iface }) => iface) as NodeConfig['interfaces'],
    controlPort: { path: INSTALL.controlSocket, mode: 0o660, readOnly: false },
    apiSocket: INSTALL.apiSocket,
  };
}

function standaloneNode(options: RoleConfigOptions): NodeConfig {
  const router = options.role === 'router';
  return {
    name: options.name ?? (router ? 'R1' : options.role === 'vm' ? 'VM' : 'H1'),
    role: router ? 'router' : 'host',
    keyFile: INSTALL.nodeKey,
    adKeyFile: router ? INSTALL.adKey : undefined,
    trustedAds: [],
    acceptUnsignedBeacons: false,
    beaconIntervalMs: 100,
    helloIntervalMs: 1000,
    interfaces: [
      {
        name: 'lan',
        bind: '0.0.0.0',
        port: options.port ?? INSTALL.udpPort,
        peers: [],
        multicastGroup: INSTALL.segmentGroup,
        hostFacing: router,
      } as NodeConfig['interfaces'][number],
    ],
    routes: [],
    controlPort: { path: INSTALL.controlSocket, mode: 0o660, readOnly: false },
    apiSocket: INSTALL.apiSocket,
    plugins: [],
    logLevel: 'info',
  };
}

/** The configs of one machine of the deployment, and the files and units that install them. */
export function roleConfig(options: RoleConfigOptions): RoleConfig {
  const base = options.topology ? nodeFromTopology(options) : standaloneNode(options);
  const node: NodeConfig = {
    ...base,
    name: options.name ?? base.name,
    nameServer: options.role === 'router' ? options.nameServer : undefined,
    plugins: options.role === 'router' ? ['mobility'] : [],
    metrics: { host: '127.0.0.1', port: INSTALL.metricsPort.node },
  };
  if (node.nameServer === undefined) delete node.nameServer;
  if (node.adKeyFile === undefined) delete node.adKeyFile;
  const files: ConfigFile[] = [{ path: join(INSTALL.configDir, 'node.json'), content: `${JSON.stringify(node, null, 2)}\n`, mode: 0o640 }];
  const units = [...ROLE_UNITS[options.role]];
  let agent: AgentConfig | undefined;
  if (options.role === 'vm') {
    agent = {
      api: INSTALL.apiSocket,
      control: INSTALL.controlSocket,
      router: node.name,
      keyFile: INSTALL.nodeKey,
      stateFile: INSTALL.agentState,
      names: [],
      resume: { tickMs: 50, stallMs: 300 },
      schedules: { refresh: '*/5 * * * *', reannounce: '*/10 * * * *', health: '* * * * *' },
      metrics: { host: '127.0.0.1', port: INSTALL.metricsPort.agent },
      logLevel: 'info',
    };
    files.push({ path: join(INSTALL.configDir, 'agent.json'), content: `${JSON.stringify(agent, null, 2)}\n`, mode: 0o640 });
  }
  if (options.role === 'router') {
    // For xmig-router-plugin.service: the plugin as a process of its own, beside an xia-core
    // Click router (an xmig node router runs it in-process, as node.json says).
    files.push({
      path: join(INSTALL.configDir, 'router-plugin.env'),
      content: [
        '# xmig-router-plugin.service: the router whose routes the plugin rewrites (a Click',
        '# ControlSocket: an xmig node or xia-core), and that router\'s name on it.',
        `XMIG_CONTROL=${INSTALL.controlSocket}`,
        `XMIG_ROUTER=${node.name}`,
        '',
      ].join('\n'),
      mode: 0o640,
    });
  }
  if (options.withNameServer) units.push('xmig-nameserver.service');
  return { node, agent, files, units };
}

/** Parses `NODE=ADDRESS` pairs (`--address R1=10.0.0.1`). */
export function parseAddresses(pairs: readonly string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const pair of pairs) {
    const at = pair.indexOf('=');
    if (at <= 0 || at === pair.length - 1) throw new XmigError('ERR_USAGE', `--address takes NODE=ADDRESS, got "${pair}"`);
    out[pair.slice(0, at)] = pair.slice(at + 1);
  }
  return out;
}
