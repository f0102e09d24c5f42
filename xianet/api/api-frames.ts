/**
 * Framing of the application API over a Unix socket: each frame is
 *
 *   off len field
 *   0   4   frame length (bytes after this field, u32 big-endian)
 *   4   2   JSON header length (u16)
 *   6   ..  JSON header ({ op | event | id, ... })
 *   ..  ..  binary body (datagram data, chunk contents), possibly empty
 *
 * STREAM connections do not travel in frames: each gets a socket of its own that
 * becomes a plain byte pipe after one `attach` frame, so backpressure is the
 * kernel's and bulk data is never re-framed.
 *
 * Decoding never throws: a frame whose header is not a JSON object is reported as
 * malformed (the framing still holds, the next frame is read), and a length out of
 * bounds is fatal (the framing is lost: the connection must go).
 */
import { XmigError } from '../../shared/errors.js';

export const FrameOffset = {
  LENGTH: 0,
  HEADER_LENGTH: 4,
  HEADER: 6,
} as const;

/** Bytes before the JSON header. */
export const FRAME_PREFIX = FrameOffset.HEADER;
/** Largest frame length the decoder takes by default (a frame's length field, after it). */
export const MAX_FRAME = 16 * 1024 * 1024;
/** Largest JSON header a frame carries: its length field is a u16. */
export const MAX_HEADER = 0xffff;

export type Header = Record<string, unknown>;

export interface Frame {
  header: Header;
  body: Buffer;
}

export interface DecodeResult {
  frames: Frame[];
  /** Frames skipped because their header is not a JSON object (each with why). */
  malformed: string[];
  /** Set when the framing is lost (a length out of bounds): nothing more can be read. */
  fatal: string | undefined;
}

export function encodeFrame(header: Header, body: Uint8Array = Buffer.alloc(0)): Buffer {
  const [head, ...rest] = encodeFrameParts(header, [body]);
  return rest.length === 0 ? head! : Buffer.concat([head!, ...rest]);
}

/**
 * A frame as the buffers to write: its head (length and JSON header), then the body
 * parts as they are. Chunks of megabytes go out behind their head with one writev
 * instead of being copied into a frame first.
 */
export function encodeFrameParts(header: Header, body: readonly Uint8Array[] = []): Buffer[] {
  const json = Buffer.from(JSON.stringify(header), 'utf8');
  if (json.length > MAX_HEADER) throw new XmigError('ERR_REFUSED', `API frame header of ${json.length} bytes is over the ${MAX_HEADER} a frame carries`);
  const bodyLength = body.reduce((sum, part) => sum + part.length, 0);
  const head = Buffer.allocUnsafe(FRAME_PREFIX + json.length);
  head.writeUInt32BE(FRAME_PREFIX - FrameOffset.HEADER_LENGTH + json.length + bodyLength, FrameOffset.LENGTH);
  head.writeUInt16BE(json.length, FrameOffset.HEADER_LENGTH);
  json.copy(head, FrameOffset.HEADER);
  return [head, ...body.filter((part) => part.length > 0).map((part) => (Buffer.isBuffer(part) ? part : Buffer.from(part.buffer, part.byteOffset, part.length)))];
}

/**
 * Writes a frame's parts as one writev: no copy of the body, nothing interleaved.
 * `written` runs once the socket is done with them (written, or failed).
 */
export function writeFrame(socket: { cork(): void; uncork(): void; write(chunk: Buffer, callback?: () => void): boolean }, parts: readonly Buffer[], written?: () => void): boolean {
  const last = parts.length - 1;
  if (last === 0) return socket.write(parts[0]!, written);
  socket.cork();
  let writable = true;
  for (let i = 0; i <= last; i++) writable = i < last ? socket.write(parts[i]!) : socket.write(parts[i]!, written);
  socket.uncork();
  return writable;
}

/** The bytes of one whole frame (length field included) as a frame, or why not. */
function parseFrame(bytes: Buffer, length: number): Frame | string {
  const jsonLength = bytes.readUInt16BE(FrameOffset.HEADER_LENGTH);
  if (jsonLength > length - 2) return `API frame header of ${jsonLength} bytes is longer than its ${length}-byte frame`;
  let header: unknown;
  try {
    header = JSON.parse(bytes.toString('utf8', FrameOffset.HEADER, FrameOffset.HEADER + jsonLength));
  } catch {
    return 'API frame header is not JSON';
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header)) return 'API frame header is not a JSON object';
  return { header: header as Header, body: bytes.subarray(FrameOffset.HEADER + jsonLength, FrameOffset.HEADER_LENGTH + length) };
}

