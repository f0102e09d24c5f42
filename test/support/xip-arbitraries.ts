/**
 * fast-check arbitraries for XIP input from links: packets built by shared/xip-header.ts
 * around DAGs made of XIDs the receiving network knows (its HIDs, ADs, bound SIDs, the
 * broadcast HID, well-known SIDs) and XIDs nobody knows, carrying DGRAM, STREAM, CHUNK
 * or XCMP payloads — then mutated: bytes overwritten, header fields set, cut short,
 * lengthened, or replaced by noise. Valid packets reach deep; their mutations find the
 * corners.
 *
 * `serviceMessages` adds what the services behind the transports take: XHCP beacons and
 * solicitations, xroute messages, HID-move notices and acks, name-service requests,
 * CHUNK requests and forged fragments, and STREAM handshakes carrying mover control
 * messages, each well-formed (signed where it is signed) toward the service's DAG, and
 * mutated at its own layer before the packet's mutations.
 */
import { randomBytes } from 'node:crypto';
import fc from 'fast-check';
import { ChunkKind, encodeMessage, MessageType, type ControlMessage } from '../../mover/control-messages.js';
import { Dag } from '../../shared/dag.js';
import { Identity } from '../../shared/identity.js';
import { encodeMobility, MobilityType } from '../../shared/mobility-message.js';
import { sealMoveAck, sealMoveNotice, type MoveNotice } from '../../shared/move-notice.js';
import { encodeXip, NextHeader, XipOffset } from '../../shared/xip-header.js';
import { BROADCAST_HID, WellKnownSid, Xid, XidType } from '../../shared/xid.js';
import { ChunkOp, encodeChunkRequest, writeChunkDataHeader, CHUNK_DATA_HEADER_LENGTH } from '../../xianet/chunk/chunk-messages.js';
import { sealNameRecord } from '../../xianet/names/name-record.js';
import { encodeNsMessage, NsType } from '../../xianet/names/xns-message.js';
import { TransportType } from '../../xianet/transport-header.js';
import { encodeXcmp, XcmpType } from '../../xianet/xcmp.js';
import { encodeBeacon, encodeSolicit } from '../../xianet/xhcp.js';
import { encodeHello, encodeHidMoved, encodeHostRegister, encodeRegisterAck } from '../../xianet/xroute-message.js';
import { SegmentWriter } from '../../xianet/xstream/stream-segment.js';

const bytes = (max: number): fc.Arbitrary<Buffer> => fc.uint8Array({ maxLength: max }).map((b) => Buffer.from(b));

/** An XID of any type with random bits (nobody's). */
export const strangerXid: fc.Arbitrary<Xid> = fc
  .tuple(fc.constantFrom<number>(XidType.AD, XidType.HID, XidType.CID, XidType.SID, XidType.IP, 0x99), fc.uint8Array({ minLength: 20, maxLength: 20 }))
  .map(([type, id]) => Xid.of(type, Buffer.from(id)));

/** DAGs over `known` XIDs (and strangers): chains, host addresses, and single nodes. */
export function dagOf(known: readonly Xid[]): fc.Arbitrary<Dag> {
  const xid = fc.oneof({ weight: 4, arbitrary: fc.constantFrom(...known, BROADCAST_HID, WellKnownSid.XHCP, WellKnownSid.XROUTE) }, { weight: 1, arbitrary: strangerXid });
  const chain = fc.array(xid, { minLength: 1, maxLength: 5 }).map((xids) => {
    try {
      return Dag.chain(...xids);
    } catch {
      return Dag.chain(xids[0]!);
    }
  });
  const host = fc.tuple(xid, xid, fc.option(xid)).map(([ad, hid, sid]) => {
    try {
      return Dag.hostAddress(ad, hid, sid ?? undefined);
    } catch {
      return Dag.chain(hid);
    }
  });
  return fc.oneof(chain, host);
}

