/**
 * The XIP header (xia-core clicknet/xia.h `click_xia`, Wireshark packet-xip.c):
 *
 *   off len field
 *   0   1   ver     version (1)
 *   1   1   nxt     next header: 59 none, 60 transport, 61 XCMP
 *   2   2   plen    payload length, big-endian (bytes after the header)
 *   4   1   hlim    hop limit
 *   5   1   dnode   destination DAG nodes
 *   6   1   snode   source DAG nodes
 *   7   1   last    index of the last visited destination node; entry = 0x7e
 *   8   28n nodes   destination then source: type(4, BE) id(20) edges(4)
 *
 * An edge byte is the index of the node it points to (low 7 bits) and a visited
 * flag (high bit); 0x7f is an unused slot. The sink's slots hold the entry's edges.
 *
 * Two ways in: `decodeXip` builds DAG objects (control plane, tools, tests);
 * the `xip*` accessors read and patch fields in place (forwarding, which must not
 * re-encode whole packets).
 */
import { Dag, DAG_MAX_EDGES, DAG_MAX_NODES } from './dag.js';
import { MalformedPacketError, XmigError } from './errors.js';
import { Xid, XID_WIRE_LENGTH } from './xid.js';

export const XIP_VERSION = 1;
export const XIP_BASE_LENGTH = 8;
export const XIP_NODE_LENGTH = 28;
export const XIP_EDGE_OFFSET = XID_WIRE_LENGTH;
export const XIP_EDGE_UNUSED = 0x7f;
export const XIP_EDGE_VISITED = 0x80;
export const XIP_EDGE_INDEX_MASK = 0x7f;
/** `last` at the entry node (XIA-for-Linux's XIA_ENTRY_NODE_INDEX, what Wireshark shows as the entry). */
export const XIP_LAST_ENTRY = 0x7e;
/** xia-core's Click elements write -1 for "at the entry"; accepted on input. */
export const XIP_LAST_ENTRY_CLICK = 0xff;
export const XIP_DEFAULT_HOP_LIMIT = 250;
export const XIP_MAX_PAYLOAD = 0xffff;

export const XipOffset = {
  VERSION: 0,
  NEXT_HEADER: 1,
  PAYLOAD_LENGTH: 2,
  HOP_LIMIT: 4,
  DST_NODES: 5,
  SRC_NODES: 6,
  LAST: 7,
  NODES: 8,
} as const;

export const NextHeader = {
  NONE: 59,
  TRANSPORT: 60,
  XCMP: 61,
} as const;

export interface XipPacket {
  nextHeader: number;
  hopLimit: number;
  /** Index of the last visited destination node, -1 at the entry. */
  last: number;
  dst: Dag;
  src: Dag;
  payload: Buffer;
  /** Per destination node, the visited flags of its edge slots (decoded packets only). */
  visited?: ReadonlyArray<readonly boolean[]>;
}

export interface XipFields {
  nextHeader?: number;
  hopLimit?: number;
  last?: number;
  dst: Dag;
  src: Dag;
  payload?: Uint8Array;
}

export function xipHeaderLength(dstNodes: number, srcNodes: number): number {
  return XIP_BASE_LENGTH + XIP_NODE_LENGTH * (dstNodes + srcNodes);
}

function writeDag(buffer: Buffer, offset: number, dag: Dag): void {
  const n = dag.nodes.length;
  for (let i = 0; i < n; i++) {
    const at = offset + i * XIP_NODE_LENGTH;
    dag.nodes[i]!.write(buffer, at);
    const edges = i === n - 1 ? dag.entry : dag.edges[i]!;
    for (let e = 0; e < DAG_MAX_EDGES; e++) {
      buffer[at + XIP_EDGE_OFFSET + e] = e < edges.length ? edges[e]! : XIP_EDGE_UNUSED;
    }
  }
}

/** Encodes a packet: header, both DAGs, payload, in one new buffer. */
export function encodeXip(fields: XipFields): Buffer {
  const payload = fields.payload ?? Buffer.alloc(0);
  const headerLength = encodeXipHeaderInto(undefined, fields, payload.length);
  const packet = Buffer.allocUnsafe(headerLength + payload.length);
  encodeXipHeaderInto(packet, fields, payload.length);
  packet.set(payload, headerLength);
  return packet;
}

