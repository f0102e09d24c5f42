import { randomBytes } from 'node:crypto';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { encodeFrame, encodeFrameParts, FrameDecoder, MAX_HEADER, type DecodeResult } from './api-frames.js';

/** Feeds `wire` in pieces cut at `cuts`, kept or borrowed, and joins what comes out. */
function decode(wire: Buffer, cuts: number[], borrowed: boolean, maxFrame?: number): DecodeResult {
  const decoder = new FrameDecoder(maxFrame);
  const all: DecodeResult = { frames: [], malformed: [], fatal: undefined };
  const points = [...new Set(cuts.map((c) => c % (wire.length + 1)))].sort((a, b) => a - b);
  let from = 0;
  const scratch = Buffer.alloc(wire.length + 1);
  for (const to of [...points, wire.length]) {
    if (to < from) continue;
    let result: DecodeResult;
    if (borrowed) {
      const n = wire.copy(scratch, 0, from, to);
      result = decoder.pushBorrowed(scratch.subarray(0, n));
      scratch.fill(0xee, 0, n); // the socket reuses its buffer: frames must not point into it
    } else {
      result = decoder.push(Buffer.from(wire.subarray(from, to)));
    }
    all.frames.push(...result.frames.map((f) => ({ header: f.header, body: Buffer.from(f.body) })));
    all.malformed.push(...result.malformed);
    all.fatal ??= result.fatal;
    from = to;
  }
  return all;
}

describe('API frames', () => {
  const body = randomBytes(300_000);
  const wire = Buffer.concat([encodeFrame({ op: 'a', n: 1 }), ...encodeFrameParts({ op: 'chunk-put', sizes: [1, 2] }, [body.subarray(0, 100), body.subarray(100)]), encodeFrame({ op: 'b' })]);

  it('writes the head and leaves the body parts as they are', () => {
    const parts = encodeFrameParts({ op: 'x' }, [body]);
    expect(parts).toHaveLength(2);
    expect(parts[1]).toBe(body);
    expect(parts[0]!.readUInt32BE(0)).toBe(parts[0]!.length - 4 + body.length);
  });

  it('decodes the same frames from borrowed reads as from kept ones, at any read size', () => {
    const kept = new FrameDecoder().push(wire).frames;
    for (const readSize of [1, 3, 4097, 65536, wire.length]) {
      const cuts = Array.from({ length: Math.ceil(wire.length / readSize) }, (_, i) => i * readSize);
      const frames = decode(wire, cuts, true).frames;
      expect(frames.map((f) => f.header)).toEqual(kept.map((f) => f.header));
      expect(frames.every((f, i) => f.body.equals(kept[i]!.body))).toBe(true);
    }
    expect(kept[1]!.body.equals(body)).toBe(true);
  });

  it('refuses a header longer than its u16 length field with a typed error, and takes the longest that fits', () => {
    const header = (jsonBytes: number): Record<string, unknown> => ({ pad: 'x'.repeat(jsonBytes - '{"pad":""}'.length) });
    expect(() => encodeFrameParts(header(MAX_HEADER + 1))).toThrow(expect.objectContaining({ code: 'ERR_REFUSED' }));
    const [frame] = new FrameDecoder().push(encodeFrame(header(MAX_HEADER))).frames;
    expect(frame!.header).toEqual(header(MAX_HEADER));
  });

  it('reports a frame length past the limit as fatal before allocating it, and reads nothing after', () => {
    const bad = Buffer.from([0xff, 0xff, 0xff, 0xff]);
    const decoder = new FrameDecoder();
    expect(decoder.push(bad).fatal).toMatch(/API frame of 4294967295 bytes/);
    expect(decoder.buffered).toBe(0);
    expect(decoder.push(encodeFrame({ op: 'info' })).frames).toEqual([]);
    expect(new FrameDecoder().pushBorrowed(bad).fatal).toMatch(/4294967295/);
    expect(new FrameDecoder(100).push(encodeFrame({ op: 'x' }, Buffer.alloc(200))).fatal).toMatch(/allowed: 2..100/);
  });

  it('skips a frame whose header is not a JSON object and reads the next one', () => {
    const notJson = Buffer.from([0, 0, 0, 5, 0, 3, 0x7b, 0x7b, 0x7b]);
    const array = encodeFrame({} as never);
    array.write('[]', 6); // same length as "{}"
    const result = new FrameDecoder().push(Buffer.concat([notJson, array, encodeFrame({ op: 'info' })]));
    expect(result.malformed).toEqual(['API frame header is not JSON', 'API frame header is not a JSON object']);
    expect(result.frames.map((f) => f.header)).toEqual([{ op: 'info' }]);
    const long = Buffer.from([0, 0, 0, 4, 0xff, 0xff, 0x7b, 0x7d]);
    expect(new FrameDecoder().push(long).malformed[0]).toMatch(/longer than its 4-byte frame/);
  });

  it('never throws on 10,000 streams of noise and mutated frames, and agrees kept and borrowed', () => {
    const header = fc.dictionary(fc.string({ maxLength: 8 }), fc.oneof(fc.string({ maxLength: 20 }), fc.integer(), fc.boolean(), fc.constant(null)), { maxKeys: 4 });
    const frames = fc.array(fc.tuple(header, fc.uint8Array({ maxLength: 300 })), { maxLength: 5 }).map((list) => Buffer.concat(list.map(([h, b]) => encodeFrame(h, b))));
    const mutated = fc.tuple(frames, fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 4 })).map(([buffer, writes]) => {
      const out = Buffer.from(buffer);
      for (const [at, value] of writes) if (out.length > 0) out[at % out.length] = value;
      return out;
    });
    const noise = fc.uint8Array({ maxLength: 600 }).map((b) => Buffer.from(b));
    fc.assert(
      fc.property(fc.oneof(mutated, noise, frames), fc.array(fc.nat(), { maxLength: 6 }), fc.constantFrom(undefined, 64, 1024), (input, cuts, maxFrame) => {
        const kept = decode(input, cuts, false, maxFrame);
        const borrowed = decode(input, cuts, true, maxFrame);
        const same = JSON.stringify([borrowed.frames.map((f) => [f.header, f.body.toString('hex')]), borrowed.malformed, borrowed.fatal]);
        if (same !== JSON.stringify([kept.frames.map((f) => [f.header, f.body.toString('hex')]), kept.malformed, kept.fatal])) return false;
        return kept.frames.every((frame) => typeof frame.header === 'object' && frame.header !== null && !Array.isArray(frame.header));
      }),
      { numRuns: 10_000 },
    );
  });

  it('round-trips any headers and bodies cut anywhere', () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.dictionary(fc.string({ maxLength: 6 }), fc.jsonValue({ maxDepth: 2 }), { maxKeys: 3 }), fc.uint8Array({ maxLength: 200 })), { minLength: 1, maxLength: 4 }),
        fc.array(fc.nat(), { maxLength: 5 }),
        (list, cuts) => {
          const input = Buffer.concat(list.map(([h, b]) => encodeFrame(h as Record<string, unknown>, b)));
          const out = decode(input, cuts, true);
          expect(out.fatal).toBeUndefined();
          expect(out.frames.map((f) => f.header)).toEqual(list.map(([h]) => JSON.parse(JSON.stringify(h)) as unknown));
          expect(out.frames.map((f) => f.body.toString('hex'))).toEqual(list.map(([, b]) => Buffer.from(b).toString('hex')));
        },
      ),
      { numRuns: 1000 },
    );
  });
});
