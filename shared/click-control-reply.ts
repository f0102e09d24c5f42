/**
 * The reply side of Click's ControlSocket protocol, as bytes arrive from a server (an
 * xia-core Click router or an `xmig node`): the greeting `Click::ControlSocket/1.3`,
 * then per request one reply of status lines — `520-...` continues, `520 ...` ends —
 * and, after a successful read, `DATA n` and n bytes. A reply may arrive in any
 * pieces; lines end in CR LF (Click) or LF.
 *
 * Bounded: a line longer than `maxLineBytes`, more than `maxLines` lines or DATA over
 * `maxDataBytes` is a protocol error (an XmigError, ERR_CONTROL), never a buffer that
 * grows with what a broken or hostile server sends.
 */
import { XmigError } from './errors.js';

export interface ClickReply {
  /** The status of the last line (Click gives every line of a reply the same code). */
  status: number;
  /** Each line's text, after the code and its separator. */
  messages: string[];
  /** The DATA of a successful read (latin1), if one was expected. */
  data: string | undefined;
}

export interface ReplyLimits {
  maxLineBytes: number;
  maxLines: number;
  maxDataBytes: number;
}

export const DEFAULT_REPLY_LIMITS: ReplyLimits = { maxLineBytes: 256 * 1024, maxLines: 4096, maxDataBytes: 64 * 1024 * 1024 };

/** Commands whose successful reply carries DATA. */
export function replyCarriesData(commandLine: string): boolean {
  return /^\s*(READ|GET|READDATA|READUNTIL|LLRPC)(\s|$)/i.test(commandLine);
}

const LF = 0x0a;
const EMPTY = Buffer.alloc(0);

export class ClickReplyParser {
  private pending: Buffer = EMPTY;
  private scanFrom = 0;
  private greeted = false;
  private lines: Array<{ code: number; text: string }> = [];
  private dataLength: number | undefined;
  /** The server's greeting, once read. */
  greeting: string | undefined;

  constructor(private readonly limits: ReplyLimits = DEFAULT_REPLY_LIMITS) {}

  push(chunk: Buffer): void {
    if (chunk.length > 0) this.pending = this.pending.length === 0 ? chunk : Buffer.concat([this.pending, chunk]);
  }

  /** Bytes received but not yet parsed into a greeting or reply. */
  get buffered(): number {
    return this.pending.length;
  }

  /** True once a reply has started to arrive (some of its bytes are here). */
  get replyStarted(): boolean {
    return this.greeted && (this.pending.length > 0 || this.lines.length > 0);
  }

  private line(): string | undefined {
    const at = this.pending.indexOf(LF, this.scanFrom);
    if (at < 0) {
      if (this.pending.length > this.limits.maxLineBytes) {
        throw new XmigError('ERR_CONTROL', `control-port reply line longer than ${this.limits.maxLineBytes} bytes`);
      }
      this.scanFrom = this.pending.length;
      return undefined;
    }
    if (at > this.limits.maxLineBytes) throw new XmigError('ERR_CONTROL', `control-port reply line longer than ${this.limits.maxLineBytes} bytes`);
    const end = at > 0 && this.pending[at - 1] === 0x0d ? at - 1 : at;
    const text = this.pending.toString('latin1', 0, end);
    this.pending = at + 1 >= this.pending.length ? EMPTY : this.pending.subarray(at + 1);
    this.scanFrom = 0;
    return text;
  }

  /** The greeting line, once it has arrived; an error if the server is not a Click control socket. */
  takeGreeting(): string | undefined {
    if (this.greeted) return this.greeting;
    const line = this.line();
    if (line === undefined) return undefined;
    if (!/^Click::ControlSocket\/\d+\.\d+$/.test(line)) {
      throw new XmigError('ERR_CONTROL', `not a Click control socket (it said "${printable(line)}")`);
    }
    this.greeted = true;
    this.greeting = line;
    return line;
  }

  /**
   * The next complete reply, or undefined until more bytes arrive. `expectData`: the
   * request was a read, so a 2xx reply is followed by `DATA n`.
   */
  takeReply(expectData: boolean): ClickReply | undefined {
    if (!this.greeted && this.takeGreeting() === undefined) return undefined;
    for (;;) {
      if (this.dataLength !== undefined) {
        if (this.pending.length < this.dataLength) return undefined;
        const data = this.pending.toString('latin1', 0, this.dataLength);
        this.pending = this.dataLength >= this.pending.length ? EMPTY : this.pending.subarray(this.dataLength);
        this.dataLength = undefined;
        return this.finish(data);
      }
      const line = this.line();
      if (line === undefined) return undefined;
      const last = this.lines[this.lines.length - 1];
      if (last && last.code < 0) {
        // The status lines are complete; this is the DATA header of a read.
        const match = /^DATA (\d{1,12})$/.exec(line);
        if (!match) throw new XmigError('ERR_CONTROL', `expected "DATA n" after a read's status, got "${printable(line)}"`);
        const length = Number(match[1]);
        if (length > this.limits.maxDataBytes) throw new XmigError('ERR_CONTROL', `control-port DATA of ${length} bytes is over the ${this.limits.maxDataBytes}-byte limit`);
        last.code = -last.code;
        this.dataLength = length;
        continue;
      }
      const match = /^(\d{3})([ -])(.*)$/s.exec(line);
      if (!match) throw new XmigError('ERR_CONTROL', `unexpected control-port reply line "${printable(line)}"`);
      if (this.lines.length >= this.limits.maxLines) throw new XmigError('ERR_CONTROL', `control-port reply of more than ${this.limits.maxLines} lines`);
      const code = Number(match[1]);
      this.lines.push({ code, text: match[3]! });
      if (match[2] === '-') continue;
      if (expectData && code >= 200 && code < 300) {
        // Marked (negative) until its DATA header arrives.
        this.lines[this.lines.length - 1]!.code = -code;
        continue;
      }
      return this.finish(undefined);
    }
  }

  private finish(data: string | undefined): ClickReply {
    const lines = this.lines;
    this.lines = [];
    return { status: lines[lines.length - 1]!.code, messages: lines.map((l) => l.text), data };
  }
}

function printable(text: string): string {
  const short = text.length > 120 ? `${text.slice(0, 120)}...` : text;
  return short.replace(/[^\x20-\x7e]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
}
