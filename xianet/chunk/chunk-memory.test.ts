import { describe, expect, it } from 'vitest';
import { ChunkMemory } from './chunk-memory.js';

describe('ChunkMemory', () => {
  it('fills a slot given back again, never lends one twice, and keeps at most maxFree free', () => {
    const memory = new ChunkMemory(1024, 2);
    const a = memory.lend(1000);
    const b = memory.lend(1024);
    expect(a.length).toBe(1024);
    expect(memory.slotOf(a.subarray(10, 20))).toBe(a);
    expect(memory.slotOf(Buffer.alloc(1024))).toBeUndefined();
    memory.giveBack(a);
    // Given back twice (a bug upstream): still lent out once only.
    memory.giveBack(a);
    expect(memory.lend(1024)).toBe(a);
    expect(memory.lend(1024)).not.toBe(a);
    expect(memory.stats).toEqual({ allocated: 3, reused: 1 });
    const c = memory.lend(1024);
    for (const slot of [a, b, c]) memory.giveBack(slot);
    // Two kept free, the third let go.
    expect(memory.lent).toBe(1);
    expect(memory.size).toBe(3);
  });

  it('lends longer slots from the first longer chunk on, and lets the short ones go', () => {
    const memory = new ChunkMemory(1024);
    const short = memory.lend(1024);
    memory.giveBack(short);
    const long = memory.lend(4096);
    expect(long.length).toBe(4096);
    expect(memory.size).toBe(1);
    memory.giveBack(long);
    expect(memory.lend(100)).toBe(long);
  });
});
