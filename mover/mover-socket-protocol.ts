/**
 * The wire of a host node's mover socket (mover-service.ts), where `xmig send
 * --via-node` and `xmig recv --via-node` hand the migration stream to the node:
 *
 *   client -> node: one request line (JSON, at most MAX_REQUEST_BYTES, `\n`), then frames
 *   both ways:      frames: type (u8), payload length (u32, big-endian), payload
 *
 *   DATA    stream bytes (send: QEMU's stream into the node; recv: the node's out)
 *   END     empty: the client's stream ended cleanly (send only). A client that goes
 *           away closes its socket too, and on a Unix socket that reads as a plain end:
 *           without END the node takes the stream as cut short and fails the migration.
 *   STATUS  a JSON object (at most MAX_STATUS_BYTES): {"connected":true} (send: the
 *           receiver answered), {"listening":"<DAG>"} (recv), and last of all
 *           {"ok":true,"report":{...}} or {"ok":false,"error":"..."}.
 *
 * For recv, success is STATUS ok after the data: a socket that ends without it is a
 * failed migration, whatever bytes came before.
 *
 * With `qemuSocket` the stream does not cross this socket at all: QEMU's own `unix:`
 * migration channel is the node's (`migrate unix:PATH` on the source, `-incoming
 * unix:PATH` on the destination), and the client only holds the migration open and
 * hears how it went. send: the node listens at PATH for QEMU's one connection and says
 * {"qemuListening":"PATH"}; recv: the node connects to QEMU's listening PATH once a
 * sender has come. No DATA or END goes either way then; the client going away ends the
 * migration as before.
 *
 * With `stdio` (stdio-handover.ts) the client offers its own pipe from QEMU (send: its
 * stdin) or to QEMU (recv: its stdout), and the node's first STATUS answers it:
 * {"stdio":"taken"}: the node reads or writes that pipe itself, and as with
 * `qemuSocket` no DATA or END crosses this socket; {"stdio":"refused","reason":"..."}:
 * the stream goes in DATA frames as without it. Every read is bounded and checked:
 * `FrameReader` throws `MalformedPacketError` on anything else, never a RangeError.
 */
import { errorMessage, MalformedPacketError } from '../shared/errors.js';

// The request line's schema is the node's business (mover-request.ts): a client only
// writes requests, and does not load a schema library to do it.
export type { MoverRequest, RecvRequest, SendRequest } from './mover-request.js';

export const MAX_REQUEST_BYTES = 8192;
export const MAX_STATUS_BYTES = 65536;
/** The most one DATA frame carries (the service writes a chunk per frame: 16 MiB is the largest chunk). */
export const MAX_DATA_BYTES = 16 * 1024 * 1024;
export const FRAME_HEADER_BYTES = 5;

export const FrameType = { DATA: 1, END: 2, STATUS: 3 } as const;
export type FrameType = (typeof FrameType)[keyof typeof FrameType];

/** A frame's header; the payload goes out after it as it is (no copy). */
export function frameHeader(type: FrameType, length: number): Buffer {
  const header = Buffer.allocUnsafe(FRAME_HEADER_BYTES);
  header.writeUInt8(type, 0);
  header.writeUInt32BE(length, 1);
  return header;
}

export function statusFrame(status: Record<string, unknown>): Buffer {
  const body = Buffer.from(JSON.stringify(status), 'utf8');
  return Buffer.concat([frameHeader(FrameType.STATUS, body.length), body]);
}

export type Frame = { type: typeof FrameType.DATA; data: Buffer } | { type: typeof FrameType.END } | { type: typeof FrameType.STATUS; status: Record<string, unknown> };

/**
 * Frames out of socket reads however they are cut. DATA payloads are views of the
 * reads (one frame's bytes may come as several views: each is handed on as it comes,
 * so nothing is joined); a STATUS is gathered (copied: it is small, and a read's memory
 * may be recycled once `push` returns) and parsed.
 */
export class FrameReader {
  private header = Buffer.alloc(FRAME_HEADER_BYTES);
  private headerHave = 0;
  /** Of the frame being read: its type and the payload bytes still to come. */
  private type: FrameType | undefined;
  private remaining = 0;
  private status: Buffer[] = [];
  private failed = false;

  /** Calls `onFrame` for every frame (DATA possibly in pieces) in `data`; throws MalformedPacketError. */
  push(data: Buffer, onFrame: (frame: Frame) => void): void {
    if (this.failed) throw new MalformedPacketError('the mover socket sent more after a malformed frame');
    let at = 0;
    try {
      while (at < data.length) {
        if (this.type === undefined) {
          const take = Math.min(FRAME_HEADER_BYTES - this.headerHave, data.length - at);
          data.copy(this.header, this.headerHave, at, at + take);
          this.headerHave += take;
          at += take;
          if (this.headerHave < FRAME_HEADER_BYTES) return;
          this.headerHave = 0;
          this.begin(this.header.readUInt8(0), this.header.readUInt32BE(1), onFrame);
          continue;
        }
        const take = Math.min(this.remaining, data.length - at);
        const piece = data.subarray(at, at + take);
        at += take;
        this.remaining -= take;
        if (this.type === FrameType.DATA) onFrame({ type: FrameType.DATA, data: piece });
        else this.status.push(Buffer.from(piece));
        if (this.remaining === 0) this.finish(onFrame);
      }
    } catch (error) {
      this.failed = true;
      throw error;
    }
  }

  /** Bytes of a frame begun and not finished (a clean end of the socket has none). */
  get partial(): boolean {
    return this.type !== undefined || this.headerHave > 0;
  }

  private begin(type: number, length: number, onFrame: (frame: Frame) => void): void {
    switch (type) {
      case FrameType.DATA:
        if (length > MAX_DATA_BYTES) throw new MalformedPacketError(`a DATA frame of ${length} bytes: at most ${MAX_DATA_BYTES}`);
        break;
      case FrameType.END:
        if (length !== 0) throw new MalformedPacketError(`an END frame with ${length} bytes: it has none`);
        break;
      case FrameType.STATUS:
        if (length > MAX_STATUS_BYTES) throw new MalformedPacketError(`a STATUS frame of ${length} bytes: at most ${MAX_STATUS_BYTES}`);
        break;
      default:
        throw new MalformedPacketError(`unknown frame type ${type}`);
    }
    this.type = type;
    this.remaining = length;
    if (length === 0) this.finish(onFrame);
  }

  private finish(onFrame: (frame: Frame) => void): void {
    const type = this.type!;
    this.type = undefined;
    if (type === FrameType.END) onFrame({ type });
    else if (type === FrameType.STATUS) {
      const text = Buffer.concat(this.status).toString('utf8');
      this.status = [];
      let status: unknown;
      try {
        status = JSON.parse(text);
      } catch (error) {
        throw new MalformedPacketError(`a STATUS frame that is not JSON: ${errorMessage(error)}`);
      }
      if (typeof status !== 'object' || status === null || Array.isArray(status)) throw new MalformedPacketError('a STATUS frame that is not a JSON object');
      onFrame({ type, status: status as Record<string, unknown> });
    }
  }
}
