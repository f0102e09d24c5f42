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
  const json = Buffer.from(JSON.stringify(header), 'utf8');
  const frame = Buffer.allocUnsafe(6 + json.length + body.length);
  frame.writeUInt32BE(2 + json.length + body.length, 0);
  frame.writeUInt16BE(json.length, 4);
  json.copy(frame, 6);
  frame.set(body, 6 + json.length);
  return frame;
}

/** Accumulates bytes and yields whole frames; throws on a frame that breaks the rules. */
export class FrameDecoder {
  private pending: Buffer[] = [];
  private pendingLength = 0;

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
      if (length < 2 || length > MAX_FRAME) throw new XmigError('ERR_MESSAGE_MALFORMED', `API frame of ${length} bytes`);
      if (this.pendingLength < 4 + length) break;
      const bytes = this.take(4 + length);
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
      frames.push({ header: header as Header, body: bytes.subarray(6 + jsonLength) });
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
