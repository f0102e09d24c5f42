/**
 * The paper's Fig. 1 as namespaced hosts: which namespace is which physical machine,
 * which segment is a bridge in which of them, which veth cable joins what, and every
 * address (IPv6 link-local for xianet, IPv4 for the TCP/IP baseline). Pure data, made
 * from xianet's own topologies (xianet/topology.ts), so the lab and the in-process
 * testbed build the same networks.
 *
 * Physical layout (both topologies): hosts A, B and C each own their segment, a bridge
 * in their namespace (`brA`, `brB`, `brC`): the host's node binds the bridge, a router's
 * cable ends on it, and a VM's tap joins it, so the VM's packets leave from the host it
 * is on. Routers R1 and R2 are namespaces with one veth per segment. A segment with no
 * host (R1–R2) is a plain veth pair.
 *
 *   intra-ad (1a):  R1 ─ brA(A) , R1 ─ brB(B) , R1 ─ brC(C)             AD1
 *   inter-ad (1b):  R1 ─ brA(A) , R1 ─ brC(C) , R1 ─ R2 , R2 ─ brB(B)   AD1 | AD2
 *
 * The namespaces, the bridges and the VM are the same in both: changing topology only
 * re-plugs cables (lab/world.ts), as one would in a real lab.
 */
import { ConfigError, XmigError } from '../shared/errors.js';
import { INTER_AD, INTRA_AD, type Topology } from '../xianet/topology.js';

export type LabTopologyName = 'intra-ad' | 'inter-ad';
export const LAB_TOPOLOGIES: readonly LabTopologyName[] = ['intra-ad', 'inter-ad'];

/** Every physical machine of the lab (a namespace each), whatever the topology. */
export const LAB_HOSTS = ['R1', 'R2', 'A', 'B', 'C'] as const;
export type LabHost = (typeof LAB_HOSTS)[number];
/** The hosts a VM can live on (hypervisors), and the client host. */
export const HYPERVISORS = ['A', 'B'] as const;
export type Hypervisor = (typeof HYPERVISORS)[number];
export const CLIENT_HOST: LabHost = 'C';
export const NAME_SERVER_HOST: LabHost = 'A';

export function parseTopologyName(text: string): LabTopologyName {
  if ((LAB_TOPOLOGIES as readonly string[]).includes(text)) return text as LabTopologyName;
  throw new ConfigError(`unknown topology "${text}" (known: ${LAB_TOPOLOGIES.join(', ')})`);
}

export function xianetTopology(name: LabTopologyName): Topology {
  return name === 'intra-ad' ? INTRA_AD : INTER_AD;
}

/** The segment each host owns, and its bridge there. */
export function bridgeOf(host: LabHost): string {
  return `br${host}`;
}

/** A fixed, locally administered MAC per bridge: a bridge's MAC must not change as taps come and go. */
export function bridgeMac(host: LabHost): string {
  return `02:00:00:00:00:${(LAB_HOSTS.indexOf(host) + 1).toString(16).padStart(2, '0')}`;
}

/** One xianet interface of one host's node. */
export interface InterfacePlan {
  host: LabHost;
  /** The interface the node binds (a bridge for hosts, a veth for routers). */
  dev: string;
  segment: string;
  /** Its IPv6 link-local address (set by the lab, no DAD). */
  linkLocal: string;
  hostFacing: boolean;
}

/** A veth cable from `a` in one namespace to `b` in another; an end with `master` is plugged into that bridge. */
export interface CableEnd {
  host: LabHost;
  dev: string;
  master?: string;
}

export interface CablePlan {
  segment: string;
  a: CableEnd;
  b: CableEnd;
}

export interface WiringPlan {
  topology: LabTopologyName;
  /** AD of each router. */
  routerAds: Partial<Record<LabHost, string>>;
  /** AD each host (and the VM on it) is in. */
  adOf: Record<LabHost, string>;
  routers: LabHost[];
  interfaces: InterfacePlan[];
  cables: CablePlan[];
}

/** "R1" -> 1, "A" -> 0xa: the host's group in its link-local addresses (fe80::a:1 is A's first). */
function hostGroup(host: LabHost): string {
  return host.startsWith('R') ? host.slice(1) : host.toLowerCase();
}

