/**
 * The disk migration's own protocol, between `xmig migrate --disk` on the source host and
 * `xmig disk-target` next to the destination QEMU, on STREAMs to the disk SID. Each
 * stream opens with one frame that says what it is:
 *
 *  - a control stream (OPEN_CONTROL), one per migration, on which the two sides agree on
 *    the target disk and step through the migration's phases;
 *  - an NBD stream (OPEN_NBD), one per connection the source QEMU's NBD client makes
 *    to the tunnel: after that frame the stream carries NBD bytes, untouched, both ways.
 *
 * Frames are `u32 length, u8 type, body` (big-endian; length counts type + body), as the
 * migration control protocol's are:
 *
 *   1 OPEN_CONTROL  session(16) version(u8) sourceBytes(u64) source(str)
 *   2 OPEN_NBD      session(16) version(u8)
 *   3 TARGET        bytes(u64) export(str) format(str) node(str) file(str) nbd(str)   the disk on offer;
 *                   nbd: '' to go through the tunnel, or host:port where the export listens
 *                   on TCP (QEMU's own NBD between the hosts: the TCP/IP baseline)
 *   4 REFUSED       message(str)                   this migration cannot use the target
 *   5 MIRRORED      the mirror has concluded and the source has let go of the export
 *   6 RELEASED      the export is gone: the destination QEMU may take its disk
 *   7 DONE          the migration completed
 *   8 ABORT         reason(str)                    the migration is off: discard the disk
 *
 * `str` is u16 length + UTF-8, at most MAX_TEXT_BYTES. Every field is read through
 * shared/wire.ts: whatever a peer sends, decoding yields a message or throws
 * MalformedPacketError.
 */
import { MalformedPacketError } from '../shared/errors.js';
import { WireReader, WireWriter } from '../shared/wire.js';

export const DiskMessageType = {
  OPEN_CONTROL: 1,
  OPEN_NBD: 2,
  TARGET: 3,
  REFUSED: 4,
  MIRRORED: 5,
  RELEASED: 6,
  DONE: 7,
  ABORT: 8,
} as const;

export const DISK_PROTOCOL_VERSION = 1;
export const DISK_SESSION_LENGTH = 16;
/** The frame layout: u32 length (of type + body), u8 type. */
export const DiskFrameLayout = { LENGTH: 0, TYPE: 4, HEADER: 5 } as const;
export const MAX_TEXT_BYTES = 4096;
/** The largest frame there is: a TARGET with five texts at their longest. */
export const MAX_DISK_FRAME = 1 + 8 + 5 * (2 + MAX_TEXT_BYTES);

export type DiskMessage =
  | { type: typeof DiskMessageType.OPEN_CONTROL; session: Buffer; sourceBytes: number; source: string }
  | { type: typeof DiskMessageType.OPEN_NBD; session: Buffer }
  | { type: typeof DiskMessageType.TARGET; bytes: number; exportName: string; format: string; node: string; file: string; nbd: string }
  | { type: typeof DiskMessageType.REFUSED; message: string }
  | { type: typeof DiskMessageType.MIRRORED }
  | { type: typeof DiskMessageType.RELEASED }
  | { type: typeof DiskMessageType.DONE }
  | { type: typeof DiskMessageType.ABORT; reason: string };

/** Cut to MAX_TEXT_BYTES on a character boundary (an over-long reason must not fail the send). */
function clip(text: string): string {
  let bytes = Buffer.from(text, 'utf8');
  if (bytes.length <= MAX_TEXT_BYTES) return text;
  bytes = bytes.subarray(0, MAX_TEXT_BYTES);
  // Drop a partial character at the cut.
  return bytes.toString('utf8').replace(/\uFFFD+$/, '');
}

