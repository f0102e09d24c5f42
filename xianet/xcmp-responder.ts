/**
 * A node's XCMP side: it answers echo requests, hands echo replies and errors to its
 * listeners (xping, STREAM), and sends errors about packets it could not deliver or
 * forward — never about an error or a broadcast, and within a token-bucket rate, so a
 * flood of undeliverable packets cannot make the node a flood of errors.
 */
import type { Clock } from '../shared/clock.js';
import type { Dag } from '../shared/dag.js';
import { TokenBucket, type Refusals } from '../shared/limits.js';
import { NextHeader, XipOffset, xipDstDag, xipHeaderLengthOf, xipSrcDag } from '../shared/xip-header.js';
import { BROADCAST_HID, XidType } from '../shared/xid.js';
import { XIP_NODE_LENGTH } from '../shared/xip-header.js';
import { DropReason, type NodeCounters } from './node-metrics.js';
import type { Arrival } from './local-delivery.js';
import { decodeXcmp, echoReplyInPlace, encodeXcmp, isXcmpError, XCMP_QUOTE_LIMIT, XcmpType, type XcmpMessage } from './xcmp.js';

/** Receives XCMP messages addressed to this node (echo replies, errors). */
export type XcmpListener = (message: XcmpMessage, packet: Buffer, arrival: Arrival) => void;

/** What the responder needs of its node: a way to send. */
export interface XcmpSender {
  sendPacket(dst: Dag, payload: Uint8Array, options: { src?: Dag; nextHeader: number }): void;
}

export class XcmpResponder {
  private readonly listeners = new Set<XcmpListener>();
  private readonly errorBudget: TokenBucket;

  constructor(
    private readonly sender: XcmpSender,
    private readonly counters: NodeCounters,
    private readonly refusals: Refusals,
    clock: Clock,
    errorRate: number,
  ) {
    this.errorBudget = new TokenBucket(errorRate, errorRate, clock);
  }

  onXcmp(listener: XcmpListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** An XCMP packet for this node. */
  handle(packet: Buffer, arrival: Arrival): void {
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
    for (const listener of this.listeners) listener(message, packet, arrival);
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
    this.sender.sendPacket(dst, reply, { src, nextHeader: NextHeader.XCMP });
  }

  /** Sends an XCMP error about `packet` to its source, within the node's rate limit. */
  sendError(packet: Buffer, type: number, code: number): void {
    if (packet[XipOffset.NEXT_HEADER] === NextHeader.XCMP) {
      const at = xipHeaderLengthOf(packet);
      if (packet.length > at && isXcmpError(packet[at]!)) return; // never an error about an error
    }
    if (isBroadcastDestination(packet)) return;
    if (!this.errorBudget.take()) {
      this.refusals.refuse('xcmp-error', 'rate');
      return;
    }
    let dst: Dag;
    try {
      dst = xipSrcDag(packet);
    } catch {
      return;
    }
    const quote = packet.subarray(0, Math.min(packet.length, XCMP_QUOTE_LIMIT));
    const message = encodeXcmp({ type, code, identifier: 0, sequence: 0, data: quote });
    this.counters.xcmpSent++;
    this.sender.sendPacket(dst, message, { nextHeader: NextHeader.XCMP });
  }
}

/** Whether any destination node is the broadcast HID (nobody is told about a segment's silence). */
export function isBroadcastDestination(packet: Buffer): boolean {
  const dnode = packet[XipOffset.DST_NODES]!;
  for (let i = 0; i < dnode; i++) {
    const at = XipOffset.NODES + i * XIP_NODE_LENGTH;
    if (packet.readUInt32BE(at) === XidType.HID && BROADCAST_HID.id.compare(packet, at + 4, at + 24) === 0) return true;
  }
  return false;
}
