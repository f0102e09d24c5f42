/**
 * The request side of Click's ControlSocket protocol as bytes arrive: command lines
 * (ended by CR LF, LF or a lone CR, as controlsocket.cc ends them) and the data some
 * commands carry — `READDATA/WRITEDATA/SETDATA h n` and `LLRPC e#n n` take n bytes,
 * `READUNTIL/WRITEUNTIL h term` take lines up to one that reads `term`.
 *
 * Bounded, unlike Click: a line longer than `maxLineBytes` and data longer than
 * `maxDataBytes` are not kept but skipped as they arrive (the request is still
 * delivered, marked too long, so the session can answer it as Click would — 521 for
 * a write — and the stream stays in step). What is held is at most about
 * maxLineBytes + maxDataBytes plus one read, whatever a client sends.
 */
import { clickUpper, clickWords, isClickSpace, parseClickInteger, type ClickWord } from './click-syntax.js';

export interface ReaderLimits {
  /** Longest command line kept (longer ones are skipped to their end and flagged). */
  maxLineBytes: number;
  /** Most data bytes a command may carry (Click's LARGEST_HANDLER_WRITE is 65536). */
  maxDataBytes: number;
}

export interface ClickRequestBody {
  /** The bytes (latin1), empty when too large. */
  text: string;
  /** More than maxDataBytes: skipped, not kept. */
  tooLarge: boolean;
  /** The input ended before the data did (Click: "500 Not enough data"). */
  incomplete: boolean;
}

export interface ClickRequest {
  /** The command line without its end of line (its first maxLineBytes if too long). */
  line: string;
  words: ClickWord[];
  lineTooLong: boolean;
  /** The data of a command that takes some. */
  body?: ClickRequestBody;
}

type BodyPlan = { kind: 'length'; length: number } | { kind: 'until'; terminator: string };

const CR = 0x0d;
const LF = 0x0a;
const EMPTY = Buffer.alloc(0);

/** How much data the command on `line` takes, as Click decides before reading it. */
export function bodyPlan(line: string, words: ClickWord[]): BodyPlan | undefined {
  const command = words[0] ? clickUpper(words[0].text) : '';
  switch (command) {
    case 'READDATA':
    case 'WRITEDATA':
    case 'SETDATA': {
      if (words.length !== 3) return undefined;
      const length = parseClickInteger(words[2]!.text);
      return length === undefined || length < 0 ? undefined : { kind: 'length', length };
    }
    case 'LLRPC': {
      if (words.length !== 3) return undefined;
      const length = parseClickInteger(words[2]!.text);
      return length === undefined || length < 0 ? undefined : { kind: 'length', length };
    }
    case 'READUNTIL':
    case 'WRITEUNTIL':
      if (words.length < 2) return undefined;
      return { kind: 'until', terminator: words.length > 2 ? line.slice(words[2]!.start, words[words.length - 1]!.end) : '' };
    default:
      return undefined;
  }
}

export class ClickCommandReader {
  private pending: Buffer = EMPTY;
  /** Where the search for the next line end resumes in `pending`. */
  private scanFrom = 0;
  /** A lone CR ended the last line at the end of what had arrived: a LF next belongs to it. */
  private skipLf = false;
  private ended = false;
  /** A command line in progress that is too long: its head, while the rest is skipped. */
  private longLine: string | undefined;
  /** The command whose data is being read. */
  private current: { line: string; words: ClickWord[]; plan: BodyPlan } | undefined;
  /** Data bytes still to skip (a `length` body over the limit). */
  private skipRemaining = 0;
  /** An `until` body: the line being matched, and whether the body went over the limit. */
  private until: { line: TerminatorMatch; tooLarge: boolean } | undefined;
  /** For `until` bodies: where in `pending` the current line starts. */
  private untilLineStart = 0;
  /** A `length` body over the limit is being skipped. */
  private skipping = false;

  constructor(private readonly limits: ReaderLimits) {}

  /** Bytes held for requests not yet complete. */
  get buffered(): number {
    return this.pending.length;
  }

  /** True while a request has started but is not complete (for a completion deadline). */
  get inRequest(): boolean {
    return this.pending.length > 0 || this.longLine !== undefined || this.current !== undefined;
  }

  push(chunk: Buffer): void {
    if (this.ended || chunk.length === 0) return;
    if (this.skipLf) {
      this.skipLf = false;
      if (chunk[0] === LF) chunk = chunk.subarray(1);
      if (chunk.length === 0) return;
    }
    if (this.skipRemaining > 0) {
      const skipped = Math.min(this.skipRemaining, chunk.length);
      this.skipRemaining -= skipped;
      chunk = chunk.subarray(skipped);
      if (chunk.length === 0) return;
    }
    this.pending = this.pending.length === 0 ? chunk : Buffer.concat([this.pending, chunk]);
  }

