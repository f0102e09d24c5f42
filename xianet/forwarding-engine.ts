/**
 * XIP forwarding with xia-core's `last`-node and fallback semantics: from node `last`,
 * try its out-edges in priority order; a local XID advances `last` and the walk goes on
 * from there; a route sends the packet on; no usable edge means unreachable.
 *
 * The hot path: it reads and patches the packet in place (last, hop limit, visited
 * bits) and hands the same buffer to the outgoing link. Nothing is allocated per
 * forwarded packet (bench/forwarding.ts measures it).
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

export class ForwardingEngine {
  /** Sees CHUNK packets this node forwards, so a router can cache what passes through. */
  transitChunkTap: TransitChunkTap | undefined;

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
    if (this.transitChunkTap && packet[XipOffset.NEXT_HEADER] === NextHeader.TRANSPORT) {
      const payloadOffset = xipHeaderLengthOf(packet);
      if (packet[payloadOffset] === TransportType.CHUNK) this.transitChunkTap(packet, payloadOffset);
    }
    iface.link.send(packet, address, tail);
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
