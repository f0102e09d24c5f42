/**
 * fast-check inputs for the control port and its client, made from what a real
 * xia-core Click router was sent and said (click-fixtures.ts): the recorded requests
 * and replies as they are, mutated (bytes flipped, inserted, dropped, cut, line ends
 * removed or doubled, lengths made huge or negative), glued together, and plain
 * binary. Split points model TCP delivering any of them in any pieces.
 */
import fc from 'fast-check';
import { loadTranscripts } from './click-fixtures.js';

const transcripts = loadTranscripts();
export const RECORDED_REQUESTS: Buffer[] = transcripts.flatMap((t) => t.exchanges.map((e) => e.request));
export const RECORDED_REPLIES: Array<{ request: Buffer; reply: Buffer }> = transcripts.flatMap((t) =>
  t.exchanges.filter((e) => e.truncatedTo === undefined).map((e) => ({ request: e.request, reply: e.reply })),
);
export const RECORDED_BANNER = transcripts[0]!.banner;

const HUGE_LENGTHS = ['2147483647', '2147483648', '99999999999999999999', '-1', '0x7fffffff', '65537', '1048576', '0', '+0', '0b101', '1_0'];
const COMMANDS = ['READ', 'WRITE', 'READDATA', 'WRITEDATA', 'SETDATA', 'READUNTIL', 'WRITEUNTIL', 'CHECKREAD', 'CHECKWRITE', 'LLRPC', 'HELP', 'QUIT', 'CLOSE', 'GET', 'SET'];

type Mutation = (input: Buffer) => fc.Arbitrary<Buffer>;

const mutations: Mutation[] = [
  // flip a byte
  (b) => fc.tuple(fc.nat(Math.max(0, b.length - 1)), fc.integer({ min: 0, max: 255 })).map(([at, v]) => Buffer.from(b.map((x, i) => (i === at ? v : x)))),
  // insert bytes
  (b) => fc.tuple(fc.nat(b.length), fc.uint8Array({ maxLength: 16 })).map(([at, ins]) => Buffer.concat([b.subarray(0, at), Buffer.from(ins), b.subarray(at)])),
  // drop a range
  (b) => fc.tuple(fc.nat(b.length), fc.nat(16)).map(([at, n]) => Buffer.concat([b.subarray(0, at), b.subarray(at + n)])),
  // cut short
  (b) => fc.nat(b.length).map((n) => b.subarray(0, n)),
  // line ends removed, doubled, or made bare CR / LF
  (b) => fc.constantFrom('', '\r\n\r\n', '\r', '\n', '\n\r').map((end) => Buffer.from(b.toString('latin1').replace(/\r\n/g, end), 'latin1')),
  // a length made huge, negative or odd
  (b) => fc.constantFrom(...HUGE_LENGTHS).map((n) => Buffer.from(b.toString('latin1').replace(/^(\s*\S+\s+\S+\s+)\d+/, `$1${n}`), 'latin1')),
  // the command changed
  (b) => fc.constantFrom(...COMMANDS).map((c) => Buffer.from(b.toString('latin1').replace(/^\S+/, c), 'latin1')),
  // the case changed
  (b) => fc.boolean().map((upper) => Buffer.from(upper ? b.toString('latin1').toUpperCase() : b.toString('latin1').toLowerCase(), 'latin1')),
];

/** A recorded request, as is or mutated once or twice. */
export const mutatedRequest: fc.Arbitrary<Buffer> = fc
  .constantFrom(...RECORDED_REQUESTS)
  .chain((request) => fc.oneof(fc.constant(request), fc.constantFrom(...mutations).chain((m) => m(request))))
  .chain((request) => fc.oneof({ weight: 3, arbitrary: fc.constant(request) }, { weight: 1, arbitrary: fc.constantFrom(...mutations).chain((m) => m(request)) }));

/** Something a client might send: a (mutated) recorded request, binary, a long line, or a huge declared length. */
export const controlInput: fc.Arbitrary<Buffer> = fc.oneof(
  { weight: 6, arbitrary: mutatedRequest },
  { weight: 1, arbitrary: fc.uint8Array({ maxLength: 300 }).map((a) => Buffer.from(a)) },
  { weight: 1, arbitrary: fc.integer({ min: 1000, max: 200_000 }).map((n) => Buffer.from(`WRITE r.h ${'A'.repeat(n)}${n % 2 ? '\r\n' : ''}`, 'latin1')) },
  { weight: 1, arbitrary: fc.constantFrom(...HUGE_LENGTHS).map((n) => Buffer.from(`WRITEDATA router0/xrc/n/proc/rt_HID.set4 ${n}\r\nHID:`, 'latin1')) },
  { weight: 1, arbitrary: fc.string({ maxLength: 40 }).map((t) => Buffer.from(`WRITEUNTIL router0/xrc/n/proc/rt_HID.set4 ${t}\r\n${'x\r\n'.repeat(50)}${t}\r\n`, 'latin1')) },
);

/** Cuts `input` into pieces at the given points (as TCP may deliver it). */
export function splitAt(input: Buffer, points: readonly number[]): Buffer[] {
  const cuts = [...new Set(points.map((p) => p % (input.length + 1)))].sort((a, b) => a - b);
  const pieces: Buffer[] = [];
  let from = 0;
  for (const cut of cuts) {
    pieces.push(input.subarray(from, cut));
    from = cut;
  }
  pieces.push(input.subarray(from));
  return pieces.filter((p) => p.length > 0);
}