  /** After QUIT: whatever else was sent is dropped (Click clears its input too), and nothing more is taken. */
  discard(): void {
    this.pending = EMPTY;
    this.current = undefined;
    this.longLine = undefined;
    this.ended = true;
  }

  /** The input is over: what is left is delivered as Click would parse it at end of input. */
  end(): void {
    this.ended = true;
  }

  /** The next complete request, or undefined until more bytes arrive. */
  next(): ClickRequest | undefined {
    for (;;) {
      if (this.current) return this.readBody();
      const line = this.readLine();
      if (line === undefined) return undefined;
      const words = clickWords(line.text);
      if (words.length === 0) continue; // an empty line: Click says nothing
      const plan = line.tooLong ? undefined : bodyPlan(line.text, words);
      if (!plan) return { line: line.text, words, lineTooLong: line.tooLong };
      this.current = { line: line.text, words, plan };
      this.untilLineStart = 0;
      this.until = undefined;
      this.skipping = false;
      if (plan.kind === 'length' && plan.length > this.limits.maxDataBytes) this.startSkippingLength(plan.length);
    }
  }

  private take(length: number): Buffer {
    const taken = this.pending.subarray(0, length);
    let rest = length >= this.pending.length ? EMPTY : this.pending.subarray(length);
    // A few bytes left of a large read would pin the whole read in memory: keep a copy.
    if (rest.length > 0 && rest.buffer.byteLength > 2 * rest.length + 4096) rest = Buffer.from(rest);
    this.pending = rest;
    this.scanFrom = 0;
    return taken;
  }

  /** Consumes `length` bytes and the line end that follows; a lone CR at the very end arms skipLf. */
  private consumeLine(length: number): void {
    const end = this.pending[length];
    let consumed = length + 1;
    if (end === CR) {
      if (length + 1 < this.pending.length) {
        if (this.pending[length + 1] === LF) consumed++;
      } else if (!this.ended) {
        this.skipLf = true;
      }
    }
    this.take(consumed);
  }

  private readLine(): { text: string; tooLong: boolean } | undefined {
    const pending = this.pending;
    let at = -1;
    for (let i = this.scanFrom; i < pending.length; i++) {
      const byte = pending[i];
      if (byte === LF || byte === CR) {
        at = i;
        break;
      }
    }
    if (at >= 0) {
      // Over the limit whether it came in one read or many: only its head is kept.
      const head = this.longLine ?? (at > this.limits.maxLineBytes ? pending.toString('latin1', 0, this.limits.maxLineBytes) : undefined);
      this.longLine = undefined;
      const text = head ?? pending.toString('latin1', 0, at);
      this.consumeLine(at);
      return { text, tooLong: head !== undefined };
    }
    if (this.longLine === undefined && pending.length > this.limits.maxLineBytes) {
      this.longLine = pending.toString('latin1', 0, this.limits.maxLineBytes);
    }
    if (this.longLine !== undefined) {
      // Keep nothing of a line over the limit: its head is saved, the rest goes.
      this.take(pending.length);
    } else {
      this.scanFrom = pending.length;
    }
    if (this.ended && (this.pending.length > 0 || this.longLine !== undefined)) {
      const head = this.longLine;
      this.longLine = undefined;
      const text = head ?? this.take(this.pending.length).toString('latin1');
      return { text, tooLong: head !== undefined };
    }
    return undefined;
  }

  private startSkippingLength(length: number): void {
    const skipped = Math.min(length, this.pending.length);
    this.take(skipped);
    this.skipRemaining = length - skipped;
    this.skipping = true;
  }

  private finish(body: ClickRequestBody): ClickRequest {
    const current = this.current!;
    this.current = undefined;
    this.skipping = false;
    this.until = undefined;
    return { line: current.line, words: current.words, lineTooLong: false, body };
  }

  private readBody(): ClickRequest | undefined {
    const { plan } = this.current!;
    if (plan.kind === 'length') {
      if (this.skipping) {
        if (this.skipRemaining === 0) return this.finish({ text: '', tooLarge: true, incomplete: false });
        return this.ended ? this.finish({ text: '', tooLarge: true, incomplete: true }) : undefined;
      }
      if (this.pending.length >= plan.length) {
        return this.finish({ text: this.take(plan.length).toString('latin1'), tooLarge: false, incomplete: false });
      }
      // Cut by the end of input: "Not enough data", and, as on Click, the bytes it did not
      // take are then read as a command (xianet/click-control-port.test.ts).
      return this.ended ? this.finish({ text: '', tooLarge: false, incomplete: true }) : undefined;
    }
    return this.readUntil(plan.terminator);
  }

