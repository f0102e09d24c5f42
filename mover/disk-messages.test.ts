/**
 * The disk protocol's decoder faces whatever reaches the disk SID: generated and mutated
 * frames, split at any point, must yield messages or a MalformedPacketError, and
 * well-formed ones must come out as they went in.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { MalformedPacketError } from '../shared/errors.js';
import { DiskMessageReader, DiskMessageType, encodeDiskMessage, MAX_DISK_FRAME, MAX_TEXT_BYTES, type DiskMessage } from './disk-messages.js';

const bytes = (n: number): fc.Arbitrary<Buffer> => fc.uint8Array({ minLength: n, maxLength: n }).map((b) => Buffer.from(b));
const text = fc.string({ maxLength: 60 });

const message: fc.Arbitrary<DiskMessage> = fc.oneof(
  fc.record({ type: fc.constant(DiskMessageType.OPEN_CONTROL), session: bytes(16), sourceBytes: fc.maxSafeNat(), source: text }),
  fc.record({ type: fc.constant(DiskMessageType.OPEN_NBD), session: bytes(16) }),
  fc.record({ type: fc.constant(DiskMessageType.TARGET), bytes: fc.maxSafeNat(), exportName: text, format: text, node: text, file: text, nbd: text }),
  fc.record({ type: fc.constant(DiskMessageType.REFUSED), message: text }),
  fc.constant({ type: DiskMessageType.MIRRORED } as DiskMessage),
  fc.constant({ type: DiskMessageType.RELEASED } as DiskMessage),
  fc.constant({ type: DiskMessageType.DONE } as DiskMessage),
  fc.record({ type: fc.constant(DiskMessageType.ABORT), reason: text }),
);

/** Feeds `stream` to a reader in pieces cut at `cuts`; returns the messages, or the error it threw. */
function read(stream: Buffer, cuts: number[]): { messages: DiskMessage[]; error?: unknown } {
  const reader = new DiskMessageReader();
  const messages: DiskMessage[] = [];
  let at = 0;
  try {
    for (const cut of [...cuts.map((c) => c % (stream.length + 1)).sort((a, b) => a - b), stream.length]) {
      messages.push(...reader.push(stream.subarray(at, Math.max(at, cut))));
      at = Math.max(at, cut);
    }
  } catch (error) {
    return { messages, error };
  }
  return { messages };
}

describe('disk messages under generated and mutated input', () => {
  it('decodes any well-formed stream, however it is split, to the messages sent', () => {
    fc.assert(
      fc.property(fc.array(message, { maxLength: 8 }), fc.array(fc.nat(), { maxLength: 10 }), (messages, cuts) => {
        const { messages: out, error } = read(Buffer.concat(messages.map(encodeDiskMessage)), cuts);
        expect(error).toBeUndefined();
        expect(out).toEqual(messages);
      }),
      { numRuns: 3000 },
    );
  });

  it('turns any mutation into messages or a MalformedPacketError, never another error', () => {
    fc.assert(
      fc.property(
        fc.array(message, { minLength: 1, maxLength: 4 }),
        fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 6 }),
        fc.array(fc.nat(), { maxLength: 6 }),
        fc.nat(),
        (messages, flips, cuts, truncate) => {
          const stream = Buffer.concat(messages.map(encodeDiskMessage));
          for (const [at, value] of flips) stream[at % stream.length] = value;
          const { error } = read(stream.subarray(0, stream.length - (truncate % 4)), cuts);
          if (error !== undefined) expect(error).toBeInstanceOf(MalformedPacketError);
        },
      ),
      { numRuns: 5000 },
    );
  });

  it('takes random bytes without throwing anything but MalformedPacketError', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), fc.array(fc.nat(), { maxLength: 5 }), (junk, cuts) => {
        const { error } = read(Buffer.from(junk), cuts);
        if (error !== undefined) expect(error).toBeInstanceOf(MalformedPacketError);
      }),
      { numRuns: 2000 },
    );
  });

  it('refuses a frame longer than any message from its header, and another protocol version', () => {
    const huge = Buffer.alloc(5);
    huge.writeUInt32BE(MAX_DISK_FRAME + 1);
    huge[4] = DiskMessageType.TARGET;
    expect(read(huge, []).error).toBeInstanceOf(MalformedPacketError);
    const open = encodeDiskMessage({ type: DiskMessageType.OPEN_NBD, session: Buffer.alloc(16) });
    open[5 + 16] = 2;
    expect(String(read(open, []).error)).toMatch(/version 2/);
  });

  it('cuts an over-long text at a character boundary instead of failing the send', () => {
    const long = 'é'.repeat(MAX_TEXT_BYTES);
    const [back] = read(encodeDiskMessage({ type: DiskMessageType.ABORT, reason: long }), []).messages;
    expect(back?.type).toBe(DiskMessageType.ABORT);
    const reason = (back as { reason: string }).reason;
    expect(Buffer.byteLength(reason)).toBeLessThanOrEqual(MAX_TEXT_BYTES);
    expect(reason).toBe('é'.repeat(MAX_TEXT_BYTES / 2));
  });

  it('hands back the bytes behind the opening frame: on an NBD stream they are NBD', () => {
    const reader = new DiskMessageReader();
    const opening = encodeDiskMessage({ type: DiskMessageType.OPEN_NBD, session: Buffer.alloc(16, 7) });
    const nbd = Buffer.from('NBDMAGIC and more');
    expect(reader.push(Buffer.concat([opening, nbd]), 1)).toEqual([{ type: DiskMessageType.OPEN_NBD, session: Buffer.alloc(16, 7) }]);
    expect(reader.rest()).toEqual(nbd);
  });
});
