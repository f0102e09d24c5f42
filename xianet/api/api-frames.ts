/**
 * Framing of the application API over a Unix socket: each frame is
 *
 *   u32  frame length (bytes after this field)
 *   u16  JSON header length
 *   ...  JSON header ({ op | event | id, ... })
 *   ...  binary body (datagram data, chunk contents), possibly empty
 *
 * STREAM connections do not travel in frames: each gets a socket of its own that
 * becomes a plain byte pipe after one `attach` frame, so backpressure is the
 * kernel's and bulk data is never re-framed.
 */
import { XmigError } from '../../shared/errors.js';

export const MAX_FRAME = 16 * 1024 * 1024;

export type Header = Record<string, unknown>;

export interface Frame {
  header: Header;
  body: Buffer;
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
  const bodyLength = body.reduce((sum, part) => sum + part.length, 0);
  const head = Buffer.allocUnsafe(6 + json.length);
  head.writeUInt32BE(2 + json.length + bodyLength, 0);
  head.writeUInt16BE(json.length, 4);
  json.copy(head, 6);
  return [head, ...body.filter((part) => part.length > 0).map((part) => (Buffer.isBuffer(part) ? part : Buffer.from(part.buffer, part.byteOffset, part.length)))];
}

/** Writes a frame's parts as one writev: no copy of the body, nothing interleaved. */
export function writeFrame(socket: { cork(): void; uncork(): void; write(chunk: Buffer): boolean }, parts: readonly Buffer[]): boolean {
  if (parts.length === 1) return socket.write(parts[0]!);
  socket.cork();
  let writable = true;
  for (const part of parts) writable = socket.write(part);
  socket.uncork();
  return writable;
}

function parseFrame(bytes: Buffer, length: number): Frame {
  const jsonLength = bytes.readUInt16BE(4);
  if (jsonLength > length - 2) throw new XmigError('ERR_MESSAGE_MALFORMED', 'API frame header longer than the frame');
  let header: unknown;
  try {
    header = JSON.parse(bytes.toString('utf8', 6, 6 + jsonLength));
  } catch {
    throw new XmigError('ERR_MESSAGE_MALFORMED', 'API frame header is not JSON');
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header)) {
    throw new XmigError('ERR_MESSAGE_MALFORMED', 'API frame header is not an object');
  }
  return { header: header as Header, body: bytes.subarray(6 + jsonLength, 4 + length) };
}

function checkLength(length: number): void {
  if (length < 2 || length > MAX_FRAME) throw new XmigError('ERR_MESSAGE_MALFORMED', `API frame of ${length} bytes`);
}

/**
 * Accumulates bytes and yields whole frames; throws on a frame that breaks the rules.
 * Use one of `push` (buffers the decoder may keep) or `pushBorrowed` (a buffer the
 * caller reuses) per decoder, not both.
 */
export class FrameDecoder {
  private pending: Buffer[] = [];
  private pendingLength = 0;
  /** pushBorrowed: the length field being read, then the frame being filled. */
  private readonly head = Buffer.allocUnsafe(4);
  private headFill = 0;
  private frame: Buffer | undefined;
  private frameFill = 0;

  /** Adds bytes; returns the whole frames now available, at most `limit` of them (the rest stay pending). */
  push(chunk: Buffer, limit = Infinity): Frame[] {
    if (chunk.length > 0) {
      this.pending.push(chunk);
      this.pendingLength += chunk.length;
    }
    const frames: Frame[] = [];
    while (this.pendingLength >= 4 && frames.length < limit) {
      const head = this.peek(4);
      const length = head.readUInt32BE(0);
      checkLength(length);
      if (this.pendingLength < 4 + length) break;
      frames.push(parseFrame(this.take(4 + length), length));
    }
    return frames;
  }

  /**
   * Adds bytes from a buffer the caller will overwrite (a socket's `onread` buffer):
   * each byte is copied once, straight into the frame it belongs to, so a large
   * frame costs one allocation instead of one per socket read plus a join.
   */
  pushBorrowed(view: Buffer): Frame[] {
    const frames: Frame[] = [];
    let at = 0;
    while (at < view.length) {
      if (!this.frame) {
        const n = Math.min(4 - this.headFill, view.length - at);
        view.copy(this.head, this.headFill, at, at + n);
        this.headFill += n;
        at += n;
        if (this.headFill < 4) break;
        const length = this.head.readUInt32BE(0);
        checkLength(length);
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
        const frame = this.frame;
        this.frame = undefined;
        frames.push(parseFrame(frame, frame.length - 4));
      }
    }
    return frames;
  }

  /** Bytes received after the last whole frame (a stream socket's first data after `attach`). */
  rest(): Buffer {
    const rest = Buffer.concat(this.pending);
    this.pending = [];
    this.pendingLength = 0;
    return rest;
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