/** A STREAM segment: header then a few frames, well-formed or not. */
export const streamSegment: fc.Arbitrary<Buffer> = fc
  .tuple(
    fc.constantFrom(1, 1, 1, 0, 2),
    fc.uint8Array({ minLength: 8, maxLength: 8 }),
    fc.integer({ min: 0, max: 2 ** 32 }),
    fc.array(
      fc.oneof(
        fc.constant(Buffer.from([0x01])),
        fc.tuple(fc.integer({ min: 0, max: 1 }), fc.integer({ min: 0, max: 2 ** 40 })).map(([role, max]) => {
          const b = Buffer.alloc(8);
          b[0] = 0x20;
          b[1] = role;
          b.writeUIntBE(max, 2, 6);
          return b;
        }),
        fc.tuple(fc.integer({ min: 0, max: 2 ** 30 }), bytes(64), fc.boolean()).map(([offset, data, fin]) => {
          const b = Buffer.alloc(11 + data.length);
          b[0] = fin ? 0x09 : 0x08;
          b.writeUIntBE(offset, 1, 6);
          b.writeUInt32BE(data.length, 7);
          data.copy(b, 11);
          return b;
        }),
        fc.array(fc.tuple(fc.integer({ min: 0, max: 2 ** 20 }), fc.integer({ min: 1, max: 1000 })), { maxLength: 4 }).map((ranges) => {
          const b = Buffer.alloc(2 + 12 * ranges.length);
          b[0] = 0x02;
          b[1] = ranges.length;
          ranges.forEach(([start, length], i) => {
            // Every other range reversed: the decoder must refuse those, not trip on them.
            b.writeUIntBE(i % 2 === 0 ? start : start + length, 2 + 12 * i, 6);
            b.writeUIntBE(i % 2 === 0 ? start + length : start, 2 + 12 * i + 6, 6);
          });
          return b;
        }),
        fc.tuple(fc.constantFrom(0x04, 0x10, 0x1a, 0x1b), bytes(10)).map(([type, rest]) => Buffer.concat([Buffer.from([type]), rest])),
        bytes(12),
      ),
      { maxLength: 4 },
    ),
  )
  .map(([version, cid, pn, frames]) => {
    const head = Buffer.alloc(15);
    head[0] = version;
    Buffer.from(cid).copy(head, 1);
    head.writeUIntBE(pn, 9, 6);
    return Buffer.concat([head, ...frames]);
  });

/** A payload and the next header it belongs under. */
const payload: fc.Arbitrary<{ nextHeader: number; payload: Buffer }> = fc.oneof(
  bytes(200).map((data) => ({ nextHeader: NextHeader.TRANSPORT, payload: Buffer.concat([Buffer.from([TransportType.DGRAM]), data]) })),
  streamSegment.map((segment) => ({ nextHeader: NextHeader.TRANSPORT, payload: Buffer.concat([Buffer.from([TransportType.STREAM]), segment]) })),
  bytes(120).map((data) => ({ nextHeader: NextHeader.TRANSPORT, payload: Buffer.concat([Buffer.from([TransportType.CHUNK]), data]) })),
  fc
    .tuple(fc.constantFrom(XcmpType.ECHO, XcmpType.ECHO_REPLY, XcmpType.UNREACHABLE, XcmpType.TIME_EXCEEDED, XcmpType.REDIRECT, 42), fc.integer({ min: 0, max: 255 }), fc.integer({ min: 0, max: 0xffff }), bytes(200))
    .map(([type, code, id, data]) => ({ nextHeader: NextHeader.XCMP, payload: encodeXcmp({ type, code, identifier: id, sequence: id ^ 0x5a5a, data }) })),
  fc.tuple(fc.integer({ min: 0, max: 255 }), bytes(100)).map(([nextHeader, data]) => ({ nextHeader, payload: data })),
);

/** A service's message, as the transport payload of a packet toward `dst`. */
export interface ServiceMessage {
  service: 'xhcp' | 'xroute' | 'mobility' | 'names' | 'chunk' | 'mover';
  dst: Dag;
  payload: Buffer;
}

/** Where a network's services are, and what they know: for `serviceMessages`. */
export interface ServiceTargets {
  ad: Xid;
  /** The gateway router's HID (notices, registrations and solicitations go to it). */
  routerHid: Xid;
  /** The name server's DAG. */
  nameServer?: Dag;
  /** DAGs of published chunks (requests for them are served) and their CIDs. */
  chunks?: Dag[];
  /** DAGs where a mover receiver listens (`xmig recv`). */
  migration?: Dag[];
}

const dgram = (data: Buffer): Buffer => Buffer.concat([Buffer.of(TransportType.DGRAM), data]);