/**
 * Writes the header into `target` (when given) and returns its length; with no
 * target only the length is computed. Lets a sender build header and payload in
 * one buffer without copying the payload twice.
 */
export function encodeXipHeaderInto(target: Buffer | undefined, fields: XipFields, payloadLength: number): number {
  const { dst, src } = fields;
  const length = xipHeaderLength(dst.length, src.length);
  if (!target) return length;
  if (payloadLength > XIP_MAX_PAYLOAD) {
    throw new XmigError('ERR_XIP_MALFORMED', `payload of ${payloadLength} bytes exceeds the XIP maximum of ${XIP_MAX_PAYLOAD}`);
  }
  const last = fields.last ?? -1;
  if (last < -1 || last >= dst.length) {
    throw new XmigError('ERR_XIP_MALFORMED', `last node ${last} is outside the ${dst.length}-node destination DAG`);
  }
  target[XipOffset.VERSION] = XIP_VERSION;
  target[XipOffset.NEXT_HEADER] = fields.nextHeader ?? NextHeader.NONE;
  target.writeUInt16BE(payloadLength, XipOffset.PAYLOAD_LENGTH);
  target[XipOffset.HOP_LIMIT] = fields.hopLimit ?? XIP_DEFAULT_HOP_LIMIT;
  target[XipOffset.DST_NODES] = dst.length;
  target[XipOffset.SRC_NODES] = src.length;
  target[XipOffset.LAST] = last < 0 ? XIP_LAST_ENTRY : last;
  writeDag(target, XipOffset.NODES, dst);
  writeDag(target, XipOffset.NODES + dst.length * XIP_NODE_LENGTH, src);
  return length;
}

/**
 * Checks the fixed fields of a packet in place and returns its header length.
 * Every later in-place access relies on these checks; throws MalformedPacketError.
 */
export function checkXip(packet: Buffer): number {
  if (packet.length < XIP_BASE_LENGTH) {
    throw new MalformedPacketError(`packet of ${packet.length} bytes is shorter than the ${XIP_BASE_LENGTH}-byte XIP header`);
  }
  const version = packet[XipOffset.VERSION]!;
  if (version !== XIP_VERSION) throw new MalformedPacketError(`XIP version ${version} is not ${XIP_VERSION}`);
  const dnode = packet[XipOffset.DST_NODES]!;
  const snode = packet[XipOffset.SRC_NODES]!;
  if (dnode === 0 || dnode > DAG_MAX_NODES) {
    throw new MalformedPacketError(`destination DAG has ${dnode} nodes; XIP allows 1..${DAG_MAX_NODES}`);
  }
  if (snode === 0 || snode > DAG_MAX_NODES) {
    throw new MalformedPacketError(`source DAG has ${snode} nodes; XIP allows 1..${DAG_MAX_NODES}`);
  }
  const headerLength = xipHeaderLength(dnode, snode);
  if (packet.length < headerLength) {
    throw new MalformedPacketError(
      `header with ${dnode}+${snode} nodes needs ${headerLength} bytes, the packet has ${packet.length}`,
    );
  }
  const plen = packet.readUInt16BE(XipOffset.PAYLOAD_LENGTH);
  if (headerLength + plen > packet.length) {
    throw new MalformedPacketError(`payload length ${plen} runs past the end of the ${packet.length}-byte packet`);
  }
  const last = packet[XipOffset.LAST]!;
  if (last !== XIP_LAST_ENTRY && last !== XIP_LAST_ENTRY_CLICK && last >= dnode) {
    throw new MalformedPacketError(`last node ${last} is outside the ${dnode}-node destination DAG`);
  }
  // Edges are what forwarding follows: each must name a node of its own DAG.
  for (const [count, base] of [
    [dnode, XipOffset.NODES],
    [snode, XipOffset.NODES + dnode * XIP_NODE_LENGTH],
  ] as const) {
    for (let i = 0; i < count; i++) {
      const at = base + i * XIP_NODE_LENGTH + XIP_EDGE_OFFSET;
      for (let e = 0; e < DAG_MAX_EDGES; e++) {
        const index = packet[at + e]! & XIP_EDGE_INDEX_MASK;
        if (index !== XIP_EDGE_UNUSED && index >= count) {
          const which = base === XipOffset.NODES ? 'destination' : 'source';
          throw new MalformedPacketError(`${which} node ${i} edge ${e} points to node ${index} of ${count}`);
        }
      }
    }
  }
  return headerLength;
}

