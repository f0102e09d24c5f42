/**
 * Local delivery: packets whose sink is one of this node's XIDs go to the handler bound
 * to that XID (a SID's socket, the node's HID for XCMP), or to the handler of its
 * principal type (every cached CID). Binding an XID other than a HID makes it local in
 * its route table (port -2), as xia-core does for bound SIDs.
 */
import { XmigError } from '../shared/errors.js';
import { XIP_NODE_LENGTH, XipOffset, NextHeader, xipHeaderLengthOf } from '../shared/xip-header.js';
import { XID_WIRE_LENGTH, XidType, type Xid } from '../shared/xid.js';
import type { LinkAddress } from './link.js';
import { DropReason, type NodeCounters } from './node-metrics.js';
import { Port, type RouteTables } from './route-table.js';
import { isBroadcastDestination, type XcmpResponder } from './xcmp-responder.js';
import { XcmpType, XcmpUnreachableCode } from './xcmp.js';

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

export class LocalDelivery {
  private readonly handlers = new Map<string, LocalHandler>();
  /** Handlers for every sink of a principal type that has no handler of its own (CIDs). */
  private readonly typeHandlers = new Map<number, LocalHandler>();
  /** Counts binds and unbinds: a handler looked up once (deliverAlike) is still the one while this stands. */
  private generation = 0;

  constructor(
    private readonly nodeName: string,
    private readonly routes: RouteTables,
    private readonly counters: NodeCounters,
    private readonly xcmp: XcmpResponder,
  ) {}

  bind(xid: Xid, handler: LocalHandler): () => void {
    const key = xid.key;
    if (this.handlers.has(key)) throw new XmigError('ERR_STATE', `${xid} is already bound on ${this.nodeName}`);
    this.handlers.set(key, handler);
    this.generation++;
    if (xid.type !== XidType.HID) {
      this.routes.set(xid.type, { xid, port: Port.LOCAL, nextHop: undefined, flags: 0, origin: 'local' });
    }
    return () => {
      if (this.handlers.get(key) !== handler) return;
      this.handlers.delete(key);
      this.generation++;
      if (xid.type !== XidType.HID) this.routes.remove(xid.type, xid);
    };
  }

  bindType(type: number, handler: LocalHandler): () => void {
    if (this.typeHandlers.has(type)) throw new XmigError('ERR_STATE', `type 0x${type.toString(16)} is already bound on ${this.nodeName}`);
    this.typeHandlers.set(type, handler);
    this.generation++;
    return () => {
      if (this.typeHandlers.get(type) !== handler) return;
      this.typeHandlers.delete(type);
      this.generation++;
    };
  }

  isBound(xid: Xid): boolean {
    return this.handlers.has(xid.key);
  }

  /**
   * Packets alike but for their payload length (the rest of a run whose first packet was
   * delivered here), all to the sink of the first: its handler looked up once, as long as
   * nothing is bound or unbound meanwhile (a handler may unbind itself: then each packet
   * is looked up again, as deliver() does).
   */
  deliverAlike(packets: readonly Buffer[], inPort: number, from: LinkAddress | undefined): void {
    const first = packets[0];
    if (!first) return;
    const handler = first[XipOffset.NEXT_HEADER] === NextHeader.XCMP ? undefined : this.handlerOf(first);
    const generation = this.generation;
    const headerLength = xipHeaderLengthOf(first);
    for (const packet of packets) {
      if (!handler || this.generation !== generation) {
        this.deliver(packet, inPort, from);
        continue;
      }
      this.counters.delivered++;
      handler(packet, { port: inPort, from, payloadOffset: headerLength, payloadLength: packet.readUInt16BE(XipOffset.PAYLOAD_LENGTH) });
    }
  }

  private handlerOf(packet: Buffer): LocalHandler | undefined {
    const sinkAt = XipOffset.NODES + (packet[XipOffset.DST_NODES]! - 1) * XIP_NODE_LENGTH;
    return this.handlers.get(sinkKey(packet, sinkAt)) ?? this.typeHandlers.get(packet.readUInt32BE(sinkAt));
  }

  /** A packet that has reached its sink on this node (checked by checkXip). */
  deliver(packet: Buffer, inPort: number, from: LinkAddress | undefined): void {
    const headerLength = xipHeaderLengthOf(packet);
    const payloadLength = packet.readUInt16BE(XipOffset.PAYLOAD_LENGTH);
    const arrival: Arrival = { port: inPort, from, payloadOffset: headerLength, payloadLength };
    if (packet[XipOffset.NEXT_HEADER] === NextHeader.XCMP) {
      this.xcmp.handle(packet, arrival);
      return;
    }
    const sinkAt = XipOffset.NODES + (packet[XipOffset.DST_NODES]! - 1) * XIP_NODE_LENGTH;
    const handler = this.handlerOf(packet);
    if (!handler) {
      this.counters.dropped[DropReason.NO_LISTENER]++;
      // No XCMP for broadcasts: nobody on a segment should be told about everyone else's silence.
      if (inPort >= 0 && packet[sinkAt + 3] === XidType.SID && !isBroadcastDestination(packet)) {
        this.xcmp.sendError(packet, XcmpType.UNREACHABLE, XcmpUnreachableCode.PORT);
      }
      return;
    }
    this.counters.delivered++;
    handler(packet, arrival);
  }
}

/** The handler key of the sink XID at `at` without building an Xid (the TYPE:hex text form). */
function sinkKey(packet: Buffer, at: number): string {
  const type = packet.readUInt32BE(at);
  const name = TYPE_PREFIX.get(type) ?? `0x${type.toString(16)}:`;
  return name + packet.toString('hex', at + 4, at + XID_WIRE_LENGTH);
}

const TYPE_PREFIX = new Map<number, string>(Object.entries(XidType).map(([name, code]) => [code as number, `${name}:`]));