/**
 * Accumulates bytes and yields whole frames. Use one of `push` (buffers the decoder may
 * keep) or `pushBorrowed` (a buffer the caller reuses) per decoder, not both.
 */
export class FrameDecoder {
  private pending: Buffer[] = [];
  private pendingLength = 0;
  /** pushBorrowed: the length field being read, then the frame being filled. */
  private readonly head = Buffer.allocUnsafe(4);
  private headFill = 0;
  private frame: Buffer | undefined;
  private frameFill = 0;
  private lost: string | undefined;

  constructor(readonly maxFrame: number = MAX_FRAME) {}

  /** Bytes held that do not make a whole frame yet (a frame being received). */
  get buffered(): number {
    return this.frame ? this.frameFill + this.headFill : this.pendingLength + this.headFill;
  }

  /** The length field of the frame being received, once its 4 bytes are in (0 if none). */
  get declared(): number {
    if (this.frame) return this.frame.length - 4;
    if (this.pendingLength >= 4) return this.peek(4).readUInt32BE(0);
    return 0;
  }

  private checkLength(length: number): string | undefined {
    if (length < 2 || length > this.maxFrame) return `API frame of ${length} bytes (allowed: 2..${this.maxFrame})`;
    return undefined;
  }

  /** Adds bytes; returns the whole frames now available, at most `limit` of them (the rest stay pending). */
  push(chunk: Buffer, limit = Infinity): DecodeResult {
    const result: DecodeResult = { frames: [], malformed: [], fatal: this.lost };
    if (this.lost) return result;
    if (chunk.length > 0) {
      this.pending.push(chunk);
      this.pendingLength += chunk.length;
    }
    while (this.pendingLength >= 4 && result.frames.length < limit) {
      const length = this.peek(4).readUInt32BE(0);
      const bad = this.checkLength(length);
      if (bad) return this.lose(result, bad);
      if (this.pendingLength < 4 + length) break;
      const frame = parseFrame(this.take(4 + length), length);
      if (typeof frame === 'string') result.malformed.push(frame);
      else result.frames.push(frame);
    }
    return result;
  }

  /**
   * Adds bytes from a buffer the caller will overwrite (a socket's `onread` buffer):
   * each byte is copied once, straight into the frame it belongs to, so a large
   * frame costs one allocation instead of one per socket read plus a join.
   */
  pushBorrowed(view: Buffer): DecodeResult {
    const result: DecodeResult = { frames: [], malformed: [], fatal: this.lost };
    if (this.lost) return result;
    let at = 0;
    while (at < view.length) {
      if (!this.frame) {
        const n = Math.min(4 - this.headFill, view.length - at);
        view.copy(this.head, this.headFill, at, at + n);
        this.headFill += n;
        at += n;
        if (this.headFill < 4) break;
        const length = this.head.readUInt32BE(0);
        const bad = this.checkLength(length);
        if (bad) return this.lose(result, bad);
        this.frame = Buffer.allocUnsafe(4 + length);
        this.head.copy(this.frame, 0);
        this.frameFill = 4;
        this.headFill = 0;
      }
      const n = Math.min(this.frame.length - this.frameFill, view.length - at);
      view.copy(this.frame, this.frameFill, at, at + n);
      this.frameFill += n;
      at += n;
      if (this.frameFill === this.frame.length) {
        const whole = this.frame;
        this.frame = undefined;
        const frame = parseFrame(whole, whole.length - 4);
        if (typeof frame === 'string') result.malformed.push(frame);
        else result.frames.push(frame);
      }
    }
    return result;
  }

  /** Bytes received after the last whole frame (a stream socket's first data after `attach`). */
  rest(): Buffer {
    const rest = Buffer.concat(this.pending);
    this.pending = [];
    this.pendingLength = 0;
    return rest;
  }

  /** Forgets what is buffered (the connection is going). */
  clear(): void {
    this.pending = [];
    this.pendingLength = 0;
    this.frame = undefined;
    this.frameFill = 0;
    this.headFill = 0;
  }

  private lose(result: DecodeResult, why: string): DecodeResult {
    this.lost = why;
    this.clear();
    result.fatal = why;
    return result;
  }

  private peek(bytes: number): Buffer {
    if (this.pending[0]!.length >= bytes) return this.pending[0]!;
    this.pending = [Buffer.concat(this.pending)];
    return this.pending[0]!;
  }

  private take(bytes: number): Buffer {
    const all = this.pending.length === 1 ? this.pending[0]! : Buffer.concat(this.pending);
    const taken = all.subarray(0, bytes);
    const rest = all.subarray(bytes);
    this.pending = rest.length > 0 ? [rest] : [];
    this.pendingLength = rest.length;
    return taken;
  }
}
