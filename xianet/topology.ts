/**
 * Topologies: which nodes exist, their roles, ADs and interfaces, and which
 * segment each interface is on. One description builds the network in one process
 * (memory segments) or as separate `xmig node` processes (UDP, see node-config.ts).
 *
 * The paper's Fig. 1 testbeds are built in: `intra-ad` (1a: one AD, router R1,
 * hosts A, B, C, each on its own segment) and `inter-ad` (1b: AD1 with R1, A and C;
 * AD2 with R2 and B; R1 and R2 linked). The VM starts on host A's segment.
 */
import type { Registry } from 'prom-client';
import { nameText, parseConfig, z } from '../shared/config.js';
import { Identity } from '../shared/identity.js';
import type { Logger } from '../shared/logger.js';
import { createRegistry } from '../shared/metrics.js';
import { impairmentSchema } from './link-impairment.js';
import { MemoryLink, MemorySegment } from './memory-link.js';
import { XiaStack, type StackOptions } from './stack.js';

export const topologySchema = z
  .strictObject({
    name: nameText,
    ads: z.array(nameText).min(1).max(64),
    segments: z.array(nameText).min(1).max(256),
    nodes: z
      .array(
        z.strictObject({
          name: nameText,
          role: z.enum(['router', 'host']),
          /** Routers: the AD they serve (one of `ads`). */
          ad: nameText.optional(),
          interfaces: z
            .array(z.strictObject({ segment: nameText, hostFacing: z.boolean().default(false) }))
            .min(1)
            .max(64),
          /** What the node stands for in the paper's testbed (host A, the VM, ...). */
          stands: z.string().max(200).optional(),
        }),
      )
      .min(1)
      .max(256),
    /** UDP deployments: link impairment per segment, on every interface attached to it (see link-impairment.ts). */
    impairments: z.record(nameText, impairmentSchema).default({}),
  })
  .superRefine((t, ctx) => {
    for (const [key, list] of [['ads', t.ads], ['segments', t.segments]] as const) {
      list.forEach((name, i) => {
        if (list.indexOf(name) !== i) ctx.addIssue({ code: 'custom', path: [key, i], message: `duplicate "${name}"` });
      });
    }
    for (const segment of Object.keys(t.impairments)) {
      if (!t.segments.includes(segment)) ctx.addIssue({ code: 'custom', path: ['impairments', segment], message: `unknown segment "${segment}"` });
    }
    const names = new Set<string>();
    t.nodes.forEach((n, i) => {
      if (names.has(n.name)) ctx.addIssue({ code: 'custom', path: ['nodes', i, 'name'], message: `duplicate node "${n.name}"` });
      names.add(n.name);
      if (n.role === 'router' && !n.ad) ctx.addIssue({ code: 'custom', path: ['nodes', i, 'ad'], message: 'a router needs an AD' });
      if (n.ad && !t.ads.includes(n.ad)) ctx.addIssue({ code: 'custom', path: ['nodes', i, 'ad'], message: `unknown AD "${n.ad}"` });
      n.interfaces.forEach((iface, j) => {
        if (!t.segments.includes(iface.segment)) {
          ctx.addIssue({ code: 'custom', path: ['nodes', i, 'interfaces', j, 'segment'], message: `unknown segment "${iface.segment}"` });
        }
      });
    });
  });

export type Topology = z.output<typeof topologySchema>;
export type TopologyName = 'intra-ad' | 'inter-ad';

/** Fig. 1a: one AD; R1 with hosts A, B, C on their own segments; the VM bridged on A's. */
export const INTRA_AD: Topology = parseConfig(topologySchema, {
  name: 'intra-ad',
  ads: ['AD1'],
  segments: ['seg-A', 'seg-B', 'seg-C'],
  nodes: [
    {
      name: 'R1',
      role: 'router',
      ad: 'AD1',
      interfaces: [
        { segment: 'seg-A', hostFacing: true },
        { segment: 'seg-B', hostFacing: true },
        { segment: 'seg-C', hostFacing: true },
      ],
    },
    { name: 'A', role: 'host', stands: 'source host', interfaces: [{ segment: 'seg-A' }] },
    { name: 'B', role: 'host', stands: 'destination host', interfaces: [{ segment: 'seg-B' }] },
    { name: 'C', role: 'host', stands: 'client host', interfaces: [{ segment: 'seg-C' }] },
    { name: 'VM', role: 'host', stands: 'virtual machine', interfaces: [{ segment: 'seg-A' }] },
  ],
});

/** Fig. 1b: AD1 (R1, A, C) and AD2 (R2, B), R1 and R2 linked; the VM bridged on A's segment. */
export const INTER_AD: Topology = parseConfig(topologySchema, {
  name: 'inter-ad',
  ads: ['AD1', 'AD2'],
  segments: ['seg-A', 'seg-B', 'seg-C', 'r1-r2'],
  nodes: [
    {
      name: 'R1',
      role: 'router',
      ad: 'AD1',
      interfaces: [
        { segment: 'seg-A', hostFacing: true },
        { segment: 'seg-C', hostFacing: true },
        { segment: 'r1-r2' },
      ],
    },
    {
      name: 'R2',
      role: 'router',
      ad: 'AD2',
      interfaces: [{ segment: 'seg-B', hostFacing: true }, { segment: 'r1-r2' }],
    },
    { name: 'A', role: 'host', stands: 'source host', interfaces: [{ segment: 'seg-A' }] },
    { name: 'B', role: 'host', stands: 'destination host', interfaces: [{ segment: 'seg-B' }] },
    { name: 'C', role: 'host', stands: 'client host', interfaces: [{ segment: 'seg-C' }] },
    { name: 'VM', role: 'host', stands: 'virtual machine', interfaces: [{ segment: 'seg-A' }] },
  ],
});

