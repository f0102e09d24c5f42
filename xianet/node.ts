/**
 * An XIA node: the stack of one machine (router, hypervisor host or VM). It owns
 * its interfaces, route tables and neighbour table, forwards XIP packets by DAG
 * with xia-core's `last`-node and fallback semantics, answers XCMP echo, sends
 * XCMP errors, and delivers packets for local XIDs to bound handlers.
 *
 * Forwarding reads and patches the packet in place (last, hop limit, visited
 * bits) and hands the same buffer to the outgoing link: no re-encoding.
 */
import { Counter, Gauge, type Registry } from 'prom-client';
import { systemClock, type Clock } from '../shared/clock.js';
import { Dag } from '../shared/dag.js';
import { MalformedPacketError } from '../shared/errors.js';
import type { Identity } from '../shared/identity.js';
import { silentLogger, type Logger } from '../shared/logger.js';
import {
  checkXip,
  encodeXipHeaderInto,
  NextHeader,
  setXipLast,
  XIP_DEFAULT_HOP_LIMIT,
  XIP_EDGE_INDEX_MASK,
  XIP_EDGE_UNUSED,
  XIP_EDGE_VISITED,
  XIP_NODE_LENGTH,
  xipDstEdgesOffset,
  xipHeaderLengthOf,
  xipLast,
  XipOffset,
  xipSrcDag,
  xipDstDag,
} from '../shared/xip-header.js';
import { BROADCAST_HID, Xid, XID_WIRE_LENGTH, XidType } from '../shared/xid.js';
import type { Link, LinkAddress } from './link.js';
import { NeighborTable } from './neighbor-table.js';
import { Port, RouteTables, type RouteEntry } from './route-table.js';
import { TransportType } from './transport-header.js';
import {
  decodeXcmp,
  echoReplyInPlace,
  encodeXcmp,
  isXcmpError,
  XCMP_QUOTE_LIMIT,
  XcmpType,
  XcmpUnreachableCode,
  type XcmpMessage,
} from './xcmp.js';

export type NodeRole = 'router' | 'host';

export const DropReason = {
  MALFORMED: 'malformed',
  HOP_LIMIT: 'hop-limit',
  UNREACHABLE: 'unreachable',
  NO_NEIGHBOR: 'no-neighbor',
  TOO_BIG: 'too-big',
  DISCARD: 'discard',
  NO_LISTENER: 'no-listener',
  INTERFACE_DOWN: 'interface-down',
  LOOP: 'loop',
} as const;
export type DropReasonName = (typeof DropReason)[keyof typeof DropReason];

/** Where a locally delivered packet came from. */
export interface Arrival {
  /** Interface it arrived on; -1 when this node sent it to itself. */
  readonly port: number;
  /** The neighbour's link address (undefined for local). */
  readonly from: LinkAddress | undefined;
  /** Offset of the XIP payload in the packet. */
  readonly payloadOffset: number;
  /** Length of the XIP payload. */
  readonly payloadLength: number;
}

/** Receives packets whose sink is a bound XID; the packet buffer is the handler's. */
export type LocalHandler = (packet: Buffer, arrival: Arrival) => void;

/** Receives XCMP messages addressed to this node (echo replies, errors). */
export type XcmpListener = (message: XcmpMessage, packet: Buffer, arrival: Arrival) => void;

export interface Interface {
  readonly port: number;
  readonly link: Link;
  /** Routers send beacons on host-facing interfaces. */
  readonly hostFacing: boolean;
}

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

export class XiaNode {
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
  readonly counters = {
    received: 0,
    forwarded: 0,
    delivered: 0,
    originated: 0,
    xcmpSent: 0,
    dropped: Object.fromEntries(Object.values(DropReason).map((r) => [r, 0])) as Record<DropReasonName, number>,
  };