/** One STREAM segment: a HANDSHAKE init and a STREAM frame at offset 0 carrying `data` (what a client could send first). */
function handshakeWithData(data: Buffer): Buffer {
  const writer = new SegmentWriter(data.length + 64, 0, randomBytes(8), 0);
  writer.handshake(0, 1 << 20);
  writer.stream(0, data, false);
  return writer.buffer.subarray(0, writer.length);
}

/**
 * Genuine messages for every service of `targets` (signatures made by fresh keys, as
 * anyone may mint; some claim the network's own AD and router), each transport payload
 * ready to go toward its service's DAG. About 80 of them; mutate with `serviceMutation`.
 */
export function serviceMessages(targets: ServiceTargets): ServiceMessage[] {
  const out: ServiceMessage[] = [];
  const stranger = (): Identity => Identity.generate();
  const { ad, routerHid } = targets;
  const now = Date.now();
  // XHCP: beacons (unsigned, and signed by a key that is not the AD's) and solicitations.
  const xhcp = [Dag.chain(BROADCAST_HID, WellKnownSid.XHCP), Dag.chain(routerHid, WellKnownSid.XHCP)];
  const beacon = { seq: 5, ad, gatewayHid: routerHid, timestamp: now, linkId: 'ab/0', nameServer: targets.nameServer };
  for (const dst of xhcp) {
    out.push({ service: 'xhcp', dst, payload: dgram(encodeBeacon(beacon)) });
    out.push({ service: 'xhcp', dst, payload: dgram(encodeBeacon({ ...beacon, seq: 2 ** 31 }, stranger())) });
    out.push({ service: 'xhcp', dst, payload: dgram(encodeSolicit(stranger().xid(XidType.HID))) });
  }
  // xroute: HELLOs, registrations of fresh keys with this router, acks, HID_MOVED.
  const xroute = [Dag.chain(routerHid, WellKnownSid.XROUTE), Dag.chain(BROADCAST_HID, WellKnownSid.XROUTE)];
  const vm = stranger();
  const notice = (key: Identity, seq: number): Buffer =>
    sealMoveNotice(
      {
        hid: key.xid(XidType.HID),
        newAd: ad,
        newRouterHid: routerHid,
        newLinkId: 'ab/1',
        oldAd: stranger().xid(XidType.AD),
        oldRouterHid: stranger().xid(XidType.HID),
        oldLinkId: 'cd/0',
        seq,
        timestamp: now,
      } satisfies MoveNotice,
      key,
    );
  for (const dst of xroute) {
    const host = stranger();
    const router = stranger();
    out.push({ service: 'xroute', dst, payload: dgram(encodeHello({ hid: host.xid(XidType.HID), ad, role: 'host', port: 0, timestamp: now }, host)) });
    out.push({ service: 'xroute', dst, payload: dgram(encodeHello({ hid: router.xid(XidType.HID), ad: undefined, role: 'router', port: 3, timestamp: now }, router)) });
    for (let i = 0; i < 3; i++) {
      const key = stranger();
      out.push({ service: 'xroute', dst, payload: dgram(encodeHostRegister({ hid: key.xid(XidType.HID), gatewayHid: routerHid, ad, linkId: '', seq: 1, timestamp: now }, key)) });
    }
    out.push({ service: 'xroute', dst, payload: dgram(encodeRegisterAck({ hid: host.xid(XidType.HID), gatewayHid: routerHid, seq: 1 }, router)) });
    out.push({ service: 'xroute', dst, payload: dgram(encodeHidMoved(vm.xid(XidType.HID), notice(vm, 2))) });
  }
  // HID-move notices (a fresh key's own, so they verify), forwarded ones, acks.
  const mobility = Dag.chain(routerHid, WellKnownSid.MOBILITY);
  for (let i = 0; i < 4; i++) {
    const key = stranger();
    out.push({ service: 'mobility', dst: mobility, payload: dgram(encodeMobility(MobilityType.NOTICE, notice(key, 1 + i))) });
    out.push({ service: 'mobility', dst: mobility, payload: dgram(encodeMobility(MobilityType.FORWARDED, notice(key, 10 + i))) });
  }
  out.push({ service: 'mobility', dst: mobility, payload: dgram(encodeMobility(MobilityType.ACK, sealMoveAck({ hid: vm.xid(XidType.HID), seq: 1, routerHid }, stranger()))) });
  // The name service: registrations (records sealed by their owners), queries, answers.
  if (targets.nameServer) {
    const dst = targets.nameServer;
    const dag = Dag.hostAddress(ad, vm.xid(XidType.HID));
    for (let i = 0; i < 4; i++) {
      const owner = stranger();
      const name = `fuzz-${i}.test`;
      const record = sealNameRecord({ name, dag, seq: 1, timestamp: now, migrated: i % 2 === 1 }, owner);
      out.push({ service: 'names', dst, payload: dgram(encodeNsMessage({ type: NsType.REGISTER, flags: i % 2, name, dag: dag.toDagString(), record, requestId: i + 1 })) });
    }
    out.push({ service: 'names', dst, payload: dgram(encodeNsMessage({ type: NsType.QUERY, flags: 0, name: 'fuzz-0.test', requestId: 7 })) });
    out.push({ service: 'names', dst, payload: dgram(encodeNsMessage({ type: NsType.RQUERY, flags: 0, dag: dag.toDagString(), requestId: 8 })) });
    out.push({ service: 'names', dst, payload: dgram(encodeNsMessage({ type: NsType.RESPONSE_ERROR, flags: 0, error: 'no', requestId: 9 })) });
  }
  // CHUNK: requests for published chunks and for none, and forged fragments.
  for (const dst of targets.chunks ?? []) {
    const cid = dst.sink.id;
    out.push({ service: 'chunk', dst, payload: encodeChunkRequest({ requestId: 1, cid, offset: 0, length: 0, maxFragment: 1200 }) });
    out.push({ service: 'chunk', dst, payload: encodeChunkRequest({ requestId: 2, cid, offset: 100, length: 500, maxFragment: 64 }) });
    const fragment = Buffer.alloc(CHUNK_DATA_HEADER_LENGTH + 200);
    fragment[0] = TransportType.CHUNK;
    writeChunkDataHeader(fragment, 1, { requestId: 1, cid, total: 1 << 20, offset: 4096 }, ChunkOp.DATA);
    out.push({ service: 'chunk', dst, payload: fragment });
  }
  // The mover's control messages, each first in a new STREAM to a receiver.
  const cid = randomBytes(20);
  const moves: ControlMessage[] = [
    { type: MessageType.HELLO, session: randomBytes(16), mode: 0, source: Dag.hostAddress(ad, vm.xid(XidType.HID)).toString() },
    { type: MessageType.WELCOME, session: randomBytes(16), nextRound: 0 },
    { type: MessageType.OFFER, round: 0, chunks: [{ kind: ChunkKind.FETCH, length: 100, cid }, { kind: ChunkKind.ZERO, length: 4096 }] },
    { type: MessageType.ACK, round: 3 },
    { type: MessageType.REQUEST, cids: [cid] },
    { type: MessageType.DATA, cid, data: [randomBytes(64)] },
    { type: MessageType.DONE, rounds: 1, bytes: 4196 },
    { type: MessageType.ERROR, message: 'fuzz' },
    { type: MessageType.KEEPALIVE },
  ];
  for (const dst of targets.migration ?? []) {
    for (const message of moves) out.push({ service: 'mover', dst, payload: Buffer.concat([Buffer.of(TransportType.STREAM), handshakeWithData(encodeMessage(message))]) });
  }
  return out;
}

