/**
 * An XIA node: the stack of one machine (router, hypervisor host or VM). It owns its
 * interfaces, route tables and neighbour table, and puts together the parts that
 * handle packets along the protocol's seams:
 *
 *  - forwarding-engine.ts: the DAG walk (`last`, fallbacks), in place, allocation-free;
 *  - local-delivery.ts: bound XIDs and their handlers;
 *  - xcmp-responder.ts: echo replies, XCMP errors and their rate limit;
 *  - node-metrics.ts: counters, drops, routes and refusals on /metrics.
 *
 * Every packet from a link enters at `receive`, which checks its fixed fields once; no
 * packet can make the node throw (a part that does anyway is counted as an internal
 * drop and logged, and the fuzz tests hold that count at 0).
 */
import type { Registry } from 'prom-client';
import { systemClock, type Clock } from '../shared/clock.js';
import { Dag } from '../shared/dag.js';
import { errorMessage, MalformedPacketError } from '../shared/errors.js';
import type { Identity } from '../shared/identity.js';
import type { Refusals } from '../shared/limits.js';
import { silentLogger, type Logger } from '../shared/logger.js';
import type { Startable } from '../shared/startable.js';
import { checkXip, encodeXipHeaderInto, NextHeader, XIP_DEFAULT_HOP_LIMIT } from '../shared/xip-header.js';
import { XidType, type Xid } from '../shared/xid.js';
import { ForwardingEngine, type Interface, type TransitChunkTap } from './forwarding-engine.js';
import type { Link, LinkAddress } from './link.js';
import { LocalDelivery, type LocalHandler } from './local-delivery.js';
import { NeighborTable } from './neighbor-table.js';
import { createNodeCounters, createNodeRefusals, DropReason, registerNodeMetrics, type NodeCounters } from './node-metrics.js';
import { Port, RouteTables } from './route-table.js';
import { TransportType } from './transport-header.js';
import { XcmpResponder, type XcmpListener } from './xcmp-responder.js';

export { DropReason, type DropReasonName } from './node-metrics.js';
export type { Arrival, LocalHandler } from './local-delivery.js';
export type { XcmpListener } from './xcmp-responder.js';
export type { Interface } from './forwarding-engine.js';

export type NodeRole = 'router' | 'host';

export interface NodeOptions {
  name: string;
  role: NodeRole;
  identity: Identity;
  /** A router's AD; a host learns its AD from beacons. */
  ad?: Xid;
  /** XCMP errors per second this node may send (token bucket). */
  xcmpErrorRate?: number;
}

export interface NodeComponents {
  logger?: Logger;
  registry?: Registry;
  clock?: Clock;
}

export interface SendOptions {
  nextHeader?: number;
  hopLimit?: number;
  /** Source DAG; defaults to this node's address. */
  src?: Dag;
}

export class XiaNode implements Startable {
  readonly name: string;
  readonly role: NodeRole;
  readonly identity: Identity;
  readonly hid: Xid;
  readonly routes = new RouteTables();
  readonly neighbors = new NeighborTable();
  readonly logger: Logger;
  readonly clock: Clock;
  readonly registry: Registry | undefined;
  /** Plain counters: the forwarding path increments numbers, /metrics reads them. */
  readonly counters: NodeCounters = createNodeCounters();
  /** What this node's surfaces refused for a bound (`xianet_refusals_total`). */
  readonly refusals: Refusals = createNodeRefusals();

  private currentAd: Xid | undefined;
  private readonly interfaces: Array<Interface | undefined> = [];
  private readonly xcmp: XcmpResponder;
  private readonly delivery: LocalDelivery;
  private readonly engine: ForwardingEngine;
  private readonly adListeners = new Set<(ad: Xid | undefined, previous: Xid | undefined) => void>();
  private readonly attachListeners = new Set<(port: number) => void>();
  private sweepTimer: NodeJS.Timeout | undefined;
  private started = false;

  constructor(options: NodeOptions, components: NodeComponents = {}) {
    this.name = options.name;
    this.role = options.role;
    this.identity = options.identity;
    this.hid = options.identity.xid(XidType.HID);
    this.logger = (components.logger ?? silentLogger()).child({ node: options.name });
    this.clock = components.clock ?? systemClock;
    this.registry = components.registry;
    this.xcmp = new XcmpResponder(this, this.counters, this.refusals, this.clock, options.xcmpErrorRate ?? 100);
    this.delivery = new LocalDelivery(this.name, this.routes, this.counters, this.xcmp);
    this.engine = new ForwardingEngine(this.hid, this.interfaces, this.routes, this.neighbors, this.counters, this.delivery, this.xcmp);
    this.routes.set(XidType.HID, { xid: this.hid, port: Port.LOCAL, nextHop: undefined, flags: 0, origin: 'local' });
    if (options.ad) this.setAd(options.ad);
    if (components.registry) registerNodeMetrics(components.registry, this.name, this.counters, this.routes, this.refusals);
  }

