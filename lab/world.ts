/**
 * The lab's physical world: one network namespace per machine (R1, R2, A, B, C), the
 * segment bridges of A, B and C, and the cables of the topology in use (topology.ts).
 * Changing topology re-plugs cables; the namespaces, bridges — and a VM on them — stay.
 * IPv4 (the TCP/IP baseline) goes on and comes off the same interfaces.
 *
 * Everything is made through the run's NetnsRegistry, so its teardown removes it all.
 */
import { XmigError } from '../shared/errors.js';
import type { NetnsRegistry } from './netns.js';
import { bridgeMac, bridgeOf, LAB_HOSTS, type CableEnd, type CablePlan, type Ipv4Plan, type LabHost, type WiringPlan } from './topology.js';

export interface WorldOptions {
  /** IP MTU of every veth, bridge and tap (1500: real Ethernet). */
  mtu: number;
}

/** The hosts that own a segment bridge. */
const BRIDGED: readonly LabHost[] = ['A', 'B', 'C'];

export class LabWorld {
  private built = false;
  private wiring: WiringPlan | undefined;
  private ipv4: Ipv4Plan | undefined;
  /** "ns/dev/address" of every address set, so re-wiring never adds one twice. */
  private readonly addresses = new Set<string>();

  constructor(
    readonly net: NetnsRegistry,
    readonly options: WorldOptions,
  ) {}

  ns(host: LabHost): string {
    return this.net.nsName(host);
  }

  get current(): WiringPlan | undefined {
    return this.wiring;
  }

  /** The namespaces and the segment bridges. */
  async build(): Promise<void> {
    if (this.built) return;
    for (const host of LAB_HOSTS) await this.net.addNamespace(host, { ipv4Forwarding: host.startsWith('R') });
    for (const host of BRIDGED) await this.net.addBridge(this.ns(host), bridgeOf(host), { mtu: this.options.mtu, mac: bridgeMac(host) });
    this.built = true;
  }

  private async cable(cable: CablePlan): Promise<void> {
    const end = (e: CableEnd): { ns: string; name: string; options: { mtu: number; master?: string } } => ({
      ns: this.ns(e.host),
      name: e.dev,
      options: { mtu: this.options.mtu, ...(e.master ? { master: e.master } : {}) },
    });
    await this.net.addVeth(end(cable.a), end(cable.b));
  }

  private async address(host: LabHost, dev: string, cidr: string): Promise<void> {
    const key = `${host}/${dev}/${cidr}`;
    if (this.addresses.has(key)) return;
    await this.net.addAddress(this.ns(host), dev, cidr);
    this.addresses.add(key);
  }

  /** Plugs the cables of `plan` and gives every xianet interface its link-local address. */
  async wire(plan: WiringPlan): Promise<void> {
    if (!this.built) throw new XmigError('ERR_STATE', 'the lab world is not built');
    if (this.wiring) await this.unwire();
    for (const cable of plan.cables) await this.cable(cable);
    for (const iface of plan.interfaces) await this.address(iface.host, iface.dev, `${iface.linkLocal}/64`);
    this.wiring = plan;
  }

  /** Unplugs the current topology's cables (deleting one end of a veth removes both). */
  async unwire(): Promise<void> {
    const plan = this.wiring;
    if (!plan) return;
    if (this.ipv4) await this.removeIpv4();
    for (const cable of plan.cables) {
      await this.net.deleteLink(this.ns(cable.a.host), cable.a.dev);
      for (const key of [...this.addresses]) if (key.startsWith(`${cable.a.host}/${cable.a.dev}/`) || key.startsWith(`${cable.b.host}/${cable.b.dev}/`)) this.addresses.delete(key);
    }
    this.wiring = undefined;
  }

  /** IPv4 on the current wiring (and, intra-subnet, the cable joining A's and B's segments). */
  async applyIpv4(plan: Ipv4Plan): Promise<void> {
    if (!this.wiring) throw new XmigError('ERR_STATE', 'IPv4 needs a wired topology');
    if (this.ipv4) await this.removeIpv4();
    if (plan.join) await this.cable(plan.join);
    for (const a of plan.addresses) await this.address(a.host, a.dev, a.cidr);
    for (const r of plan.routes) await this.net.addRoute(this.ns(r.host), r.args);
    this.ipv4 = plan;
  }

  async removeIpv4(): Promise<void> {
    const plan = this.ipv4;
    if (!plan) return;
    this.ipv4 = undefined;
    if (plan.join) await this.net.deleteLink(this.ns(plan.join.a.host), plan.join.a.dev);
    for (const a of plan.addresses) {
      // Removing an address takes the routes through it with it.
      await this.net.ip(this.ns(a.host), ['addr', 'del', a.cidr, 'dev', a.dev]).catch(() => undefined);
      this.addresses.delete(`${a.host}/${a.dev}/${a.cidr}`);
    }
  }
}