function readDag(packet: Buffer, offset: number, count: number, which: string): { dag: Dag; visited: boolean[][] } {
  const nodes: Xid[] = [];
  const edges: number[][] = [];
  const visited: boolean[][] = [];
  let entry: number[] = [];
  for (let i = 0; i < count; i++) {
    const at = offset + i * XIP_NODE_LENGTH;
    nodes.push(Xid.read(packet, at));
    const list: number[] = [];
    const flags: boolean[] = [];
    for (let e = 0; e < DAG_MAX_EDGES; e++) {
      const byte = packet[at + XIP_EDGE_OFFSET + e]!;
      const index = byte & XIP_EDGE_INDEX_MASK;
      if (index === XIP_EDGE_UNUSED) continue;
      list.push(index);
      flags.push((byte & XIP_EDGE_VISITED) !== 0);
    }
    visited.push(flags);
    if (i === count - 1) {
      entry = list;
      edges.push([]);
    } else {
      edges.push(list);
    }
  }
  try {
    return { dag: Dag.create(nodes, edges, entry), visited };
  } catch (error) {
    throw new MalformedPacketError(`${which} DAG: ${(error as Error).message}`, { cause: error });
  }
}

/** Decodes a whole packet into DAG objects; throws MalformedPacketError on bad input. */
export function decodeXip(packet: Buffer): XipPacket {
  const headerLength = checkXip(packet);
  const dnode = packet[XipOffset.DST_NODES]!;
  const snode = packet[XipOffset.SRC_NODES]!;
  const dst = readDag(packet, XipOffset.NODES, dnode, 'destination');
  const src = readDag(packet, XipOffset.NODES + dnode * XIP_NODE_LENGTH, snode, 'source');
  return {
    nextHeader: packet[XipOffset.NEXT_HEADER]!,
    hopLimit: packet[XipOffset.HOP_LIMIT]!,
    last: xipLast(packet),
    dst: dst.dag,
    src: src.dag,
    payload: packet.subarray(headerLength, headerLength + packet.readUInt16BE(XipOffset.PAYLOAD_LENGTH)),
    visited: dst.visited,
  };
}

// In-place accessors. Callers have run checkXip on the packet first.

/** Index of the last visited destination node, -1 at the entry. */
export function xipLast(packet: Buffer): number {
  const last = packet[XipOffset.LAST]!;
  return last === XIP_LAST_ENTRY || last === XIP_LAST_ENTRY_CLICK ? -1 : last;
}

export function setXipLast(packet: Buffer, last: number): void {
  packet[XipOffset.LAST] = last < 0 ? XIP_LAST_ENTRY : last;
}

export function xipDstNodes(packet: Buffer): number {
  return packet[XipOffset.DST_NODES]!;
}

export function xipSrcNodes(packet: Buffer): number {
  return packet[XipOffset.SRC_NODES]!;
}

export function xipHopLimit(packet: Buffer): number {
  return packet[XipOffset.HOP_LIMIT]!;
}

export function setXipHopLimit(packet: Buffer, hopLimit: number): void {
  packet[XipOffset.HOP_LIMIT] = hopLimit;
}

export function xipNextHeader(packet: Buffer): number {
  return packet[XipOffset.NEXT_HEADER]!;
}

export function xipPayloadLength(packet: Buffer): number {
  return packet.readUInt16BE(XipOffset.PAYLOAD_LENGTH);
}

/** Offset of destination node `index` (0-based) in the packet. */
export function xipDstNodeOffset(index: number): number {
  return XipOffset.NODES + index * XIP_NODE_LENGTH;
}

/** Offset of source node `index` in the packet. */
export function xipSrcNodeOffset(packet: Buffer, index: number): number {
  return XipOffset.NODES + (packet[XipOffset.DST_NODES]! + index) * XIP_NODE_LENGTH;
}