  // ---- identity and address -------------------------------------------------------

  get ad(): Xid | undefined {
    return this.currentAd;
  }

  /** This node's own DAG: AD → HID (with the HID fallback), or just the HID before it has an AD. */
  address(): Dag {
    return this.currentAd ? Dag.hostAddress(this.currentAd, this.hid) : Dag.chain(this.hid);
  }

  /** The DAG of a service on this node: AD → HID → SID. */
  serviceAddress(sid: Xid): Dag {
    return this.currentAd ? Dag.hostAddress(this.currentAd, this.hid, sid) : Dag.chain(this.hid, sid);
  }

  /** Joins an AD (routers at start; hosts when a beacon says so). */
  setAd(ad: Xid | undefined): void {
    const previous = this.currentAd;
    if (previous && ad && previous.equals(ad)) return;
    if (previous) this.routes.remove(XidType.AD, previous);
    this.currentAd = ad;
    if (ad) this.routes.set(XidType.AD, { xid: ad, port: Port.LOCAL, nextHop: undefined, flags: 0, origin: 'local' });
    for (const listener of this.adListeners) listener(ad, previous);
  }

  onAdChange(listener: (ad: Xid | undefined, previous: Xid | undefined) => void): () => void {
    this.adListeners.add(listener);
    return () => this.adListeners.delete(listener);
  }

  // ---- interfaces -----------------------------------------------------------------

  /** Adds an interface and returns its port number. */
  addInterface(link: Link, options: { hostFacing?: boolean } = {}): number {
    const port = this.interfaces.length;
    const iface: Interface = { port, link, hostFacing: options.hostFacing ?? false };
    this.interfaces.push(iface);
    link.onReceive(
      (packet, from) => this.receive(packet, port, from),
      (run, stride, from) => this.receiveRun(run, stride, port, from),
    );
    link.onAttach(() => {
      // A new segment: the old neighbours on this port are not there any more.
      for (const gone of this.neighbors.forgetPort(port)) this.logger.debug('neighbor.lost', { hid: gone.hid.short, port });
      for (const listener of this.attachListeners) listener(port);
    });
    return port;
  }

  interface(port: number): Interface | undefined {
    return this.interfaces[port];
  }

  get interfaceList(): Interface[] {
    return this.interfaces.filter((i): i is Interface => i !== undefined);
  }

  /** Called when an interface lands on a (new) segment. */
  onAttach(listener: (port: number) => void): () => void {
    this.attachListeners.add(listener);
    return () => this.attachListeners.delete(listener);
  }

  /** The smallest MTU of this node's interfaces: what a transport may assume. */
  get mtu(): number {
    let mtu = Infinity;
    for (const iface of this.interfaces) if (iface && iface.link.mtu < mtu) mtu = iface.link.mtu;
    return mtu === Infinity ? 65535 : mtu;
  }

  async start(): Promise<void> {
    if (this.started) return;
    this.started = true;
    for (const iface of this.interfaceList) await iface.link.start();
    this.sweepTimer = setInterval(() => this.sweep(), 500);
    this.sweepTimer.unref();
    this.logger.info('node.started', { role: this.role, hid: this.hid.toString(), ad: this.currentAd?.toString() });
  }

  async stop(): Promise<void> {
    if (!this.started) return;
    this.started = false;
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    this.sweepTimer = undefined;
    for (const iface of this.interfaceList) await iface.link.stop();
    this.logger.info('node.stopped', {});
  }

  private sweep(): void {
    const now = this.clock.now();
    for (const gone of this.neighbors.expire(now)) {
      this.logger.debug('neighbor.expired', { hid: gone.hid.short, port: gone.port });
    }
    this.routes.expire(now);
  }

  // ---- local endpoints ------------------------------------------------------------

  /**
   * Delivers packets whose sink is `xid` to `handler`, and makes the XID local in
   * its route table (port -2), as xia-core does for bound SIDs.
   */
  bind(xid: Xid, handler: LocalHandler): () => void {
    return this.delivery.bind(xid, handler);
  }

  /** Delivers packets whose sink is of `type` and has no handler of its own (e.g. every cached CID). */
  bindType(type: number, handler: LocalHandler): () => void {
    return this.delivery.bindType(type, handler);
  }

  /** Lets a chunk cache see every CHUNK packet this node forwards (it must copy what it keeps). */
  setTransitChunkTap(tap: TransitChunkTap | undefined): void {
    this.engine.transitChunkTap = tap;
  }

  isBound(xid: Xid): boolean {
    return this.delivery.isBound(xid);
  }

  onXcmp(listener: XcmpListener): () => void {
    return this.xcmp.onXcmp(listener);
  }

  // ---- sending --------------------------------------------------------------------