/** A mutation at a service message's own layer (after its transport byte): as is, cut, bit-flipped, bytes inserted. */
const serviceMutation: fc.Arbitrary<(payload: Buffer) => Buffer> = fc.oneof(
  { weight: 3, arbitrary: fc.constant((p: Buffer) => p) },
  { weight: 2, arbitrary: fc.nat().map((n) => (p: Buffer) => p.subarray(0, 1 + (n % p.length))) },
  {
    weight: 3,
    arbitrary: fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 7 })), { minLength: 1, maxLength: 4 }).map((flips) => (p: Buffer) => {
      const b = Buffer.from(p);
      for (const [at, bit] of flips) if (b.length > 1) b[1 + (at % (b.length - 1))]! ^= 1 << bit;
      return b;
    }),
  },
  {
    weight: 1,
    arbitrary: fc.tuple(fc.nat(), fc.uint8Array({ minLength: 1, maxLength: 16 })).map(([at, bytes]) => (p: Buffer) => {
      const cut = 1 + (at % p.length);
      return Buffer.concat([p.subarray(0, cut), Buffer.from(bytes), p.subarray(cut)]);
    }),
  },
);

/** A packet carrying one of `messages` (mutated at its layer) toward its service, from a DAG over `known`. */
export function servicePacket(known: readonly Xid[], messages: readonly ServiceMessage[]): fc.Arbitrary<Buffer> {
  return fc
    .tuple(fc.constantFrom(...messages), serviceMutation, dagOf(known), fc.integer({ min: 1, max: 255 }))
    .map(([message, mutate, src, hopLimit]) => encodeXip({ dst: message.dst, src, nextHeader: NextHeader.TRANSPORT, hopLimit, payload: mutate(message.payload) }));
}