function isLabHost(name: string): name is LabHost {
  return (LAB_HOSTS as readonly string[]).includes(name);
}

export function wiringPlan(name: LabTopologyName): WiringPlan {
  const topology = xianetTopology(name);
  const nodes = topology.nodes.filter((n) => n.name !== 'VM');
  for (const node of nodes) if (!isLabHost(node.name)) throw new XmigError('ERR_CONFIG', `topology ${name}: node ${node.name} is not a lab host`);
  const routers = nodes.filter((n) => n.role === 'router').map((n) => n.name as LabHost);
  /** Segment -> the host that owns it (its bridge), if any. */
  const owner = new Map<string, LabHost>();
  for (const node of nodes) {
    if (node.role !== 'host') continue;
    for (const iface of node.interfaces) owner.set(iface.segment, node.name as LabHost);
  }
  const interfaces: InterfacePlan[] = [];
  const cables: CablePlan[] = [];
  const routerAds: Partial<Record<LabHost, string>> = {};
  for (const node of nodes) {
    const host = node.name as LabHost;
    if (node.ad) routerAds[host] = node.ad;
    node.interfaces.forEach((iface, index) => {
      const segmentOwner = owner.get(iface.segment);
      let dev: string;
      if (node.role === 'host') {
        dev = bridgeOf(host);
      } else if (segmentOwner) {
        dev = `seg${segmentOwner}`;
        cables.push({ segment: iface.segment, a: { host, dev }, b: { host: segmentOwner, dev: `to${host}`, master: bridgeOf(segmentOwner) } });
      } else {
        // Router to router: the far end names the cable; one pair per segment.
        const far = nodes.find((n) => n.name !== node.name && n.interfaces.some((i) => i.segment === iface.segment));
        if (!far) throw new XmigError('ERR_CONFIG', `topology ${name}: segment ${iface.segment} has one member`);
        dev = `to${far.name}`;
        if (!cables.some((c) => c.segment === iface.segment)) cables.push({ segment: iface.segment, a: { host, dev }, b: { host: far.name as LabHost, dev: `to${host}` } });
      }
      interfaces.push({ host, dev, segment: iface.segment, linkLocal: `fe80::${hostGroup(host)}:${index + 1}`, hostFacing: iface.hostFacing });
    });
  }
  // A host is in the AD of the router on its segment.
  const adOf = {} as Record<LabHost, string>;
  for (const host of LAB_HOSTS) {
    const iface = interfaces.find((i) => i.host === host);
    if (!iface) continue;
    if (routerAds[host]) {
      adOf[host] = routerAds[host]!;
      continue;
    }
    const router = interfaces.find((i) => i.segment === iface.segment && routerAds[i.host]);
    if (router) adOf[host] = routerAds[router.host]!;
  }
  return { topology: name, routerAds, adOf, routers, interfaces, cables };
}

/** The TCP/IP baseline's two cases (Table 1's TCP/IP row). */
export type Ipv4Mode = 'intra-subnet' | 'inter-subnet';

/** The lab's IPv4 space: one /24 per segment. */
const SUBNET: Record<string, number> = { 'seg-A': 1, 'seg-B': 2, 'seg-C': 3, 'r1-r2': 9 };
const HOST_OCTET: Record<string, number> = { A: 10, B: 11, C: 12 };

/** The VM's fixed IPv4 address and gateway: on A's subnet, where it boots. */
export const VM_IPV4 = '10.77.1.100';
export const VM_IPV4_CIDR = `${VM_IPV4}/24`;
export const VM_GATEWAY4 = '10.77.1.1';
/** The Goldbach TCP listener in the VM. */
export const GOLDBACH_TCP_PORT = 4100;
/** Where a destination QEMU listens for QEMU's own tcp: migration. */
export const QEMU_TCP_PORT = 4444;
/** Full migration's TCP/IP baseline: xmig disk-target's control port and the NBD export on the destination. */
export const DISK_TARGET_TCP_PORT = 4445;
export const NBD_TCP_PORT = 10809;

export interface Ipv4Address {
  host: LabHost;
  dev: string;
  cidr: string;
}

