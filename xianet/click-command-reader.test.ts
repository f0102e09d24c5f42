import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ClickReplyParser, replyCarriesData } from '../shared/click-control-reply.js';
import { Identity } from '../shared/identity.js';
import { XidType } from '../shared/xid.js';
import { controlInput, RECORDED_BANNER, splitAt } from '../test/support/click-arbitraries.js';
import { ClickCommandReader, type ClickRequest } from './click-command-reader.js';
import { ClickControlSession } from './click-control-session.js';
import { ClickNamespace } from './click-handlers.js';
import { MemoryLink, MemorySegment } from './memory-link.js';
import { XiaNode } from './node.js';

const LIMITS = { maxLineBytes: 4096, maxDataBytes: 2048 };

/** Everything `pieces` frame into, with the input ended after the last piece. */
type Framed = Omit<ClickRequest, 'words'> & { words: string[] };

function frame(pieces: readonly Buffer[], limits = LIMITS): Framed[] {
  const reader = new ClickCommandReader(limits);
  const out: Framed[] = [];
  const drain = (): void => {
    for (let request = reader.next(); request; request = reader.next()) out.push({ ...request, words: request.words.map((w) => w.text) });
  };
  for (const piece of pieces) {
    reader.push(piece);
    drain();
    expect(reader.buffered).toBeLessThanOrEqual(limits.maxLineBytes + limits.maxDataBytes + piece.length + 2);
  }
  reader.end();
  drain();
  return out;
}

const text = (s: string): Buffer => Buffer.from(s, 'latin1');

describe('ClickCommandReader', () => {
  it('ends lines at CR LF, LF or a lone CR, and a CR LF split across reads is still one end', () => {
    expect(frame([text('HELP\r\nHELP\nHELP\rHELP')]).map((r) => r.line)).toEqual(['HELP', 'HELP', 'HELP', 'HELP']);
    expect(frame([text('WRITEDATA h 2\r'), text('\nab')]).map((r) => r.body?.text)).toEqual(['ab']);
    expect(frame([text('\r\n\r\n   \r\n')])).toEqual([]);
  });

  it('takes READUNTIL/WRITEUNTIL data up to a line that is the terminator (leading spaces count, trailing do not)', () => {
    const [request] = frame([text('WRITEUNTIL h EOF\r\nline 1\r\n EOF\r\nEOF  \t\r\nnext')]);
    expect(request!.body).toEqual({ text: 'line 1\r\n EOF\r\n', tooLarge: false, incomplete: false });
    expect(frame([text('WRITEUNTIL h\r\nx\r\n  \r\n')])[0]!.body!.text).toBe('x\r\n');
    expect(frame([text('READUNTIL h EOF\r\nEOF\r\n')])[0]!.body!.text).toBe('');
  });

  it('skips data and lines over the limits, keeping the stream in step', () => {
    const requests = frame([text(`WRITEDATA h 5000\r\n${'x'.repeat(5000)}HELP\r\nWRITE h ${'y'.repeat(10_000)}\r\nQUIT\r\n`)]);
    expect(requests.map((r) => [r.words[0], r.lineTooLong, r.body?.tooLarge])).toEqual([
      ['WRITEDATA', false, true],
      ['HELP', false, undefined],
      ['WRITE', true, undefined],
      ['QUIT', false, undefined],
    ]);
    const until = frame([text(`WRITEUNTIL h END\r\n${'z\r\n'.repeat(2000)}END\r\nHELP\r\n`)]);
    expect(until.map((r) => [r.words[0], r.body?.tooLarge])).toEqual([
      ['WRITEUNTIL', true],
      ['HELP', undefined],
    ]);
  });

  it('takes what arrived of an unfinished READUNTIL body as the body at end of input, never as a command', () => {
    expect(frame([text('WRITEUNTIL h END\r\nHELP')]).map((r) => [r.line, r.body?.incomplete])).toEqual([['WRITEUNTIL h END', true]]);
    // Found by the property below (CI, seed -1824787759): a READUNTIL body line longer
    // than the data limit, split so that its tail arrived after the fold, came out as a
    // second request.
    const head = text('READUNTIL h END\r\n');
    const line = text(`WRITE r.h ${'A'.repeat(2386)}`);
    const whole = frame([Buffer.concat([head, line])]);
    expect(whole.map((r) => [r.line, r.body?.incomplete])).toEqual([['READUNTIL h END', true]]);
    expect(frame([head, line.subarray(0, 2000), line.subarray(2000, 2200), line.subarray(2200)])).toEqual(whole);
  });

  it('frames any input the same however it is split, holds no more than its limits, and never throws (600 runs of up to 10 inputs)', () => {
    fc.assert(
      fc.property(fc.array(controlInput, { minLength: 1, maxLength: 10 }), fc.array(fc.nat(), { maxLength: 12 }), (inputs, points) => {
        const whole = Buffer.concat(inputs);
        const once = frame([whole]);
        expect(frame(splitAt(whole, points))).toEqual(once);
        for (const request of once) {
          expect(request.line.length).toBeLessThanOrEqual(LIMITS.maxLineBytes);
          expect(request.body?.text.length ?? 0).toBeLessThanOrEqual(LIMITS.maxDataBytes);
        }
      }),
      { numRuns: 600 },
    );
  });
});

describe('ClickControlSession', () => {
  const node = new XiaNode({ name: 'router0', role: 'router', identity: Identity.generate(), ad: Identity.generate().xid(XidType.AD) });
  for (let i = 0; i < 4; i++) node.addInterface(new MemoryLink(`router0/${i}`, { segment: new MemorySegment(`s${i}`) }));
  const namespace = new ClickNamespace(node);

  it('answers every request with a reply a Click client can frame, and never throws (10,000 inputs)', () => {
    let requests = 0;
    fc.assert(
      fc.property(controlInput, (input) => {
        const session = new ClickControlSession(namespace, { writable: true, maxDataBytes: LIMITS.maxDataBytes });
        const reader = new ClickCommandReader(LIMITS);
        reader.push(input);
        reader.end();
        for (let request = reader.next(); request; request = reader.next()) {
          requests++;
          const reply = session.execute(request);
          const parser = new ClickReplyParser();
          parser.push(RECORDED_BANNER);
          parser.push(Buffer.from(reply.text, 'latin1'));
          // One complete reply per request (two for "QUIT extra": the syntax error, then Goodbye).
          const parsed = parser.takeReply(replyCarriesData(request.line));
          expect(parsed, JSON.stringify(request.line.slice(0, 80))).toBeDefined();
          if (!reply.quit) expect(parser.buffered).toBe(0);
        }
      }),
      { numRuns: 10_000 },
    );
    expect(requests).toBeGreaterThan(10_000);
  });
});