/**
 * A valid XIP packet toward and from DAGs over `known`; half of them toward one of
 * `services` (the DAGs of bound SIDs, so that transports see well-formed headers); with
 * `messages`, as many again carrying a service's message (see `serviceMessages`).
 */
export function xipPacket(known: readonly Xid[], services: readonly Dag[] = [], messages: readonly ServiceMessage[] = []): fc.Arbitrary<Buffer> {
  const dag = dagOf(known);
  const dst = services.length > 0 ? fc.oneof(dag, fc.constantFrom(...services)) : dag;
  const generic = fc
    .tuple(dst, dag, payload, fc.integer({ min: 0, max: 255 }), fc.option(fc.integer({ min: 0, max: 4 })))
    .map(([dst, src, p, hopLimit, last]) =>
      encodeXip({ dst, src, nextHeader: p.nextHeader, hopLimit, payload: p.payload, last: last !== null && last < dst.length - 1 ? last : -1 }),
    );
  return messages.length > 0 ? fc.oneof(generic, servicePacket(known, messages)) : generic;
}

/** A mutation of a packet (the identity included): what a link may hand a node. */
export const mutation: fc.Arbitrary<(packet: Buffer) => Buffer> = fc.oneof(
  { weight: 3, arbitrary: fc.constant((packet: Buffer) => packet) },
  {
    weight: 3,
    arbitrary: fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 6 }).map((writes) => (packet: Buffer) => {
      const out = Buffer.from(packet);
      for (const [at, value] of writes) if (out.length > 0) out[at % out.length] = value;
      return out;
    }),
  },
  {
    weight: 2,
    arbitrary: fc
      .tuple(fc.constantFrom(XipOffset.VERSION, XipOffset.NEXT_HEADER, XipOffset.PAYLOAD_LENGTH, XipOffset.PAYLOAD_LENGTH + 1, XipOffset.HOP_LIMIT, XipOffset.DST_NODES, XipOffset.SRC_NODES, XipOffset.LAST), fc.integer({ min: 0, max: 255 }))
      .map(([at, value]) => (packet: Buffer) => {
        const out = Buffer.from(packet);
        if (at < out.length) out[at] = value;
        return out;
      }),
  },
  { weight: 2, arbitrary: fc.nat().map((cut) => (packet: Buffer) => packet.subarray(0, cut % (packet.length + 1))) },
  { weight: 1, arbitrary: bytes(64).map((extra) => (packet: Buffer) => Buffer.concat([packet, extra])) },
  { weight: 1, arbitrary: bytes(400).map((noise) => () => noise) },
);

/**
 * A well-formed XIP packet of exactly `size` bytes (≥ 64: two one-node DAGs), its payload
 * filled with `fill`: what a link test sends where the receiving socket may have UDP_GRO
 * and so splits what it gets by the packets' own lengths.
 */
export function xipOfSize(size: number, fill = 0): Buffer {
  const hid = Xid.of(XidType.HID, Buffer.alloc(20, 1));
  const packet = encodeXip({ dst: Dag.chain(hid), src: Dag.chain(hid), nextHeader: NextHeader.NONE, payload: Buffer.alloc(Math.max(0, size - 64), fill) });
  if (packet.length !== size) throw new Error(`xipOfSize: ${size} bytes is less than an XIP header of two one-node DAGs (64)`);
  return packet;
}
