import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { XmigError } from './errors.js';
import { LinkType, parsePortRanges, PcapWriter, readPcap, xipFramesOf } from './pcap.js';
import { Dag } from './dag.js';
import { encodeXip, NextHeader, splitXipDatagram } from './xip-header.js';
import { Xid, XidType } from './xid.js';

/** A pcapng block: type, length, body padded to 4 bytes, length again (little-endian). */
function block(type: number, body: Buffer): Buffer {
  const padded = Buffer.concat([body, Buffer.alloc((4 - (body.length % 4)) % 4)]);
  const out = Buffer.alloc(12 + padded.length);
  out.writeUInt32LE(type, 0);
  out.writeUInt32LE(out.length, 4);
  padded.copy(out, 8);
  out.writeUInt32LE(out.length, out.length - 4);
  return out;
}

function sectionHeader(): Buffer {
  const body = Buffer.alloc(16);
  body.writeUInt32LE(0x1a2b3c4d, 0);
  body.writeUInt16LE(1, 4);
  body.writeUInt16LE(0, 6);
  body.writeBigInt64LE(-1n, 8);
  return block(0x0a0d0d0a, body);
}

function interfaceBlock(linkType: number, tsresol?: number): Buffer {
  const options = tsresol === undefined ? Buffer.alloc(0) : Buffer.from([9, 0, 1, 0, tsresol, 0, 0, 0, 0, 0, 0, 0]);
  const body = Buffer.alloc(8);
  body.writeUInt16LE(linkType, 0);
  body.writeUInt32LE(262144, 4);
  return block(1, Buffer.concat([body, options]));
}

function enhancedPacket(interfaceId: number, ticks: bigint, data: Buffer): Buffer {
  const head = Buffer.alloc(20);
  head.writeUInt32LE(interfaceId, 0);
  head.writeUInt32LE(Number(ticks >> 32n), 4);
  head.writeUInt32LE(Number(ticks & 0xffffffffn), 8);
  head.writeUInt32LE(data.length, 12);
  head.writeUInt32LE(data.length, 16);
  return block(6, Buffer.concat([head, data]));
}

/** An IPv4/UDP datagram from 10.0.0.1:17000 to 10.0.0.2:17001. */
function udp4(payload: Buffer): Buffer {
  const ip = Buffer.alloc(28);
  ip[0] = 0x45;
  ip.writeUInt16BE(28 + payload.length, 2);
  ip[8] = 64;
  ip[9] = 17;
  Buffer.from([10, 0, 0, 1, 10, 0, 0, 2]).copy(ip, 12);
  ip.writeUInt16BE(17000, 20);
  ip.writeUInt16BE(17001, 22);
  ip.writeUInt16BE(8 + payload.length, 24);
  return Buffer.concat([ip, payload]);
}