export function encodeDiskMessage(message: DiskMessage): Buffer {
  const w = new WireWriter(64);
  w.u32(0).u8(message.type);
  switch (message.type) {
    case DiskMessageType.OPEN_CONTROL:
      w.fixed(message.session, DISK_SESSION_LENGTH).u8(DISK_PROTOCOL_VERSION).u64(message.sourceBytes).string(clip(message.source));
      break;
    case DiskMessageType.OPEN_NBD:
      w.fixed(message.session, DISK_SESSION_LENGTH).u8(DISK_PROTOCOL_VERSION);
      break;
    case DiskMessageType.TARGET:
      w.u64(message.bytes).string(clip(message.exportName)).string(clip(message.format)).string(clip(message.node)).string(clip(message.file)).string(clip(message.nbd));
      break;
    case DiskMessageType.REFUSED:
      w.string(clip(message.message));
      break;
    case DiskMessageType.ABORT:
      w.string(clip(message.reason));
      break;
    case DiskMessageType.MIRRORED:
    case DiskMessageType.RELEASED:
    case DiskMessageType.DONE:
      break;
  }
  const frame = w.finish();
  frame.writeUInt32BE(frame.length - DiskFrameLayout.TYPE, DiskFrameLayout.LENGTH);
  return frame;
}

function text(r: WireReader, field: string): string {
  const bytes = r.bytes(field);
  if (bytes.length > MAX_TEXT_BYTES) throw new MalformedPacketError(`disk ${field} of ${bytes.length} bytes is longer than ${MAX_TEXT_BYTES}`);
  return bytes.toString('utf8');
}

function session(r: WireReader): Buffer {
  const id = Buffer.from(r.fixed(DISK_SESSION_LENGTH, 'session'));
  const version = r.u8('version');
  if (version !== DISK_PROTOCOL_VERSION) throw new MalformedPacketError(`disk protocol version ${version} is not ${DISK_PROTOCOL_VERSION}`);
  return id;
}

export function diskMessageName(type: number): string {
  return Object.entries(DiskMessageType).find(([, code]) => code === type)?.[0] ?? `type ${type}`;
}

/** Decodes a frame's body (after the header). Throws MalformedPacketError on anything but a well-formed message. */
export function decodeDiskMessage(type: number, body: Buffer): DiskMessage {
  const r = new WireReader(body, `disk ${diskMessageName(type)}`);
  let message: DiskMessage;
  switch (type) {
    case DiskMessageType.OPEN_CONTROL:
      message = { type, session: session(r), sourceBytes: r.u64('source bytes'), source: text(r, 'source') };
      break;
    case DiskMessageType.OPEN_NBD:
      message = { type, session: session(r) };
      break;
    case DiskMessageType.TARGET:
      message = { type, bytes: r.u64('bytes'), exportName: text(r, 'export'), format: text(r, 'format'), node: text(r, 'node'), file: text(r, 'file'), nbd: text(r, 'nbd') };
      break;
    case DiskMessageType.REFUSED:
      message = { type, message: text(r, 'message') };
      break;
    case DiskMessageType.ABORT:
      message = { type, reason: text(r, 'reason') };
      break;
    case DiskMessageType.MIRRORED:
    case DiskMessageType.RELEASED:
    case DiskMessageType.DONE:
      message = { type };
      break;
    default:
      throw new MalformedPacketError(`disk message type ${type}`);
  }
  r.end();
  return message;
}

/**
 * Splits a byte stream into disk messages. `rest()` hands back what came after the
 * frames read so far: on an NBD stream, the bytes behind OPEN_NBD belong to NBD.
 */
export class DiskMessageReader {
  private pending: Buffer = Buffer.alloc(0);

  push(chunk: Buffer, limit = Infinity): DiskMessage[] {
    this.pending = this.pending.length ? Buffer.concat([this.pending, chunk]) : chunk;
    const messages: DiskMessage[] = [];
    while (messages.length < limit && this.pending.length >= DiskFrameLayout.HEADER) {
      const length = this.pending.readUInt32BE(DiskFrameLayout.LENGTH);
      const type = this.pending[DiskFrameLayout.TYPE]!;
      // Judged on the header alone: a huge announced frame is refused before it is buffered.
      if (length < 1 || length > MAX_DISK_FRAME) throw new MalformedPacketError(`disk ${diskMessageName(type)} frame of ${length} bytes (at most ${MAX_DISK_FRAME})`);
      if (this.pending.length < DiskFrameLayout.TYPE + length) break;
      messages.push(decodeDiskMessage(type, this.pending.subarray(DiskFrameLayout.HEADER, DiskFrameLayout.TYPE + length)));
      this.pending = this.pending.subarray(DiskFrameLayout.TYPE + length);
    }
    return messages;
  }

  /** The bytes not yet taken as frames. */
  rest(): Buffer {
    const rest = this.pending;
    this.pending = Buffer.alloc(0);
    return rest;
  }
}
