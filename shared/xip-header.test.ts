import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { Dag } from './dag.js';
import { MalformedPacketError } from './errors.js';
import {
  checkXip,
  decodeXip,
  encodeXip,
  NextHeader,
  setXipHopLimit,
  setXipLast,
  XIP_LAST_ENTRY,
  xipDstEdgesOffset,
  xipLast,
  xipPacketLengthAt,
  xipPayload,
  xipRunStride,
  XipOffset,
} from './xip-header.js';
import { Xid, XidType } from './xid.js';

const ad = Xid.parse('AD:1000000000000000000000000000000000000000');
const hid = Xid.parse('HID:2000000000000000000000000000000000000000');
const sid = Xid.parse('SID:3000000000000000000000000000000000000000');
const client = Dag.chain(ad, Xid.parse('HID:4000000000000000000000000000000000000000'));

describe('XIP header codec', () => {
  it('round-trips header fields, both DAGs and the payload', () => {
    const dst = Dag.hostAddress(ad, hid, sid);
    const packet = encodeXip({ dst, src: client, nextHeader: NextHeader.XCMP, hopLimit: 17, last: 0, payload: Buffer.from('ping') });
    expect(packet.length).toBe(8 + 28 * 5 + 4);
    const decoded = decodeXip(packet);
    expect(decoded.dst.equals(dst)).toBe(true);
    expect(decoded.src.equals(client)).toBe(true);
    expect(decoded.nextHeader).toBe(NextHeader.XCMP);
    expect(decoded.hopLimit).toBe(17);
    expect(decoded.last).toBe(0);
    expect(decoded.payload.toString()).toBe('ping');
  });

  it('lays out the fixed header as xia-core does', () => {
    const packet = encodeXip({ dst: Dag.chain(ad, hid), src: client, payload: Buffer.alloc(300) });
    expect(packet[XipOffset.VERSION]).toBe(1);
    expect(packet[XipOffset.NEXT_HEADER]).toBe(NextHeader.NONE);
    expect(packet.readUInt16BE(XipOffset.PAYLOAD_LENGTH)).toBe(300);
    expect(packet[XipOffset.HOP_LIMIT]).toBe(250);
    expect(packet[XipOffset.DST_NODES]).toBe(2);
    expect(packet[XipOffset.SRC_NODES]).toBe(2);
    expect(packet[XipOffset.LAST]).toBe(XIP_LAST_ENTRY);
    // node 0: AD, type big-endian, one edge to node 1, three unused slots
    expect(packet.readUInt32BE(8)).toBe(XidType.AD);
    expect([...packet.subarray(8 + 24, 8 + 28)]).toEqual([1, 0x7f, 0x7f, 0x7f]);
    // the sink (node 1) carries the entry's edges
    expect([...packet.subarray(8 + 28 + 24, 8 + 56)]).toEqual([0, 0x7f, 0x7f, 0x7f]);
  });

  it('reads xia-core Click packets whose last is -1', () => {
    const packet = encodeXip({ dst: Dag.chain(ad, hid), src: client });
    packet[XipOffset.LAST] = 0xff;
    expect(decodeXip(packet).last).toBe(-1);
  });

  it('patches last, hop limit and visited bits in place without touching the rest', () => {
    const packet = encodeXip({ dst: Dag.hostAddress(ad, hid, sid), src: client, payload: Buffer.from('data') });
    const before = Buffer.from(packet);
    checkXip(packet);
    setXipLast(packet, 1);
    setXipHopLimit(packet, 3);
    packet[xipDstEdgesOffset(packet, -1)]! |= 0x80;
    expect(xipLast(packet)).toBe(1);
    const decoded = decodeXip(packet);
    expect(decoded.hopLimit).toBe(3);
    expect(decoded.visited![2]).toEqual([true, false]);
    expect(decoded.dst.equals(Dag.hostAddress(ad, hid, sid))).toBe(true);
    expect(xipPayload(packet).toString()).toBe('data');
    let differing = 0;
    for (let i = 0; i < packet.length; i++) if (packet[i] !== before[i]) differing++;
    expect(differing).toBe(3);
  });
});