export interface Ipv4Plan {
  mode: Ipv4Mode;
  addresses: Ipv4Address[];
  /** `ip route add` arguments per host. */
  routes: Array<{ host: LabHost; args: string[] }>;
  /** intra-subnet: a cable joining A's and B's segments into one L2 domain. */
  join?: CablePlan;
  /** Where each hypervisor's QEMU listens for a tcp: migration. */
  migrationAddress: Record<Hypervisor, string>;
}

/**
 * IPv4 on the same namespaces. inter-subnet: every segment its own /24 behind its router
 * (routers forward IPv4; R1 and R2 route to each other's segments), so a VM that lands on
 * B keeps an address of A's subnet that B's segment does not route. intra-subnet: A's and
 * B's segments joined by one more cable into one L2 domain and one subnet (B takes an
 * address in A's), so the VM's address is valid on both.
 */
export function ipv4Plan(wiring: WiringPlan, mode: Ipv4Mode): Ipv4Plan {
  const addresses: Ipv4Address[] = [];
  const routes: Ipv4Plan['routes'] = [];
  const subnetOf = (segment: string): number => {
    const subnet = SUBNET[segment];
    if (subnet === undefined) throw new XmigError('ERR_CONFIG', `no IPv4 subnet for segment ${segment}`);
    return mode === 'intra-subnet' && segment === 'seg-B' ? SUBNET['seg-A']! : subnet;
  };
  const routerAddress = new Map<string, string>();
  for (const iface of wiring.interfaces) {
    const subnet = subnetOf(iface.segment);
    if (wiring.routers.includes(iface.host)) {
      // One gateway per subnet: with A's and B's segments one subnet, R1's cable to B carries no IPv4.
      if (mode === 'intra-subnet' && iface.segment === 'seg-B' && wiring.interfaces.some((i) => i.host === iface.host && i.segment === 'seg-A')) continue;
      const octet = iface.segment === 'r1-r2' ? Number(iface.host.slice(1)) : 1;
      const address = `10.77.${subnet}.${octet}`;
      addresses.push({ host: iface.host, dev: iface.dev, cidr: `${address}/24` });
      if (iface.segment !== 'r1-r2') routerAddress.set(iface.segment, address);
    } else {
      addresses.push({ host: iface.host, dev: iface.dev, cidr: `10.77.${subnet}.${HOST_OCTET[iface.host]}/24` });
    }
  }
  for (const iface of wiring.interfaces) {
    if (wiring.routers.includes(iface.host)) continue;
    const gateway = routerAddress.get(iface.segment) ?? (mode === 'intra-subnet' && iface.segment === 'seg-B' ? routerAddress.get('seg-A') : undefined);
    if (gateway) routes.push({ host: iface.host, args: ['default', 'via', gateway] });
  }
  if (wiring.routers.length === 2) {
    // R1 reaches what is behind R2 through the R1–R2 cable, and R2 everything else through R1.
    const [r1, r2] = wiring.routers as [LabHost, LabHost];
    const behind = (router: LabHost): number[] =>
      wiring.interfaces.filter((i) => i.host === router && i.segment !== 'r1-r2').map((i) => subnetOf(i.segment));
    const link = (router: LabHost): string => `10.77.${SUBNET['r1-r2']}.${router.slice(1)}`;
    for (const subnet of behind(r2)) routes.push({ host: r1, args: [`10.77.${subnet}.0/24`, 'via', link(r2)] });
    routes.push({ host: r2, args: ['default', 'via', link(r1)] });
  }
  const join: CablePlan | undefined = mode === 'intra-subnet' ? { segment: 'seg-A+B', a: { host: 'A', dev: 'joinB', master: bridgeOf('A') }, b: { host: 'B', dev: 'joinA', master: bridgeOf('B') } } : undefined;
  const address = (host: Hypervisor): string => addresses.find((a) => a.host === host)!.cidr.split('/')[0]!;
  return { mode, addresses, routes, ...(join ? { join } : {}), migrationAddress: { A: address('A'), B: address('B') } };
}

/** Table 1 pairs them: the LAN case with Fig. 1a, the WAN case with Fig. 1b. */
export function ipv4ModeFor(topology: LabTopologyName): Ipv4Mode {
  return topology === 'intra-ad' ? 'intra-subnet' : 'inter-subnet';
}