  /** Builds an XIP packet around `payload` and sends it from this node. */
  sendPacket(dst: Dag, payload: Uint8Array, options: SendOptions = {}): void {
    const fields = {
      dst,
      src: options.src ?? this.address(),
      nextHeader: options.nextHeader ?? NextHeader.TRANSPORT,
      hopLimit: options.hopLimit ?? XIP_DEFAULT_HOP_LIMIT,
    };
    const headerLength = encodeXipHeaderInto(undefined, fields, payload.length);
    const packet = Buffer.allocUnsafe(headerLength + payload.length);
    encodeXipHeaderInto(packet, fields, payload.length);
    packet.set(payload, headerLength);
    this.originate(packet);
  }

  /** Sends a DGRAM (transport type 1) to `dst`. */
  sendDatagram(dst: Dag, data: Uint8Array, options: Omit<SendOptions, 'nextHeader'> = {}): void {
    const payload = Buffer.allocUnsafe(1 + data.length);
    payload[0] = TransportType.DGRAM;
    payload.set(data, 1);
    this.sendPacket(dst, payload, { ...options, nextHeader: NextHeader.TRANSPORT });
  }

  /**
   * Sends an already built XIP packet from this node (takes ownership of the
   * buffers). With `tail`, the packet is `packet` then `tail`: forwarding reads
   * only the header, so a large payload (a slice of a stored chunk) goes out
   * without being copied behind it.
   */
  originate(packet: Buffer, tail?: Buffer): void {
    this.counters.originated++;
    this.engine.process(packet, -1, undefined, tail);
  }

  /**
   * Sends packets built alike but for their payload length (see originate for `tails`):
   * one route decision for all of them (ForwardingEngine.originateAlike).
   */
  originateAlike(packets: readonly Buffer[], tails: ReadonlyArray<Buffer | undefined>): void {
    this.counters.originated += packets.length;
    this.engine.originateAlike(packets, tails);
  }

  /**
   * Sends a packet straight out of one interface, to a neighbour or to the whole
   * segment, bypassing the route tables: beacons, hellos, and replies to a
   * neighbour that has no route yet.
   */
  sendOnPort(port: number, packet: Buffer, to: LinkAddress | 'broadcast'): boolean {
    const iface = this.interfaces[port];
    if (!iface || iface.link.address === undefined) {
      this.counters.dropped[DropReason.INTERFACE_DOWN]++;
      return false;
    }
    this.counters.originated++;
    if (to === 'broadcast') iface.link.broadcast(packet);
    else iface.link.send(packet, to);
    return true;
  }

  /** Builds a packet and sends it on `port` only (see sendOnPort). */
  sendDatagramOnPort(port: number, to: LinkAddress | 'broadcast', dst: Dag, data: Uint8Array, src?: Dag): boolean {
    const fields = { dst, src: src ?? this.address(), nextHeader: NextHeader.TRANSPORT, hopLimit: 1 };
    const headerLength = encodeXipHeaderInto(undefined, fields, data.length + 1);
    const packet = Buffer.allocUnsafe(headerLength + 1 + data.length);
    encodeXipHeaderInto(packet, fields, data.length + 1);
    packet[headerLength] = TransportType.DGRAM;
    packet.set(data, headerLength + 1);
    return this.sendOnPort(port, packet, to);
  }

  // ---- receiving --------------------------------------------------------------------

  /**
   * A run of packets alike but for their payload length (LinkRunReceiver): the first one's
   * header checked for all, routed once (ForwardingEngine.processRun).
   */
  receiveRun(run: Buffer, stride: number, port: number, from: LinkAddress): void {
    const count = Math.ceil(run.length / stride);
    this.counters.received += count;
    try {
      checkXip(run.subarray(0, stride));
    } catch (error) {
      this.counters.dropped[DropReason.MALFORMED] += count;
      if (error instanceof MalformedPacketError) this.logger.debug('packet.malformed', { port, from, reason: error.message, packets: count });
      return;
    }
    try {
      this.engine.processRun(run, stride, port, from);
    } catch (error) {
      this.counters.dropped[DropReason.INTERNAL]++;
      this.logger.warn('packet.internal-error', { port, from, reason: errorMessage(error) });
    }
  }

  /** Entry point of every packet arriving on an interface: checked once, then forwarded or delivered. */
  receive(packet: Buffer, port: number, from: LinkAddress): void {
    this.counters.received++;
    try {
      checkXip(packet);
    } catch (error) {
      this.counters.dropped[DropReason.MALFORMED]++;
      if (error instanceof MalformedPacketError) this.logger.debug('packet.malformed', { port, from, reason: error.message });
      return;
    }
    try {
      this.engine.process(packet, port, from);
    } catch (error) {
      // A packet a part of this node could not take: never the daemon's end.
      this.counters.dropped[DropReason.INTERNAL]++;
      this.logger.warn('packet.internal-error', { port, from, reason: errorMessage(error) });
    }
  }
}
