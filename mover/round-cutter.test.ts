/**
 * The round cutter: whatever way the input is read, the chunks are the stream cut at
 * chunk boundaries, in order; each byte is copied once into a buffer from `take`, and
 * buffers given back to a ChunkPool serve again (never a view, never a foreign buffer).
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ChunkPool } from './chunk-pool.js';
import { RoundCutter } from './round-cutter.js';

describe('RoundCutter', () => {
  it('cuts any stream, however it is read, into the same chunks and rounds', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 5000 }), fc.array(fc.integer({ min: 1, max: 700 }), { minLength: 1, maxLength: 20 }), fc.integer({ min: 1, max: 600 }), (bytes, reads, chunkBytes) => {
        const stream = Buffer.from(bytes);
        const rounds: Buffer[][] = [];
        const pool = new ChunkPool(chunkBytes);
        const cutter = new RoundCutter({ chunkBytes, roundBytes: chunkBytes * 3, flushMs: 1e9, onRound: (chunks) => rounds.push(chunks), take: () => pool.take() });
        for (let at = 0, i = 0; at < stream.length; i++) {
          const n = reads[i % reads.length]!;
          cutter.push(stream.subarray(at, at + n));
          at += n;
        }
        cutter.flush();
        const chunks = rounds.flat();
        expect(Buffer.concat(chunks).equals(stream)).toBe(true);
        chunks.forEach((chunk, i) => expect(chunk.length).toBe(i < chunks.length - 1 ? chunkBytes : stream.length - chunkBytes * (chunks.length - 1)));
        for (const round of rounds.slice(0, -1)) expect(round.length).toBe(3);
        expect(cutter.buffered).toBe(0);
      }),
    );
  });

  it('closes each round as it fills, when one read holds several rounds', () => {
    const rounds: Buffer[][] = [];
    const cutter = new RoundCutter({ chunkBytes: 100, roundBytes: 300, flushMs: 1e9, onRound: (chunks) => rounds.push(chunks) });
    cutter.push(Buffer.alloc(700, 7));
    expect(rounds.map((round) => round.length)).toEqual([3, 3]);
    expect(cutter.buffered).toBe(100);
    cutter.flush();
    expect(rounds.map((round) => round.length)).toEqual([3, 3, 1]);
  });

  it('fills buffers given back to the pool again, and takes only whole buffers of its own size', () => {
    const pool = new ChunkPool(1024, 2);
    const rounds: Buffer[][] = [];
    const cutter = new RoundCutter({ chunkBytes: 1024, roundBytes: 1024, flushMs: 1e9, onRound: (chunks) => rounds.push(chunks), take: () => pool.take() });
    cutter.push(Buffer.alloc(2048, 1));
    const [first, second] = rounds.flat();
    pool.give(Buffer.allocUnsafe(100)); // a slice of Node's shared pool, another size: not taken
    pool.give(first!.subarray(10)); // not the start of a buffer: not taken
    pool.give(first!);
    pool.give(second!);
    pool.give(Buffer.allocUnsafeSlow(1024)); // past maxFree
    cutter.push(Buffer.alloc(1024, 2));
    expect(pool.reused).toBe(1);
    expect(rounds.flat()[2]!.buffer).toBe(second!.buffer);
    expect(rounds.flat()[2]!.every((b) => b === 2)).toBe(true);
    // A flushed short last chunk is a view of a pooled buffer: it comes back whole.
    cutter.push(Buffer.alloc(100, 3));
    cutter.flush();
    const last = rounds.flat().at(-1)!;
    expect(last.length).toBe(100);
    pool.give(last);
    expect(pool.take().buffer).toBe(last.buffer);
  });
});
