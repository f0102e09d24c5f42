/**
 * The libvirt proxy's decoder faces whatever reaches the libvirt SID: generated and
 * mutated frames, split at any point, must yield messages or a MalformedPacketError, and
 * well-formed ones must come out as they went in. A domain name that could leave its
 * socket directory never decodes.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { MalformedPacketError } from '../shared/errors.js';
import {
  domainNameProblem,
  encodeProxyMessage,
  MAX_DOMAIN_BYTES,
  MAX_PROXY_FRAME,
  MAX_REASON_BYTES,
  ProxyChannel,
  ProxyMessageReader,
  ProxyMessageType,
  type ProxyMessage,
} from './libvirt-proxy-messages.js';

const domain = fc.stringMatching(new RegExp(`^[A-Za-z0-9_+][A-Za-z0-9_.+-]{0,${MAX_DOMAIN_BYTES - 1}}$`));

const message: fc.Arbitrary<ProxyMessage> = fc.oneof(
  fc.record({ type: fc.constant(ProxyMessageType.OPEN), channel: fc.constantFrom(ProxyChannel.LIBVIRTD, ProxyChannel.MIGRATION, ProxyChannel.NBD), domain }),
  fc.constant({ type: ProxyMessageType.ACCEPTED } as ProxyMessage),
  fc.record({ type: fc.constant(ProxyMessageType.REFUSED), reason: fc.string({ maxLength: 80 }) }),
);

/** Feeds `stream` to a reader in pieces cut at `cuts`; returns the messages, or the error it threw. */
function read(stream: Buffer, cuts: number[]): { messages: ProxyMessage[]; error?: unknown } {
  const reader = new ProxyMessageReader();
  const messages: ProxyMessage[] = [];
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

/** An OPEN frame with `name` in it as it stands, bypassing the encoder's check. */
function rawOpen(name: string, channel: number = ProxyChannel.MIGRATION): Buffer {
  const text = Buffer.from(name, 'utf8');
  const frame = Buffer.alloc(5 + 2 + 2 + text.length);
  frame.writeUInt32BE(frame.length - 4, 0);
  frame[4] = ProxyMessageType.OPEN;
  frame[5] = 1;
  frame[6] = channel;
  frame.writeUInt16BE(text.length, 7);
  text.copy(frame, 9);
  return frame;
}

describe('libvirt proxy messages under generated and mutated input', () => {
  it('decodes any well-formed stream, however it is split, to the messages sent', () => {
    fc.assert(
      fc.property(fc.array(message, { maxLength: 8 }), fc.array(fc.nat(), { maxLength: 10 }), (messages, cuts) => {
        const { messages: out, error } = read(Buffer.concat(messages.map(encodeProxyMessage)), cuts);
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
          const stream = Buffer.concat(messages.map(encodeProxyMessage));
          for (const [at, value] of flips) stream[at % stream.length] = value;
          const { messages: out, error } = read(stream.subarray(0, stream.length - (truncate % 4)), cuts);
          if (error !== undefined) expect(error).toBeInstanceOf(MalformedPacketError);
          // Whatever got through names a directory inside the proxy's own, never a path.
          for (const m of out) if (m.type === ProxyMessageType.OPEN) expect(domainNameProblem(m.domain)).toBeUndefined();
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

  it('refuses domain names that would leave the socket directory, or are not file names', () => {
    for (const name of ['..', '.', '.hidden', '-rf', 'a/b', '../../etc', 'web 1', 'wéb', 'x'.repeat(MAX_DOMAIN_BYTES + 1), '', 'a\0b']) {
      expect(domainNameProblem(name), name).toBeDefined();
      expect(String(read(rawOpen(name), []).error), name).toMatch(/MalformedPacketError|cannot name/);
      expect(() => encodeProxyMessage({ type: ProxyMessageType.OPEN, channel: ProxyChannel.LIBVIRTD, domain: name })).toThrow(RangeError);
    }
    for (const name of ['web1', 'vm_2.test', 'a', 'x'.repeat(MAX_DOMAIN_BYTES), 'guest+1']) expect(domainNameProblem(name), name).toBeUndefined();
  });

  it('refuses an unknown channel, another protocol version, and a frame longer than any message', () => {
    expect(String(read(rawOpen('web1', 9), []).error)).toMatch(/channel 9/);
    const open = encodeProxyMessage({ type: ProxyMessageType.OPEN, channel: ProxyChannel.NBD, domain: 'web1' });
    open[5] = 2;
    expect(String(read(open, []).error)).toMatch(/version 2/);
    const huge = Buffer.alloc(5);
    huge.writeUInt32BE(MAX_PROXY_FRAME + 1);
    huge[4] = ProxyMessageType.REFUSED;
    expect(read(huge, []).error).toBeInstanceOf(MalformedPacketError);
  });

  it('cuts an over-long reason at a character boundary instead of failing the send', () => {
    const [back] = read(encodeProxyMessage({ type: ProxyMessageType.REFUSED, reason: 'é'.repeat(MAX_REASON_BYTES) }), []).messages;
    expect(back).toEqual({ type: ProxyMessageType.REFUSED, reason: 'é'.repeat(MAX_REASON_BYTES / 2) });
  });

  it('hands back the bytes behind a frame: they belong to the proxied socket', () => {
    const reader = new ProxyMessageReader();
    const greeting = Buffer.from('NBDMAGIC and more');
    expect(reader.push(Buffer.concat([encodeProxyMessage({ type: ProxyMessageType.ACCEPTED }), greeting]), 1)).toEqual([{ type: ProxyMessageType.ACCEPTED }]);
    expect(reader.rest()).toEqual(greeting);
  });
});
