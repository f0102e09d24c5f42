/**
 * The control protocol's decoder faces whatever reaches the migration SID (or port):
 * generated and mutated frames, split at any point, must yield messages or a
 * MalformedPacketError, and well-formed ones must come out as they went in.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { MalformedPacketError } from '../shared/errors.js';
import { ChunkKind, encodeMessage, MAX_FRAME, MessageReader, MessageType, type ControlMessage } from './control-messages.js';

const bytes = (n: number): fc.Arbitrary<Buffer> => fc.uint8Array({ minLength: n, maxLength: n }).map((b) => Buffer.from(b));
const DAG = 'RE AD:1000000000000000000000000000000000000001 HID:2000000000000000000000000000000000000002';

const message: fc.Arbitrary<ControlMessage> = fc.oneof(
  fc.record({ type: fc.constant(MessageType.HELLO), session: bytes(16), mode: fc.constant(0), source: fc.constant(DAG) }),
  fc.record({ type: fc.constant(MessageType.HELLO), session: bytes(16), mode: fc.constant(1), source: fc.constant('') }),
  fc.record({ type: fc.constant(MessageType.WELCOME), session: bytes(16), nextRound: fc.maxSafeNat() }),
  fc.record({
    type: fc.constant(MessageType.OFFER),
    round: fc.maxSafeNat(),
    chunks: fc.array(
      fc.oneof(
        fc.record({ kind: fc.constant(ChunkKind.FETCH), length: fc.nat(1 << 20), cid: bytes(20) }),
        fc.record({ kind: fc.constant(ChunkKind.ZERO), length: fc.nat(1 << 20) }),
      ),
      { maxLength: 6 },
    ),
  }),
  fc.record({ type: fc.constant(MessageType.ACK), round: fc.maxSafeNat() }),
  fc.record({ type: fc.constant(MessageType.DONE), rounds: fc.maxSafeNat(), bytes: fc.maxSafeNat() }),
  fc.constant({ type: MessageType.DONE_ACK } as ControlMessage),
  fc.record({ type: fc.constant(MessageType.REQUEST), cids: fc.array(bytes(20), { maxLength: 5 }) }),
  fc.record({ type: fc.constant(MessageType.DATA), cid: bytes(20), data: fc.array(fc.uint8Array({ maxLength: 64 }).map((b) => Buffer.from(b)), { minLength: 1, maxLength: 3 }) }),
  fc.record({ type: fc.constant(MessageType.ERROR), message: fc.string({ maxLength: 40 }) }),
);

/** Feeds `stream` to a reader in pieces cut at `cuts`; returns the messages, or the error it threw. */
function read(stream: Buffer, cuts: number[]): { messages: ControlMessage[]; error?: unknown } {
  const reader = new MessageReader();
  const messages: ControlMessage[] = [];
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

/** A DATA message's pieces depend on how the bytes arrived: compare it joined. */
function normal(m: ControlMessage): unknown {
  return m.type === MessageType.DATA ? { ...m, data: Buffer.concat(m.data) } : m;
}

describe('migration control messages under generated and mutated input', () => {
  it('decodes any well-formed stream, however it is split, to the messages sent', () => {
    fc.assert(
      fc.property(fc.array(message, { maxLength: 8 }), fc.array(fc.nat(), { maxLength: 10 }), (messages, cuts) => {
        const { messages: out, error } = read(Buffer.concat(messages.map(encodeMessage)), cuts);
        expect(error).toBeUndefined();
        expect(out.map(normal)).toEqual(messages.map(normal));
      }),
      { numRuns: 4000 },
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
          const stream = Buffer.concat(messages.map(encodeMessage));
          for (const [at, value] of flips) stream[at % stream.length] = value;
          const { error } = read(stream.subarray(0, stream.length - (truncate % 4)), cuts);
          if (error !== undefined) expect(error).toBeInstanceOf(MalformedPacketError);
        },
      ),
      { numRuns: 6000 },
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

  it('refuses a HELLO whose chunk source is not a DAG, and a frame longer than any message', () => {
    const hello = encodeMessage({ type: MessageType.HELLO, session: Buffer.alloc(16), mode: 0, source: 'not a dag' });
    expect(read(hello, []).error).toBeInstanceOf(MalformedPacketError);
    const huge = Buffer.alloc(5);
    huge.writeUInt32BE(MAX_FRAME + 1);
    huge[4] = MessageType.DATA;
    expect(read(huge, []).error).toBeInstanceOf(MalformedPacketError);
    // An OFFER announcing 64 MiB is refused from its header, before anything is buffered.
    const offer = Buffer.alloc(5);
    offer.writeUInt32BE(64 << 20);
    offer[4] = MessageType.OFFER;
    expect(read(offer, []).error).toBeInstanceOf(MalformedPacketError);
  });
});