export function builtinTopology(name: TopologyName): Topology {
  return name === 'intra-ad' ? INTRA_AD : INTER_AD;
}

export interface NetworkOptions {
  logger?: Logger;
  beaconIntervalMs?: number;
  helloIntervalMs?: number;
  /** One registry per node, labelled with its name (default: none). */
  metrics?: boolean;
  /** Keys to use instead of fresh ones (node or AD name -> identity). */
  identities?: Map<string, Identity>;
  mtu?: number;
  /** Per-node extras for its stack (pinned ADs, cache size, ...). */
  stackOptions?: (name: string) => Partial<StackOptions>;
}

/** A topology built in this process on memory segments. */
export class InProcessNetwork {
  readonly stacks = new Map<string, XiaStack>();
  readonly segments = new Map<string, MemorySegment>();
  /** `${node}/${port}` -> link. */
  readonly links = new Map<string, MemoryLink>();
  readonly adIdentities = new Map<string, Identity>();
  readonly registries = new Map<string, Registry>();

  constructor(
    readonly topology: Topology,
    options: NetworkOptions = {},
  ) {
    const identity = (name: string): Identity => options.identities?.get(name) ?? Identity.generate();
    for (const ad of topology.ads) this.adIdentities.set(ad, identity(ad));
    topology.segments.forEach((name, i) => this.segments.set(name, new MemorySegment(name, { seed: i + 1 })));
    for (const spec of topology.nodes) {
      const registry = options.metrics ? createRegistry({ defaultLabels: { node: spec.name } }) : undefined;
      if (registry) this.registries.set(spec.name, registry);
      const stack = new XiaStack(
        {
          name: spec.name,
          role: spec.role,
          identity: identity(spec.name),
          adIdentity: spec.ad ? this.adIdentities.get(spec.ad) : undefined,
          beaconIntervalMs: options.beaconIntervalMs,
          helloIntervalMs: options.helloIntervalMs,
          ...options.stackOptions?.(spec.name),
        },
        { logger: options.logger, registry },
      );
      spec.interfaces.forEach((iface, port) => {
        const link = new MemoryLink(`${spec.name}/${port}`, { mtu: options.mtu, segment: this.segments.get(iface.segment)! });
        stack.addInterface(link, { hostFacing: iface.hostFacing });
        this.links.set(`${spec.name}/${port}`, link);
      });
      this.stacks.set(spec.name, stack);
    }
  }

  stack(name: string): XiaStack {
    const stack = this.stacks.get(name);
    if (!stack) throw new Error(`no node "${name}" in topology ${this.topology.name}`);
    return stack;
  }

  segment(name: string): MemorySegment {
    const segment = this.segments.get(name);
    if (!segment) throw new Error(`no segment "${name}" in topology ${this.topology.name}`);
    return segment;
  }

  link(node: string, port = 0): MemoryLink {
    const link = this.links.get(`${node}/${port}`);
    if (!link) throw new Error(`node "${node}" has no interface ${port}`);
    return link;
  }

  /** Moves a node's interface onto another segment: the network side of a migration. */
  move(node: string, segment: string, port = 0): void {
    this.link(node, port).attach(this.segment(segment));
  }

  async start(): Promise<void> {
    // Routers first, so hosts hear beacons as soon as they ask.
    const ordered = [...this.stacks.values()].sort((a, b) => Number(b.node.role === 'router') - Number(a.node.role === 'router'));
    for (const stack of ordered) await stack.start();
  }

  async stop(): Promise<void> {
    for (const stack of this.stacks.values()) await stack.stop();
  }

  /** Resolves when every host has a gateway and every router knows its neighbour routers. */
  async ready(timeoutMs = 5000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    const routers = [...this.stacks.values()].filter((s) => s.node.role === 'router');
    const isReady = (): boolean =>
      [...this.stacks.values()].every((s) => s.node.role === 'router' || s.join?.gateway !== undefined) &&
      routers.every((r) =>
        routers.every((other) => other === r || !sharesSegment(this, r.node.name, other.node.name) || r.node.neighbors.portsOf(other.node.hid).length > 0),
      ) &&
      [...this.stacks.values()].every((s) => s.node.role === 'router' || (s.join?.stats.registrations ?? 0) > 0);
    while (!isReady()) {
      if (Date.now() > deadline) throw new Error(`topology ${this.topology.name} not ready after ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 10));
    }
  }
}

function sharesSegment(network: InProcessNetwork, a: string, b: string): boolean {
  const segmentsOf = (name: string): string[] =>
    network.topology.nodes.find((n) => n.name === name)!.interfaces.map((i) => i.segment);
  const other = new Set(segmentsOf(b));
  return segmentsOf(a).some((s) => other.has(s));
}
