import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { MalformedPacketError } from './errors.js';
import { WireReader, WireWriter } from './wire.js';

type Field =
  | { kind: 'u8' | 'u16' | 'u32'; value: number }
  | { kind: 'u64'; value: number }
  | { kind: 'bytes' | 'fixed'; value: Uint8Array };

const field: fc.Arbitrary<Field> = fc.oneof(
  fc.integer({ min: 0, max: 0xff }).map((value) => ({ kind: 'u8' as const, value })),
  fc.integer({ min: 0, max: 0xffff }).map((value) => ({ kind: 'u16' as const, value })),
  fc.integer({ min: 0, max: 0xffffffff }).map((value) => ({ kind: 'u32' as const, value })),
  fc.maxSafeNat().map((value) => ({ kind: 'u64' as const, value })),
  fc.uint8Array({ maxLength: 300 }).map((value) => ({ kind: 'bytes' as const, value })),
  fc.uint8Array({ maxLength: 300 }).map((value) => ({ kind: 'fixed' as const, value })),
);

describe('WireWriter / WireReader', () => {
  it('reads back what was written, however small the writer started (growth keeps earlier and later fields)', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 64 }), fc.array(field, { maxLength: 30 }), (initial, fields) => {
        const writer = new WireWriter(initial);
        for (const f of fields) {
          if (f.kind === 'bytes') writer.bytes(f.value);
          else if (f.kind === 'fixed') writer.fixed(f.value, f.value.length);
          else writer[f.kind](f.value as number);
        }
        const reader = new WireReader(writer.finish(), 'test');
        for (const f of fields) {
          if (f.kind === 'bytes') expect([...reader.bytes('f')]).toEqual([...f.value]);
          else if (f.kind === 'fixed') expect([...reader.fixed(f.value.length, 'f')]).toEqual([...f.value]);
          else expect(reader[f.kind]('f')).toBe(f.value);
        }
        reader.end();
      }),
    );
  });

  it('throws MalformedPacketError, never a RangeError, on any truncation', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 40 }), fc.array(fc.constantFrom('u8', 'u16', 'u32', 'u64', 'bytes', 'xid', 'dag'), { maxLength: 8 }), (bytes, reads) => {
        const reader = new WireReader(Buffer.from(bytes), 'test');
        try {
          for (const read of reads) reader[read as 'u8']('f');
        } catch (error) {
          expect(error).toBeInstanceOf(MalformedPacketError);
        }
      }),
    );
  });
});
