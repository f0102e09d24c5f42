/**
 * fast-check arbitraries for XIP input from links: packets built by shared/xip-header.ts
 * around DAGs made of XIDs the receiving network knows (its HIDs, ADs, bound SIDs, the
 * broadcast HID, well-known SIDs) and XIDs nobody knows, carrying DGRAM, STREAM, CHUNK
 * or XCMP payloads — then mutated: bytes overwritten, header fields set, cut short,
 * lengthened, or replaced by noise. Valid packets reach deep; their mutations find the
 * corners.
 */
import fc from 'fast-check';
import { Dag } from '../../shared/dag.js';
import { encodeXip, NextHeader, XipOffset } from '../../shared/xip-header.js';
import { BROADCAST_HID, WellKnownSid, Xid, XidType } from '../../shared/xid.js';
import { TransportType } from '../../xianet/transport-header.js';
import { encodeXcmp, XcmpType } from '../../xianet/xcmp.js';

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

/**
 * A valid XIP packet toward and from DAGs over `known`; half of them toward one of
 * `services` (the DAGs of bound SIDs, so that transports see well-formed headers).
 */
export function xipPacket(known: readonly Xid[], services: readonly Dag[] = []): fc.Arbitrary<Buffer> {
  const dag = dagOf(known);
  const dst = services.length > 0 ? fc.oneof(dag, fc.constantFrom(...services)) : dag;
  return fc
    .tuple(dst, dag, payload, fc.integer({ min: 0, max: 255 }), fc.option(fc.integer({ min: 0, max: 4 })))
    .map(([dst, src, p, hopLimit, last]) =>
      encodeXip({ dst, src, nextHeader: p.nextHeader, hopLimit, payload: p.payload, last: last !== null && last < dst.length - 1 ? last : -1 }),
    );
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