describe('malformed packets', () => {
  const good = encodeXip({ dst: Dag.hostAddress(ad, hid, sid), src: client, payload: Buffer.from('abc') });

  function failure(packet: Buffer): string {
    try {
      decodeXip(packet);
    } catch (error) {
      expect(error).toBeInstanceOf(MalformedPacketError);
      expect((error as MalformedPacketError).code).toBe('ERR_XIP_MALFORMED');
      return (error as Error).message;
    }
    return 'accepted';
  }

  it('rejects a truncated header', () => {
    expect(failure(good.subarray(0, 5))).toMatch(/shorter than the 8-byte/);
    expect(failure(good.subarray(0, 60))).toMatch(/needs 148 bytes/);
  });

  it('rejects node counts past the buffer or past the XIA limit', () => {
    const tooMany = Buffer.from(good);
    tooMany[XipOffset.DST_NODES] = 21;
    expect(failure(tooMany)).toMatch(/1\.\.20/);
    const pastEnd = Buffer.from(good);
    pastEnd[XipOffset.SRC_NODES] = 9;
    expect(failure(pastEnd)).toMatch(/needs .* bytes/);
  });

  it('rejects a payload length past the end', () => {
    const packet = Buffer.from(good);
    packet.writeUInt16BE(4, XipOffset.PAYLOAD_LENGTH);
    expect(failure(packet)).toMatch(/payload length 4/);
  });

  it('rejects edges to nodes that do not exist, cycles and a bad last', () => {
    const edge = Buffer.from(good);
    edge[8 + 24] = 9;
    expect(failure(edge)).toMatch(/points to node 9/);
    const cycle = Buffer.from(good);
    cycle[8 + 28 + 24] = 0; // HID -> AD while AD -> HID
    expect(failure(cycle)).toMatch(/destination DAG: .*cycle|sink/);
    const last = Buffer.from(good);
    last[XipOffset.LAST] = 5;
    expect(failure(last)).toMatch(/last node 5/);
    const version = Buffer.from(good);
    version[0] = 2;
    expect(failure(version)).toMatch(/version 2/);
  });

  it('never throws anything but MalformedPacketError on random input', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 0, maxLength: 400 }), (bytes) => {
        const packet = Buffer.from(bytes);
        if (packet.length > 0) packet[0] = 1; // reach past the version check most of the time
        try {
          decodeXip(packet);
        } catch (error) {
          if (!(error instanceof MalformedPacketError)) throw error;
        }
      }),
      { numRuns: 5000 },
    );
  });

  it('never throws anything but MalformedPacketError on mutated valid packets', () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.nat(good.length - 1), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 6 }),
        fc.nat(good.length),
        (flips, cut) => {
          const packet = Buffer.from(good);
          for (const [at, value] of flips) packet[at] = value;
          try {
            decodeXip(packet.subarray(0, cut));
          } catch (error) {
            if (!(error instanceof MalformedPacketError)) throw error;
          }
        },
      ),
      { numRuns: 5000 },
    );
  });

  it("reads a packet's length where one starts, and says -1 on any bytes where none can, never throwing", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), fc.nat(310), (bytes, at) => {
        const length = xipPacketLengthAt(Buffer.from(bytes), at);
        expect(length === -1 || length >= 8).toBe(true);
      }),
    );
    const packet = encodeXip({ dst: Dag.chain(Xid.random(XidType.HID)), src: Dag.chain(Xid.random(XidType.HID)), nextHeader: NextHeader.NONE, payload: Buffer.alloc(100) });
    expect(xipPacketLengthAt(packet)).toBe(packet.length);
    expect(xipPacketLengthAt(Buffer.concat([Buffer.alloc(3), packet]), 3)).toBe(packet.length);
  });
});

describe('xipRunStride (a GRO datagram of one flow: routed once)', () => {
  const dst = Dag.hostAddress(ad, hid, sid);
  const run = (sizes: number[], fill = 0): Buffer[] => sizes.map((n, i) => encodeXip({ dst, src: client, nextHeader: NextHeader.TRANSPORT, payload: Buffer.alloc(n, (fill + i) & 0xff) }));
  const header = run([0])[0]!.length;

  it('is the first packet\'s length when every packet is that long but a shorter last, headers alike but the payload length', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 1300 }), fc.integer({ min: 1, max: 63 }), fc.integer({ min: 0, max: 1300 }), (size, more, last) => {
        const packets = run([...Array<number>(more).fill(size), Math.min(size, last)]);
        expect(xipRunStride(Buffer.concat(packets))).toBe(header + size);
      }),
    );
  });

  it('is 0 for one packet, lengths that do not add up, a longer packet, or any header byte that differs', () => {
    expect(xipRunStride(run([500])[0]!)).toBe(0);
    expect(xipRunStride(Buffer.concat(run([500, 600])))).toBe(0);
    expect(xipRunStride(Buffer.concat(run([500, 400, 500])))).toBe(0);
    const joined = Buffer.concat(run([500, 500, 500]));
    expect(xipRunStride(joined.subarray(0, joined.length - 1))).toBe(0);
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 2 }), fc.nat(header - 1), fc.integer({ min: 1, max: 255 }), (which, at, delta) => {
        fc.pre(at !== XipOffset.PAYLOAD_LENGTH && at !== XipOffset.PAYLOAD_LENGTH + 1);
        const copy = Buffer.from(joined);
        const offset = which * (header + 500) + at;
        copy[offset] = (copy[offset]! + delta) & 0xff;
        expect(xipRunStride(copy)).toBe(0);
      }),
    );
  });

  it('never throws on any bytes', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 600 }), (bytes) => {
        const datagram = Buffer.from(bytes);
        if (datagram.length > 0) datagram[0] = 1;
        expect(xipRunStride(datagram) >= 0).toBe(true);
      }),
      { numRuns: 5000 },
    );
  });

  // What the node relies on when it checks only a run's first packet.
  it('gives packets that checkXip judges alike: all well formed, or all malformed', () => {
    const verdict = (packet: Buffer): string => {
      try {
        checkXip(packet);
        return 'ok';
      } catch (error) {
        if (!(error instanceof MalformedPacketError)) throw error;
        return 'malformed';
      }
    };
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.nat(header - 1), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 4 }), (flips) => {
        const packets = run([300, 300, 300, 120]);
        for (const [at, value] of flips) {
          if (at === XipOffset.PAYLOAD_LENGTH || at === XipOffset.PAYLOAD_LENGTH + 1) continue;
          for (const packet of packets) packet[at] = value;
        }
        const datagram = Buffer.concat(packets);
        const stride = xipRunStride(datagram);
        if (stride === 0) return;
        const verdicts = new Set<string>();
        for (let at = 0; at < datagram.length; at += stride) verdicts.add(verdict(datagram.subarray(at, Math.min(datagram.length, at + stride))));
        expect(verdicts.size).toBe(1);
      }),
      { numRuns: 3000 },
    );
  });
});
