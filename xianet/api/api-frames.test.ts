import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { XmigError } from '../../shared/errors.js';
import { encodeFrame, encodeFrameParts, FrameDecoder } from './api-frames.js';

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
    const kept = new FrameDecoder().push(wire);
    for (const readSize of [1, 3, 4097, 65536, wire.length]) {
      const decoder = new FrameDecoder();
      const frames = [];
      const borrowed = Buffer.alloc(readSize);
      for (let at = 0; at < wire.length; at += readSize) {
        const n = wire.copy(borrowed, 0, at, at + readSize);
        frames.push(...decoder.pushBorrowed(borrowed.subarray(0, n)));
        borrowed.fill(0xee); // the socket reuses its buffer: frames must not point into it
      }
      expect(frames.map((f) => f.header)).toEqual(kept.map((f) => f.header));
      expect(frames.every((f, i) => f.body.equals(kept[i]!.body))).toBe(true);
    }
    expect(kept[1]!.body.equals(body)).toBe(true);
  });

  it('rejects a frame length past the limit before allocating it', () => {
    const bad = Buffer.from([0xff, 0xff, 0xff, 0xff]);
    expect(() => new FrameDecoder().pushBorrowed(bad)).toThrow(XmigError);
    expect(() => new FrameDecoder().push(bad)).toThrow(XmigError);
  });
});
