/**
 * XIP forwarding with xia-core's `last`-node and fallback semantics: from node `last`,
 * try its out-edges in priority order; a local XID advances `last` and the walk goes on
 * from there; a route sends the packet on; no usable edge means unreachable.
 *
 * The hot path: it reads and patches the packet in place (last, hop limit, visited
 * bits) and hands the same buffer to the outgoing link. Nothing is allocated per
 * forwarded packet (bench/forwarding.ts measures it). Packets alike but for their
 * payload length — a UDP GRO datagram of one flow (processRun), a chunk response's
 * fragments (originateAlike) — are routed once: the rest take the first one's outcome.
 */
import {
  NextHeader,
  setXipLast,
  XIP_EDGE_INDEX_MASK,
  XIP_EDGE_UNUSED,
  XIP_EDGE_VISITED,
  XIP_NODE_LENGTH,
  xipDstEdgesOffset,
  xipHeaderLengthOf,
  xipLast,
  XipOffset,
} from '../shared/xip-header.js';
import { BROADCAST_HID, XidType, type Xid } from '../shared/xid.js';
import type { Link, LinkAddress } from './link.js';
import type { LocalDelivery } from './local-delivery.js';
import type { NeighborTable } from './neighbor-table.js';
import { DropReason, type NodeCounters } from './node-metrics.js';
import { Port, type RouteEntry, type RouteTables } from './route-table.js';
import { TransportType } from './transport-header.js';
import type { XcmpResponder } from './xcmp-responder.js';
import { XcmpType, XcmpUnreachableCode } from './xcmp.js';

export interface Interface {
  readonly port: number;
  readonly link: Link;
  /** Routers send beacons on host-facing interfaces. */
  readonly hostFacing: boolean;
}

/** A tap on CHUNK packets forwarded through this node (a router's cache). */
export type TransitChunkTap = (packet: Buffer, payloadOffset: number) => void;

const LOCAL_ENTRY: RouteEntry = { xid: undefined, port: Port.LOCAL, nextHop: undefined, flags: 0, origin: 'local' };

/** How process() disposed of the packet processRun asked about, for the rest of its run. */
type RunOutcome =
  | { kind: 'deliver'; header: Buffer }
  | { kind: 'forward'; header: Buffer; link: Link; address: LinkAddress };

export class ForwardingEngine {
  /** Sees CHUNK packets this node forwards, so a router can cache what passes through. */
  transitChunkTap: TransitChunkTap | undefined;
  /** The packet whose outcome processRun wants (the first of a run); nested sends are other buffers. */
  private recordFor: Buffer | undefined;
  private outcome: RunOutcome | undefined;

  constructor(
    private readonly hid: Xid,
    private readonly interfaces: ReadonlyArray<Interface | undefined>,
    private readonly routes: RouteTables,
    private readonly neighbors: NeighborTable,
    private readonly counters: NodeCounters,
    private readonly delivery: LocalDelivery,
    private readonly xcmp: XcmpResponder,
  ) {}

  /**
   * Routes a checked packet that arrived on `inPort` (-1: this node sent it). A `tail`
   * only comes from the node itself: the packet is `packet` then `tail`, joined only
   * where a way out needs the packet whole.
   */
  process(packet: Buffer, inPort: number, from: LinkAddress | undefined, tail?: Buffer): void {
    const dnode = packet[XipOffset.DST_NODES]!;
    // Whether the packet has reached this host (its own HID edge taken): what is missing
    // then is a service here (XCMP PORT, a hard error), not a way to the host (HOST, which
    // a sender may outlast: a route that lapsed or is not yet written).
    let arrived = false;
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
        arrived = true;
        if (index === dnode - 1) {
          if (packet === this.recordFor) this.record('deliver', packet);
          this.delivery.deliver(joinTail(packet, tail), inPort, from);
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
          // Past its own HID a packet is for a service on this host: a default route
          // (toward the gateway) must not carry it back out for a router to call the
          // host unreachable; only an explicit entry may.
          const table = this.routes.existing(type);
          entry = arrived ? table?.lookupExact(packet, idAt) : table?.lookup(packet, idAt);
        }
        if (entry === undefined || entry.port === Port.FALLBACK) continue;
        if (entry.port === Port.LOCAL) {
          packet[edgesAt + e] = index | XIP_EDGE_VISITED;
          setXipLast(packet, index);
          if (index === dnode - 1) {
            if (packet === this.recordFor) this.record('deliver', packet);
            this.delivery.deliver(joinTail(packet, tail), inPort, from);
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
        this.xcmp.sendError(joinTail(packet, tail), XcmpType.UNREACHABLE, arrived ? XcmpUnreachableCode.PORT : XcmpUnreachableCode.HOST);
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
        this.xcmp.sendError(packet, XcmpType.TIME_EXCEEDED, 0);
        return;
      }
      packet[XipOffset.HOP_LIMIT] = hopLimit - 1;
    }
    if (packet.length + (tail?.length ?? 0) > iface.link.mtu) {
      this.counters.dropped[DropReason.TOO_BIG]++;
      this.xcmp.sendError(joinTail(packet, tail), XcmpType.UNREACHABLE, XcmpUnreachableCode.NEED_FRAGMENT);
      return;
    }
    const nextHop = entry.nextHop;
    const address = nextHop ? this.neighbors.addressOf(entry.port, nextHop) : undefined;
    if (address === undefined) {
      this.counters.dropped[DropReason.NO_NEIGHBOR]++;
      this.xcmp.sendError(joinTail(packet, tail), XcmpType.UNREACHABLE, XcmpUnreachableCode.HOST);
      return;
    }
    this.counters.forwarded++;
    this.tap(packet);
    if (packet === this.recordFor) this.record('forward', packet, iface.link, address);
    iface.link.send(packet, address, tail);
  }