  /**
   * Lines until one that is the terminator: the line starts with `terminator` and the
   * rest of it is white space (so leading spaces count and trailing ones do not), as
   * Click compares. The body is everything before that line, line ends included.
   *
   * `pending` holds the body kept so far (bytes before `untilLineStart`, none once the
   * body is over the limit) and then the current line. A current line that would take
   * the body over the limit is folded into `until.line` (what could still match) and
   * dropped: if it is not the terminator the body is too large anyway.
   */
  private readUntil(terminator: string): ClickRequest | undefined {
    const until = (this.until ??= { line: new TerminatorMatch(terminator), tooLarge: false });
    /** A CR at the very end that waits for its next byte. */
    let waitAt: number | undefined;
    for (;;) {
      const pending = this.pending;
      let at = -1;
      for (let i = this.scanFrom; i < pending.length; i++) {
        if (pending[i] === LF || pending[i] === CR) {
          at = i;
          break;
        }
      }
      if (at < 0) break;
      let next = at + 1;
      let loneCr = false;
      if (pending[at] === CR) {
        if (at + 1 < pending.length) {
          if (pending[at + 1] === LF) next++;
        } else if (!this.ended) {
          // A CR that may be half of a CR LF. The terminator's line can end here (its LF,
          // if it comes, is dropped); a body line waits for the next byte, which may be
          // the LF that belongs to the body.
          if (!until.line.matchesWith(pending, this.untilLineStart, at)) {
            waitAt = at;
            break;
          }
          loneCr = true;
        }
      }
      until.line.feed(pending, this.untilLineStart, at);
      if (until.line.matches()) {
        const body = until.tooLarge ? '' : pending.toString('latin1', 0, this.untilLineStart);
        this.take(next);
        if (loneCr) this.skipLf = true;
        return this.finish({ text: body, tooLarge: until.tooLarge, incomplete: false });
      }
      if (until.line.folded || next > this.limits.maxDataBytes) until.tooLarge = true;
      until.line.reset();
      if (until.tooLarge) {
        this.take(next);
        this.untilLineStart = 0;
      } else {
        this.untilLineStart = next;
        this.scanFrom = next;
      }
    }
    // No line end yet: fold the current line if keeping it would pass the limit (a
    // waiting CR stays, to be looked at with the byte after it).
    const end = waitAt ?? this.pending.length;
    if (this.pending.length > this.limits.maxDataBytes || until.tooLarge) {
      until.line.feed(this.pending, this.untilLineStart, end);
      if (end > this.untilLineStart) until.line.folded = true;
      const cr = this.pending.subarray(end);
      this.pending = until.tooLarge ? Buffer.from(cr) : Buffer.concat([this.pending.subarray(0, this.untilLineStart), cr]);
      if (until.tooLarge) this.untilLineStart = 0;
    }
    this.scanFrom = waitAt === undefined ? this.pending.length : this.pending.length - 1;
    return this.ended ? this.finishIncomplete(until.tooLarge) : undefined;
  }

  /**
   * The input ended inside a READUNTIL/WRITEUNTIL body: what arrived of it is the body's,
   * never a command line of its own. (It used to be read as one, unless a line over the
   * data limit had been folded away first, so how the bytes were split decided whether a
   * command came out of body data.)
   */
  private finishIncomplete(tooLarge: boolean): ClickRequest {
    this.take(this.pending.length);
    return this.finish({ text: '', tooLarge, incomplete: true });
  }
}

/** Whether the bytes of one line, fed in pieces, are `terminator` followed by white space only. */
class TerminatorMatch {
  private prefix = '';
  private restIsSpace = true;
  /** Part of this line was dropped (it is too long to be kept in a body). */
  folded = false;

  constructor(private readonly terminator: string) {}

  feed(buffer: Buffer, start: number, end: number): void {
    for (let i = start; i < end && this.restIsSpace; i++) {
      const byte = buffer[i]!;
      if (this.prefix.length < this.terminator.length) this.prefix += String.fromCharCode(byte);
      else if (!isClickSpace(byte)) this.restIsSpace = false;
    }
  }

  matches(): boolean {
    return this.restIsSpace && this.prefix === this.terminator;
  }

  /** Whether the line would match if these bytes ended it (nothing is kept). */
  matchesWith(buffer: Buffer, start: number, end: number): boolean {
    const saved = { prefix: this.prefix, restIsSpace: this.restIsSpace };
    this.feed(buffer, start, end);
    const result = this.matches();
    this.prefix = saved.prefix;
    this.restIsSpace = saved.restIsSpace;
    return result;
  }

  reset(): void {
    this.prefix = '';
    this.restIsSpace = true;
    this.folded = false;
  }
}
