import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { RECORDED_BANNER, RECORDED_REPLIES, splitAt } from '../test/support/click-arbitraries.js';
import { ClickReplyParser, replyCarriesData, type ClickReply, type ReplyLimits } from './click-control-reply.js';
import { XmigError } from './errors.js';

const LIMITS: ReplyLimits = { maxLineBytes: 1024, maxLines: 64, maxDataBytes: 8192 };

/** Every reply in `pieces` (greeting first), or the protocol error that ended them. */
function parseAll(pieces: readonly Buffer[], expectData: boolean, limits = LIMITS): { replies: ClickReply[]; error?: string; peak: number } {
  const parser = new ClickReplyParser(limits);
  const replies: ClickReply[] = [];
  let peak = 0;
  try {
    for (const piece of pieces) {
      parser.push(piece);
      peak = Math.max(peak, parser.buffered);
      for (let reply = parser.takeReply(expectData); reply; reply = parser.takeReply(expectData)) replies.push(reply);
      peak = Math.max(peak, parser.buffered);
    }
  } catch (error) {
    if (!(error instanceof XmigError) || error.code !== 'ERR_CONTROL') throw error;
    return { replies, error: error.message, peak };
  }
  return { replies, peak };
}

describe('ClickReplyParser', () => {
  it('reads every recorded reply of the real router: status lines, multi-line errors, DATA', () => {
    const byTitle = (request: string): ClickReply | undefined => {
      const found = RECORDED_REPLIES.find((r) => r.request.toString('latin1') === request)!;
      return parseAll([RECORDED_BANNER, found.reply], replyCarriesData(request)).replies[0];
    };
    expect(byTitle('READ version\r\n')).toEqual({ status: 200, messages: ["Read handler 'version' OK"], data: '2.0.1' });
    expect(byTitle('WRITE router0/xrc/n/proc/rt_HID.add4 bogus\r\n')).toEqual({
      status: 520,
      messages: ["Write handler 'router0/xrc/n/proc/rt_HID.add4' error:", 'invalid route: '],
      data: undefined,
    });
    expect(byTitle('HELP\r\n')!.messages).toHaveLength(11);
    expect(byTitle('READ router0/xrc/n/proc/rt_FOO.list\r\n')).toEqual({ status: 510, messages: ["No element named 'router0/xrc/n/proc/rt_FOO'"], data: undefined });
    for (const { request, reply } of RECORDED_REPLIES) {
      const text = request.toString('latin1');
      const parsed = parseAll([RECORDED_BANNER, reply], replyCarriesData(text));
      // Click's WRITEDATA syntax error never ends its reply, and a blank line gets none.
      if (text.trim() === '' || /^WRITEDATA \S+ abc\r\n$/.test(text)) continue;
      expect(parsed.error, text).toBeUndefined();
      expect(parsed.replies.length, text).toBeGreaterThanOrEqual(1);
    }
  });

  it('reads the same replies however the bytes are split (10,000 splits of recorded replies)', () => {
    fc.assert(
      fc.property(fc.constantFrom(...RECORDED_REPLIES), fc.array(fc.nat(), { maxLength: 30 }), ({ request, reply }, points) => {
        const expectData = replyCarriesData(request.toString('latin1'));
        const whole = Buffer.concat([RECORDED_BANNER, reply]);
        expect(parseAll(splitAt(whole, points), expectData, { ...LIMITS, maxDataBytes: 1 << 20 })).toEqual({
          ...parseAll([whole], expectData, { ...LIMITS, maxDataBytes: 1 << 20 }),
          peak: expect.any(Number),
        });
      }),
      { numRuns: 10_000 },
    );
  });

  it('meets mutated and binary replies with ERR_CONTROL or a reply, never anything else, and holds no more than its limits (10,000 inputs)', () => {
    const mutated = fc.oneof(
      fc.tuple(fc.constantFrom(...RECORDED_REPLIES), fc.nat(), fc.integer({ min: 0, max: 255 })).map(([{ reply }, at, byte]) => {
        const copy = Buffer.from(reply);
        if (copy.length > 0) copy[at % copy.length] = byte;
        return copy;
      }),
      fc.uint8Array({ maxLength: 3000 }).map((a) => Buffer.from(a)),
      fc.integer({ min: 0, max: 1e12 }).map((n) => Buffer.from(`200 Read handler 'x' OK\r\nDATA ${n}\r\nabc`, 'latin1')),
      fc.integer({ min: 1, max: 5000 }).map((n) => Buffer.from(`${'520-x\r\n'.repeat(n)}`, 'latin1')),
      fc.integer({ min: 1, max: 5000 }).map((n) => Buffer.from(`200 ${'y'.repeat(n)}`, 'latin1')),
    );
    fc.assert(
      fc.property(fc.option(fc.constant(RECORDED_BANNER), { nil: undefined }), fc.array(mutated, { minLength: 1, maxLength: 4 }), fc.boolean(), fc.array(fc.nat(), { maxLength: 8 }), (banner, bodies, expectData, points) => {
        const input = Buffer.concat([...(banner ? [banner] : []), ...bodies]);
        parseAll(splitAt(input, points), expectData);
        // What is held while waiting is bounded by the limits, not by what was sent.
        const parser = new ClickReplyParser(LIMITS);
        try {
          parser.push(input);
          while (parser.takeReply(expectData));
          expect(parser.buffered).toBeLessThanOrEqual(Math.max(LIMITS.maxLineBytes, LIMITS.maxDataBytes));
        } catch (error) {
          expect(error).toBeInstanceOf(XmigError);
          expect((error as XmigError).code).toBe('ERR_CONTROL');
        }
      }),
      { numRuns: 10_000 },
    );
  });
});