  private tap(packet: Buffer): void {
    if (this.transitChunkTap && packet[XipOffset.NEXT_HEADER] === NextHeader.TRANSPORT) {
      const payloadOffset = xipHeaderLengthOf(packet);
      if (packet[payloadOffset] === TransportType.CHUNK) this.transitChunkTap(packet, payloadOffset);
    }
  }

  private record(kind: 'deliver' | 'forward', packet: Buffer, link?: Link, address?: LinkAddress): void {
    this.recordFor = undefined;
    // From the hop limit to the end of the header: what routing changed, the payload length aside.
    const header = Buffer.from(packet.subarray(XipOffset.HOP_LIMIT, xipHeaderLengthOf(packet)));
    this.outcome = kind === 'deliver' ? { kind, header } : { kind, header, link: link!, address: address! };
  }

  /**
   * Routes a run (see LinkRunReceiver: packets back to back, `stride` bytes each but the
   * last, headers alike but for the payload length) as one: its first packet as process()
   * does; where that was a local delivery or a forward, every other packet the same way,
   * its header stamped with the first one's as routed (last, visited edges, hop limit),
   * and the rest sent on as one message where the link can (sendRun). Anything else — a
   * drop, an XCMP error, a broadcast — each packet meets on its own, as it would have.
   */
  processRun(run: Buffer, stride: number, inPort: number, from: LinkAddress | undefined): void {
    const outcome = this.routeFirst(run.subarray(0, stride), inPort, from, undefined);
    if (run.length <= stride) return;
    const rest = run.subarray(stride);
    const each = (f: (packet: Buffer) => void): void => {
      for (let at = 0; at < rest.length; at += stride) f(rest.subarray(at, Math.min(rest.length, at + stride)));
    };
    if (!outcome) return each((packet) => this.process(packet, inPort, from));
    for (let at = 0; at < rest.length; at += stride) outcome.header.copy(rest, at + XipOffset.HOP_LIMIT);
    if (outcome.kind === 'deliver') {
      const packets: Buffer[] = [];
      each((packet) => packets.push(packet));
      return this.delivery.deliverAlike(packets, inPort, from);
    }
    this.counters.forwarded += Math.ceil(rest.length / stride);
    if (this.transitChunkTap) each((packet) => this.tap(packet));
    if (outcome.link.sendRun) outcome.link.sendRun(rest, stride, outcome.address);
    else each((packet) => outcome.link.send(packet, outcome.address));
  }

  /**
   * Sends packets this node built alike but for the payload length (the fragments of one
   * chunk response, each a header and a tail), routed once as processRun does: the rest
   * stamped with the first one's routed header and handed to the same neighbour.
   */
  originateAlike(packets: readonly Buffer[], tails: ReadonlyArray<Buffer | undefined>): void {
    if (packets.length === 0) return;
    const outcome = this.routeFirst(packets[0]!, -1, undefined, tails[0]);
    for (let i = 1; i < packets.length; i++) {
      const packet = packets[i]!;
      const tail = tails[i];
      if (!outcome) {
        this.process(packet, -1, undefined, tail);
        continue;
      }
      outcome.header.copy(packet, XipOffset.HOP_LIMIT);
      if (outcome.kind === 'deliver') {
        this.delivery.deliver(joinTail(packet, tail), -1, undefined);
        continue;
      }
      this.counters.forwarded++;
      if (this.transitChunkTap) this.tap(joinTail(packet, tail));
      outcome.link.send(packet, outcome.address, tail);
    }
  }

  /** process() of a group's first packet, and how it went if that was a delivery or a forward. */
  private routeFirst(first: Buffer, inPort: number, from: LinkAddress | undefined, tail: Buffer | undefined): RunOutcome | undefined {
    this.recordFor = first;
    this.outcome = undefined;
    try {
      this.process(first, inPort, from, tail);
    } finally {
      this.recordFor = undefined;
    }
    // Set (or not) by the process() above: TypeScript cannot see that.
    const outcome = this.outcome as RunOutcome | undefined;
    this.outcome = undefined;
    return outcome;
  }

  private broadcastEverywhere(packet: Buffer, exceptPort = -1): void {
    for (const iface of this.interfaces) {
      if (!iface || iface.port === exceptPort || iface.link.address === undefined) continue;
      iface.link.broadcast(packet);
    }
    this.counters.forwarded++;
  }
}

/** A packet built as a header plus a separate tail, as one buffer. */
function joinTail(packet: Buffer, tail: Buffer | undefined): Buffer {
  return tail ? Buffer.concat([packet, tail]) : packet;
}