describe('readPcap', () => {
  it('reads pcapng: interfaces of several link types, nanosecond timestamps, UDP ends', () => {
    const xip = Buffer.from('01', 'hex');
    const ethernet = Buffer.concat([Buffer.alloc(12), Buffer.from([0xc0, 0xde]), xip]);
    const capture = Buffer.concat([
      sectionHeader(),
      interfaceBlock(LinkType.ETHERNET),
      interfaceBlock(LinkType.RAW, 9),
      block(4, Buffer.alloc(8)), // a name-resolution block: skipped
      enhancedPacket(0, 1_700_000_000_123_456n, ethernet),
      enhancedPacket(1, 1_700_000_001_000_002_000n, udp4(xip)),
    ]);
    const file = readPcap(capture);
    expect(file.format).toBe('pcapng');
    expect(file.records.map((r) => [r.linkType, r.timeMicros])).toEqual([
      [LinkType.ETHERNET, 1_700_000_000_123_456],
      [LinkType.RAW, 1_700_000_001_000_002],
    ]);
    const frames = xipFramesOf(file, parsePortRanges(['17000-17010']));
    expect(frames.map((f) => [f.frame, f.carrier, f.packet.toString('hex')])).toEqual([
      [1, 'ethernet', '01'],
      [2, 'udp', '01'],
    ]);
    expect(frames[1]!.udp).toEqual({ srcAddress: '10.0.0.1', srcPort: 17000, dstAddress: '10.0.0.2', dstPort: 17001 });
    expect(xipFramesOf(file, parsePortRanges(['7000']))).toHaveLength(1);
  });

  it('still reads classic pcap', () => {
    const writer = new PcapWriter();
    writer.addXip(Buffer.from('0102', 'hex'), 5_000_001);
    const file = readPcap(writer.toBuffer());
    expect(file.format).toBe('pcap');
    expect(xipFramesOf(file).map((f) => [f.timeMicros, f.packet.toString('hex')])).toEqual([[5_000_001, '0102']]);
  });

  it('takes ports and ranges, and refuses anything else as a usage error', () => {
    const ports = parsePortRanges(['7000', '17000-17002,9000']);
    expect([6999, 7000, 17001, 17003, 9000].map((p) => ports.has(p))).toEqual([false, true, true, false, true]);
    for (const bad of ['0', '70000', '9-3', 'x', '']) {
      expect(() => parsePortRanges([bad]), bad).toThrow(expect.objectContaining({ code: 'ERR_USAGE' }) as Error);
    }
  });

  it('refuses any broken capture with ERR_PCAP, never another exception', () => {
    const good = Buffer.concat([sectionHeader(), interfaceBlock(LinkType.RAW), enhancedPacket(0, 1n, udp4(Buffer.alloc(40)))]);
    const classic = new PcapWriter();
    classic.addXip(Buffer.alloc(60));
    const seeds = [good, classic.toBuffer()];
    fc.assert(
      fc.property(
        fc.oneof(
          fc.uint8Array({ maxLength: 300 }).map((b) => Buffer.from(b)),
          fc.tuple(fc.constantFrom(...seeds), fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 8 }), fc.nat()).map(
            ([seed, edits, cut]) => {
              const copy = Buffer.from(seed);
              for (const [at, value] of edits) copy[at % copy.length] = value;
              return copy.subarray(0, cut % (copy.length + 1));
            },
          ),
        ),
        (bytes) => {
          try {
            xipFramesOf(readPcap(bytes), parsePortRanges(['1-65535']));
          } catch (error) {
            expect(error).toBeInstanceOf(XmigError);
            expect((error as XmigError).code).toBe('ERR_PCAP');
          }
        },
      ),
      { numRuns: 5000 },
    );
  });
});

describe('splitXipDatagram (a UDP GSO datagram as captured: XIP packets back to back)', () => {
  const xid = (byte: number, type: number = XidType.HID): Xid => Xid.of(type, Buffer.alloc(20, byte));
  const packet = (nodes: number, payload: number): Buffer =>
    encodeXip({
      dst: Dag.chain(...Array.from({ length: nodes }, (_, i) => xid(i + 1))),
      src: Dag.chain(xid(0xaa)),
      nextHeader: NextHeader.NONE,
      payload: Buffer.alloc(payload, 7),
    });

  it('gives back every packet of a run, in order, and a lone packet as it is', () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.integer({ min: 1, max: 4 }), fc.integer({ min: 0, max: 1500 })), { minLength: 1, maxLength: 12 }), (shapes) => {
        const packets = shapes.map(([nodes, payload]) => packet(nodes, payload));
        const split = splitXipDatagram(Buffer.concat(packets));
        expect(split.map((p) => p.toString('hex'))).toEqual(packets.map((p) => p.toString('hex')));
      }),
      { numRuns: 500 },
    );
  });

  it('returns a datagram whose lengths do not add up whole, for the decoder to call malformed', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 6 }), fc.integer({ min: 1, max: 200 }), fc.integer({ min: 0, max: 7 }), (count, payload, trailing) => {
        const joined = Buffer.concat([...Array.from({ length: count }, () => packet(2, payload)), Buffer.alloc(trailing + 1, 1)]);
        const split = splitXipDatagram(joined);
        expect(split).toHaveLength(1);
        expect(split[0]!.equals(joined)).toBe(true);
      }),
      { numRuns: 300 },
    );
  });

  it('is what xipFramesOf reads out of a captured UDP datagram: one frame number, one XipFrame per packet', () => {
    const packets = [packet(2, 100), packet(2, 100), packet(3, 40)];
    const capture = Buffer.concat([sectionHeader(), interfaceBlock(LinkType.RAW), enhancedPacket(0, 1_700_000_000_000_000n, udp4(Buffer.concat(packets)))]);
    const frames = xipFramesOf(readPcap(capture), parsePortRanges(['17000']));
    expect(frames.map((f) => [f.frame, f.packet.toString('hex')])).toEqual(packets.map((p) => [1, p.toString('hex')]));
  });
});
