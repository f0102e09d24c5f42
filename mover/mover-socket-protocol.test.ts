/**
 * The mover socket's wire: frames come out of socket reads whatever way they are cut,
 * and no frame a client sends gets past without a typed error (MalformedPacketError),
 * never a RangeError or a crash. The request line: mover-request.test.ts.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { MalformedPacketError } from '../shared/errors.js';
import { FrameReader, FrameType, frameHeader, statusFrame, type Frame } from './mover-socket-protocol.js';

type Sent = { type: 'data'; data: Buffer } | { type: 'end' } | { type: 'status'; status: Record<string, unknown> };

const sent: fc.Arbitrary<Sent> = fc.oneof(
  fc.uint8Array({ maxLength: 3000 }).map((bytes) => ({ type: 'data' as const, data: Buffer.from(bytes) })),
  fc.constant({ type: 'end' as const }),
  fc.dictionary(fc.string({ maxLength: 8 }), fc.oneof(fc.string({ maxLength: 20 }), fc.integer(), fc.boolean()), { maxKeys: 4 }).map((status) => ({ type: 'status' as const, status })),
);

function encode(frames: Sent[]): Buffer {
  return Buffer.concat(
    frames.map((f) =>
      f.type === 'data' ? Buffer.concat([frameHeader(FrameType.DATA, f.data.length), f.data]) : f.type === 'end' ? frameHeader(FrameType.END, 0) : statusFrame(f.status),
    ),
  );
}

/** Feeds `wire` cut at `cuts`: is a frame left unfinished? */
function cutShort(wire: Buffer, cuts: number[]): boolean {
  const reader = new FrameReader();
  let from = 0;
  for (const at of [...cuts, wire.length]) {
    reader.push(wire.subarray(from, at), () => undefined);
    from = at;
  }
  return reader.partial;
}

describe('mover socket frames', () => {
  it('come out as they went in, however the reads cut them', () => {
    fc.assert(
      fc.property(fc.array(sent, { maxLength: 8 }), fc.array(fc.nat(), { maxLength: 12 }), (frames, cuts) => {
        const wire = encode(frames);
        const reader = new FrameReader();
        const out: Sent[] = [];
        let pending: Buffer[] | undefined;
        let dataFrames = frames.filter((f) => f.type === 'data').map((f) => (f as { data: Buffer }).data);
        const points = [...new Set(cuts.map((c) => c % (wire.length + 1)))].sort((a, b) => a - b);
        let from = 0;
        // DATA pieces of one frame: joined and compared in order of the DATA frames sent.
        const collected: Buffer[] = [];
        const onFrame = (frame: Frame): void => {
          if (frame.type === FrameType.DATA) (pending ??= []).push(frame.data);
          else out.push(frame.type === FrameType.END ? { type: 'end' } : { type: 'status', status: frame.status });
        };
        for (const at of [...points, wire.length]) {
          reader.push(wire.subarray(from, at), onFrame);
          from = at;
        }
        if (pending) collected.push(Buffer.concat(pending));
        expect(reader.partial).toBe(false);
        expect(out).toEqual(frames.filter((f) => f.type !== 'data'));
        dataFrames = dataFrames.filter((d) => d.length > 0);
        expect(Buffer.concat(collected).equals(Buffer.concat(dataFrames))).toBe(true);
      }),
    );
  });

  it('keep no view of a read past push: a STATUS cut across reads survives its memory being reused', () => {
    fc.assert(
      fc.property(fc.dictionary(fc.string({ maxLength: 8 }), fc.string({ maxLength: 40 }), { maxKeys: 6 }), fc.integer({ min: 1, max: 64 }), (status, readBytes) => {
        const wire = statusFrame(status);
        const reader = new FrameReader();
        const read = Buffer.alloc(readBytes);
        const out: Frame[] = [];
        for (let at = 0; at < wire.length; at += readBytes) {
          const n = wire.copy(read, 0, at, at + readBytes);
          reader.push(read.subarray(0, n), (frame) => out.push(frame));
          read.fill(0xee); // the next read goes into the same memory, as recycled reads do
        }
        expect(out).toEqual([{ type: FrameType.STATUS, status }]);
      }),
    );
  });

  it('say a frame is cut short (a socket ended mid-frame)', () => {
    const wire = encode([{ type: 'data', data: Buffer.alloc(100, 1) }, { type: 'end' }]);
    expect(cutShort(wire.subarray(0, 50), [])).toBe(true);
    expect(cutShort(wire.subarray(0, 3), [])).toBe(true);
    expect(cutShort(wire, [7, 40])).toBe(false);
  });

  it('refuse anything else with MalformedPacketError, and nothing after it', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), fc.array(fc.nat(), { maxLength: 6 }), (bytes, cuts) => {
        const reader = new FrameReader();
        const wire = Buffer.from(bytes);
        const points = [...new Set(cuts.map((c) => c % (wire.length + 1)))].sort((a, b) => a - b);
        let from = 0;
        try {
          for (const at of [...points, wire.length]) {
            reader.push(wire.subarray(from, at), () => undefined);
            from = at;
          }
        } catch (error) {
          expect(error).toBeInstanceOf(MalformedPacketError);
          expect(() => reader.push(Buffer.alloc(1), () => undefined)).toThrow(MalformedPacketError);
        }
      }),
    );
    const oversized = Buffer.concat([frameHeader(FrameType.DATA, 0xffffffff)]);
    expect(() => new FrameReader().push(oversized, () => undefined)).toThrow(/at most/);
    expect(() => new FrameReader().push(Buffer.from([FrameType.END, 0, 0, 0, 1, 0]), () => undefined)).toThrow(/END frame with 1/);
    expect(() => new FrameReader().push(Buffer.concat([frameHeader(FrameType.STATUS, 2), Buffer.from('[]')]), () => undefined)).toThrow(/not a JSON object/);
    expect(() => new FrameReader().push(Buffer.from([9, 0, 0, 0, 0]), () => undefined)).toThrow(/unknown frame type 9/);
  });
});