/** Offset of the edge bytes that leave destination node `from` (-1: the entry, kept in the sink's slots). */
export function xipDstEdgesOffset(packet: Buffer, from: number): number {
  const node = from < 0 ? packet[XipOffset.DST_NODES]! - 1 : from;
  return XipOffset.NODES + node * XIP_NODE_LENGTH + XIP_EDGE_OFFSET;
}

export function xipHeaderLengthOf(packet: Buffer): number {
  return xipHeaderLength(packet[XipOffset.DST_NODES]!, packet[XipOffset.SRC_NODES]!);
}

/** The payload as a view into the packet (no copy). */
export function xipPayload(packet: Buffer): Buffer {
  const start = xipHeaderLengthOf(packet);
  return packet.subarray(start, start + xipPayloadLength(packet));
}

/** The destination DAG of an already checked packet (allocates: control plane only). */
export function xipDstDag(packet: Buffer): Dag {
  return readDag(packet, XipOffset.NODES, xipDstNodes(packet), 'destination').dag;
}

/** The source DAG of an already checked packet (allocates: control plane only). */
export function xipSrcDag(packet: Buffer): Dag {
  const dnode = xipDstNodes(packet);
  return readDag(packet, XipOffset.NODES + dnode * XIP_NODE_LENGTH, xipSrcNodes(packet), 'source').dag;
}

/**
 * The XIP packets of one UDP payload that may hold several back to back. A link that
 * sends with UDP GSO (xianet/udp-batch.ts) hands the kernel several packets in one
 * datagram; a capture on the sending host (or on a veth or bridge, which pass GSO
 * packets on whole) sees them so, and so does a receiving socket with UDP_GRO, to which
 * the kernel hands such a run (or one it coalesced) whole: each XIP packet's own lengths
 * (its node counts and payload length) say where the next one starts. A payload whose
 * lengths do not add up exactly is returned whole, for the decoder to call malformed.
 */
export function splitXipDatagram(payload: Buffer): Buffer[] {
  const packets: Buffer[] = [];
  let at = 0;
  while (payload.length - at >= XIP_BASE_LENGTH) {
    const length = xipPacketLengthAt(payload, at);
    if (length < 0 || length > payload.length - at) break;
    packets.push(payload.subarray(at, at + length));
    at += length;
  }
  return at === payload.length && packets.length > 0 ? packets : [payload];
}

/**
 * The stride of `datagram` as a run: XIP packets back to back, each as long as the first
 * but the last (no longer), every header byte for byte the first's but the payload
 * length — what a sender's UDP GSO run of one flow's packets is. 0 when it is not one:
 * a single packet, lengths that do not add up, or any header that differs.
 */
export function xipRunStride(datagram: Buffer): number {
  const stride = xipPacketLengthAt(datagram, 0);
  if (stride <= 0 || stride >= datagram.length) return 0;
  const headerLength = xipHeaderLength(datagram[XipOffset.DST_NODES]!, datagram[XipOffset.SRC_NODES]!);
  for (let at = stride; at < datagram.length; at += stride) {
    const length = xipPacketLengthAt(datagram, at);
    const left = datagram.length - at;
    if (length !== (left < stride ? left : stride) || left < headerLength) return 0;
    if (datagram[at + XipOffset.VERSION] !== datagram[XipOffset.VERSION] || datagram[at + XipOffset.NEXT_HEADER] !== datagram[XipOffset.NEXT_HEADER]) return 0;
    if (datagram.compare(datagram, XipOffset.HOP_LIMIT, headerLength, at + XipOffset.HOP_LIMIT, at + headerLength) !== 0) return 0;
  }
  return stride;
}

/**
 * The length of the XIP packet that starts at `at` (header and payload, from its node
 * counts and payload length), or -1 where no XIP packet can start: fewer than a base
 * header's bytes, or another version. Lets a receiver see that a datagram holds exactly
 * one packet without splitting it.
 */
export function xipPacketLengthAt(payload: Buffer, at = 0): number {
  if (payload.length - at < XIP_BASE_LENGTH || payload[at + XipOffset.VERSION] !== XIP_VERSION) return -1;
  return xipHeaderLength(payload[at + XipOffset.DST_NODES]!, payload[at + XipOffset.SRC_NODES]!) + payload.readUInt16BE(at + XipOffset.PAYLOAD_LENGTH);
}