  private currentAd: Xid | undefined;
  private readonly interfaces: Array<Interface | undefined> = [];
  private readonly handlers = new Map<string, LocalHandler>();
  /** Handlers for every sink of a principal type that has no handler of its own (CIDs). */
  private readonly typeHandlers = new Map<number, LocalHandler>();
  /** Sees CHUNK packets this node forwards, so a router can cache what passes through. */
  private transitChunkTap: ((packet: Buffer, payloadOffset: number) => void) | undefined;
  private readonly xcmpListeners = new Set<XcmpListener>();
  private readonly adListeners = new Set<(ad: Xid | undefined, previous: Xid | undefined) => void>();
  private readonly attachListeners = new Set<(port: number) => void>();
  private sweepTimer: NodeJS.Timeout | undefined;
  private started = false;
  private xcmpTokens: number;
  private xcmpRefilledAt = 0;
  private readonly xcmpErrorRate: number;

  constructor(options: NodeOptions, components: NodeComponents = {}) {
    this.name = options.name;
    this.role = options.role;
    this.identity = options.identity;
    this.hid = options.identity.xid(XidType.HID);
    this.logger = (components.logger ?? silentLogger()).child({ node: options.name });
    this.clock = components.clock ?? systemClock;
    this.registry = components.registry;
    this.xcmpErrorRate = options.xcmpErrorRate ?? 100;
    this.xcmpTokens = this.xcmpErrorRate;
    this.routes.set(XidType.HID, { xid: this.hid, port: Port.LOCAL, nextHop: undefined, flags: 0, origin: 'local' });
    if (options.ad) this.setAd(options.ad);
    if (components.registry) this.registerMetrics(components.registry);
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
    link.onReceive((packet, from) => this.receive(packet, port, from));
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
    const mtus = this.interfaceList.map((i) => i.link.mtu);
    return mtus.length > 0 ? Math.min(...mtus) : 65535;
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
    const key = xid.key;
    if (this.handlers.has(key)) throw new Error(`${xid} is already bound on ${this.name}`);
    this.handlers.set(key, handler);
    if (xid.type !== XidType.HID) {
      this.routes.set(xid.type, { xid, port: Port.LOCAL, nextHop: undefined, flags: 0, origin: 'local' });
    }
    return () => {
      if (this.handlers.get(key) !== handler) return;
      this.handlers.delete(key);
      if (xid.type !== XidType.HID) this.routes.remove(xid.type, xid);
    };
  }

  /** Delivers packets whose sink is of `type` and has no handler of its own (e.g. every cached CID). */
  bindType(type: number, handler: LocalHandler): () => void {
    if (this.typeHandlers.has(type)) throw new Error(`type 0x${type.toString(16)} is already bound on ${this.name}`);
    this.typeHandlers.set(type, handler);
    return () => {
      if (this.typeHandlers.get(type) === handler) this.typeHandlers.delete(type);
    };
  }

  /** Lets a chunk cache see every CHUNK packet this node forwards (it must copy what it keeps). */
  setTransitChunkTap(tap: ((packet: Buffer, payloadOffset: number) => void) | undefined): void {
    this.transitChunkTap = tap;
  }

  isBound(xid: Xid): boolean {
    return this.handlers.has(xid.key);
  }

  onXcmp(listener: XcmpListener): () => void {
    this.xcmpListeners.add(listener);
    return () => this.xcmpListeners.delete(listener);
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
    this.process(packet, -1, undefined, tail);
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

  // ---- receiving and forwarding ---------------------------------------------------

  /** Entry point of every packet arriving on an interface. */
  receive(packet: Buffer, port: number, from: LinkAddress): void {
    this.counters.received++;
    try {
      checkXip(packet);
    } catch (error) {
      if (!(error instanceof MalformedPacketError)) throw error;
      this.counters.dropped[DropReason.MALFORMED]++;
      this.logger.debug('packet.malformed', { port, from, reason: error.message });
      return;
    }
    this.process(packet, port, from);
  }

  /**
   * The forwarding loop: from node `last`, try its out-edges in priority order.
   * A local XID advances `last` and the loop goes on from there; a route sends the
   * packet on; no usable edge means unreachable.
   */
  private process(packet: Buffer, inPort: number, from: LinkAddress | undefined, tail?: Buffer): void {
    const dnode = packet[XipOffset.DST_NODES]!;
    // Every way out but forwarding wants the packet whole (joinTail); a tail only comes from originate.
    // Each pass advances `last` by at least one node, so dnode + 1 passes are enough.
    for (let pass = 0; pass <= dnode; pass++) {
      const last = xipLast(packet);
      const edgesAt = xipDstEdgesOffset(packet, last);
      let advanced = false;
      // This node's own HID among the out-edges wins whatever its priority: the packet
      // has arrived. (Otherwise a host's default AD route would bounce a packet that
      // came to it by a HID fallback edge straight back to its gateway.)
      const self = this.ownHidEdge(packet, edgesAt);
      if (self >= 0) {
        const index = packet[edgesAt + self]! & XIP_EDGE_INDEX_MASK;
        packet[edgesAt + self] = index | XIP_EDGE_VISITED;
        setXipLast(packet, index);
        if (index === dnode - 1) {
          this.deliverLocally(joinTail(packet, tail), inPort, from);
          return;
        }
        continue;
      }
      for (let e = 0; e < 4; e++) {
        const index = packet[edgesAt + e]! & XIP_EDGE_INDEX_MASK;
        if (index === XIP_EDGE_UNUSED) continue;
        const nodeAt = XipOffset.NODES + index * XIP_NODE_LENGTH;
        const type = packet.readUInt32BE(nodeAt);
        const idAt = nodeAt + 4;
        let entry: RouteEntry | undefined;
        if (type === XidType.HID && BROADCAST_HID.id.compare(packet, idAt, idAt + 20) === 0) {
          if (inPort < 0) {
            this.broadcastEverywhere(joinTail(packet, tail));
            return;
          }
          entry = LOCAL_ENTRY;
        } else {
          entry = this.routes.existing(type)?.lookup(packet, idAt);
        }
        if (entry === undefined || entry.port === Port.FALLBACK) continue;
        if (entry.port === Port.LOCAL) {
          packet[edgesAt + e] = index | XIP_EDGE_VISITED;
          setXipLast(packet, index);
          if (index === dnode - 1) {
            this.deliverLocally(joinTail(packet, tail), inPort, from);
            return;
          }
          advanced = true;
          break;
        }
        if (entry.port === Port.DISCARD) {
          this.counters.dropped[DropReason.DISCARD]++;
          return;
        }
        if (entry.port === Port.BROADCAST) {
          this.broadcastEverywhere(joinTail(packet, tail), inPort);
          return;
        }
        if (tail && this.transitChunkTap) this.forward(joinTail(packet, tail), entry, inPort);
        else this.forward(packet, entry, inPort, tail);
        return;
      }
      if (!advanced) {
        this.counters.dropped[DropReason.UNREACHABLE]++;
        this.sendXcmpError(joinTail(packet, tail), XcmpType.UNREACHABLE, XcmpUnreachableCode.HOST);
        return;
      }
    }
    this.counters.dropped[DropReason.LOOP]++;
  }

  /** The edge slot (0..3) of `edgesAt` that points at this node's HID, or -1. */
  private ownHidEdge(packet: Buffer, edgesAt: number): number {
    const own = this.hid;
    for (let e = 0; e < 4; e++) {
      const index = packet[edgesAt + e]! & XIP_EDGE_INDEX_MASK;
      if (index === XIP_EDGE_UNUSED) continue;
      const nodeAt = XipOffset.NODES + index * XIP_NODE_LENGTH;
      if (packet.readUInt32BE(nodeAt) === XidType.HID && own.id.compare(packet, nodeAt + 4, nodeAt + 24) === 0) return e;
    }
    return -1;
  }

  /** Sends `packet` (then `tail`, if any, which only a packet we originate has) toward `entry`. */
  private forward(packet: Buffer, entry: RouteEntry, inPort: number, tail?: Buffer): void {
    const iface = this.interfaces[entry.port];
    if (!iface || iface.link.address === undefined) {
      this.counters.dropped[DropReason.INTERFACE_DOWN]++;
      return;
    }
    if (inPort >= 0) {
      const hopLimit = packet[XipOffset.HOP_LIMIT]!;
      if (hopLimit <= 1) {
        this.counters.dropped[DropReason.HOP_LIMIT]++;
        this.sendXcmpError(packet, XcmpType.TIME_EXCEEDED, 0);
        return;
      }
      packet[XipOffset.HOP_LIMIT] = hopLimit - 1;
    }
    if (packet.length + (tail?.length ?? 0) > iface.link.mtu) {
      this.counters.dropped[DropReason.TOO_BIG]++;
      this.sendXcmpError(joinTail(packet, tail), XcmpType.UNREACHABLE, XcmpUnreachableCode.NEED_FRAGMENT);
      return;
    }
    const nextHop = entry.nextHop;
    const address = nextHop ? this.neighbors.addressOf(entry.port, nextHop) : undefined;
    if (address === undefined) {
      this.counters.dropped[DropReason.NO_NEIGHBOR]++;
      this.sendXcmpError(joinTail(packet, tail), XcmpType.UNREACHABLE, XcmpUnreachableCode.HOST);
      return;
    }
    this.counters.forwarded++;
    if (this.transitChunkTap && packet[XipOffset.NEXT_HEADER] === NextHeader.TRANSPORT) {
      const payloadOffset = xipHeaderLengthOf(packet);
      if (packet[payloadOffset] === TransportType.CHUNK) this.transitChunkTap(packet, payloadOffset);
    }
    iface.link.send(packet, address, tail);
  }

  private broadcastEverywhere(packet: Buffer, exceptPort = -1): void {
    for (const iface of this.interfaceList) {
      if (iface.port === exceptPort || iface.link.address === undefined) continue;
      iface.link.broadcast(packet);
    }
    this.counters.forwarded++;
  }

  private deliverLocally(packet: Buffer, inPort: number, from: LinkAddress | undefined): void {
    const headerLength = xipHeaderLengthOf(packet);
    const payloadLength = packet.readUInt16BE(XipOffset.PAYLOAD_LENGTH);
    const arrival: Arrival = { port: inPort, from, payloadOffset: headerLength, payloadLength };
    const nextHeader = packet[XipOffset.NEXT_HEADER]!;
    if (nextHeader === NextHeader.XCMP) {
      this.handleXcmp(packet, arrival);
      return;
    }
    const sinkAt = XipOffset.NODES + (packet[XipOffset.DST_NODES]! - 1) * XIP_NODE_LENGTH;
    const handler = this.handlers.get(sinkKey(packet, sinkAt)) ?? this.typeHandlers.get(packet.readUInt32BE(sinkAt));
    if (!handler) {
      this.counters.dropped[DropReason.NO_LISTENER]++;
      // No XCMP for broadcasts: nobody on a segment should be told about everyone else's silence.
      if (inPort >= 0 && packet[sinkAt + 3] === XidType.SID && !isBroadcastDestination(packet)) {
        this.sendXcmpError(packet, XcmpType.UNREACHABLE, XcmpUnreachableCode.PORT);
      }
      return;
    }
    this.counters.delivered++;
    handler(packet, arrival);
  }

  private handleXcmp(packet: Buffer, arrival: Arrival): void {
    const payload = packet.subarray(arrival.payloadOffset, arrival.payloadOffset + arrival.payloadLength);
    let message: XcmpMessage;
    try {
      message = decodeXcmp(payload);
    } catch {
      this.counters.dropped[DropReason.MALFORMED]++;
      return;
    }
    this.counters.delivered++;
    if (message.type === XcmpType.ECHO) {
      this.replyToEcho(packet, payload);
      return;
    }
    for (const listener of this.xcmpListeners) listener(message, packet, arrival);
  }

  /** Echo reply: to the request's source, from the address that was pinged, same data. */
  private replyToEcho(request: Buffer, payload: Buffer): void {
    let dst: Dag;
    let src: Dag;
    try {
      dst = xipSrcDag(request);
      src = xipDstDag(request);
    } catch {
      this.counters.dropped[DropReason.MALFORMED]++;
      return;
    }
    const reply = Buffer.from(payload);
    echoReplyInPlace(reply);
    this.sendPacket(dst, reply, { src, nextHeader: NextHeader.XCMP });
  }

  /** Sends an XCMP error about `packet` to its source, within the node's rate limit. */
  private sendXcmpError(packet: Buffer, type: number, code: number): void {
    if (packet[XipOffset.NEXT_HEADER] === NextHeader.XCMP) {
      const at = xipHeaderLengthOf(packet);
      if (packet.length > at && isXcmpError(packet[at]!)) return; // never an error about an error
    }
    if (isBroadcastDestination(packet)) return;
    const now = this.clock.monotonic();
    this.xcmpTokens = Math.min(
      this.xcmpErrorRate,
      this.xcmpTokens + ((now - this.xcmpRefilledAt) / 1000) * this.xcmpErrorRate,
    );
    this.xcmpRefilledAt = now;
    if (this.xcmpTokens < 1) return;
    this.xcmpTokens -= 1;
    let dst: Dag;
    try {
      dst = xipSrcDag(packet);
    } catch {
      return;
    }
    const quote = packet.subarray(0, Math.min(packet.length, XCMP_QUOTE_LIMIT));
    const message = encodeXcmp({ type, code, identifier: 0, sequence: 0, data: quote });
    this.counters.xcmpSent++;
    this.sendPacket(dst, message, { nextHeader: NextHeader.XCMP });
  }

  // ---- metrics ----------------------------------------------------------------------

  private registerMetrics(registry: Registry): void {
    const counters = this.counters;
    const labels = { node: this.name };
    const packets = new Counter({
      name: 'xianet_packets_total',
      help: 'XIP packets by what happened to them',
      labelNames: ['node', 'event'] as const,
      registers: [registry],
      collect() {
        this.reset();
        for (const event of ['received', 'forwarded', 'delivered', 'originated', 'xcmpSent'] as const) {
          this.inc({ ...labels, event }, counters[event]);
        }
      },
    });
    const drops = new Counter({
      name: 'xianet_packets_dropped_total',
      help: 'XIP packets dropped, by reason',
      labelNames: ['node', 'reason'] as const,
      registers: [registry],
      collect() {
        this.reset();
        for (const [reason, value] of Object.entries(counters.dropped)) this.inc({ ...labels, reason }, value);
      },
    });
    const routes = this.routes;
    const routeGauge = new Gauge({
      name: 'xianet_routes',
      help: 'Route table entries by principal type',
      labelNames: ['node', 'type'] as const,
      registers: [registry],
      collect() {
        this.reset();
        for (const type of routes.types()) {
          this.set({ ...labels, type: Xid.of(type, Buffer.alloc(20)).typeName }, routes.table(type).size);
        }
      },
    });
    void packets;
    void drops;
    void routeGauge;
  }
}

const LOCAL_ENTRY: RouteEntry = { xid: undefined, port: Port.LOCAL, nextHop: undefined, flags: 0, origin: 'local' };

/** The handler key of the sink XID at `at` without building an Xid (the TYPE:hex text form). */
function sinkKey(packet: Buffer, at: number): string {
  const type = packet.readUInt32BE(at);
  const name = TYPE_PREFIX.get(type) ?? `0x${type.toString(16)}:`;
  return name + packet.toString('hex', at + 4, at + XID_WIRE_LENGTH);
}

const TYPE_PREFIX = new Map<number, string>(
  Object.entries(XidType).map(([name, code]) => [code as number, `${name}:`]),
);

function isBroadcastDestination(packet: Buffer): boolean {
  const dnode = packet[XipOffset.DST_NODES]!;
  for (let i = 0; i < dnode; i++) {
    const at = XipOffset.NODES + i * XIP_NODE_LENGTH;
    if (packet.readUInt32BE(at) === XidType.HID && BROADCAST_HID.id.compare(packet, at + 4, at + 24) === 0) return true;
  }
  return false;
}

/** A packet built as a header plus a separate tail, as one buffer. */
function joinTail(packet: Buffer, tail: Buffer | undefined): Buffer {
  return tail ? Buffer.concat([packet, tail]) : packet;
}
