/**
 * The migration control protocol (the paper's Fig. 3), on a reliable stream:
 * the sender announces the CIDs of a round, the receiver fetches and verifies them,
 * writes them out in order and acknowledges the round; DONE ends the migration.
 * Frames are `u32 length, u8 type, body` (big-endian):
 *
 *   1 HELLO     session(16) version(u8) mode(u8: 0 xia, 1 tcp) source DAG of the chunks (str)
 *   2 WELCOME   session(16) nextRound(u64)       where the receiver wants to resume
 *   3 OFFER     round(u64) count(u32) then per chunk: kind(u8) length(u32) [cid(20) if kind 0]
 *               kind 0: fetch by CID · kind 1: all zero bytes (nothing is fetched)
 *   4 ACK       round(u64)                       written out, verified
 *   5 DONE      rounds(u64) bytes(u64)
 *   6 DONE_ACK
 *   7 REQUEST   count(u32) cids(20 each)         (TCP mode: chunks travel in-band)
 *   8 DATA      cid(20) bytes
 *   9 ERROR     message (str)
 */
import { MalformedPacketError } from '../shared/errors.js';

export const MessageType = {
  HELLO: 1,
  WELCOME: 2,
  OFFER: 3,
  ACK: 4,
  DONE: 5,
  DONE_ACK: 6,
  REQUEST: 7,
  DATA: 8,
  ERROR: 9,
} as const;

export const PROTOCOL_VERSION = 1;
export const ChunkKind = { FETCH: 0, ZERO: 1 } as const;
const MAX_FRAME = 64 * 1024 * 1024;

export interface OfferedChunk {
  kind: number;
  length: number;
  /** SHA-1 of the bytes (kind FETCH). */
  cid?: Buffer;
}

export type ControlMessage =
  | { type: typeof MessageType.HELLO; session: Buffer; mode: number; source: string }
  | { type: typeof MessageType.WELCOME; session: Buffer; nextRound: number }
  | { type: typeof MessageType.OFFER; round: number; chunks: OfferedChunk[] }
  | { type: typeof MessageType.ACK; round: number }
  | { type: typeof MessageType.DONE; rounds: number; bytes: number }
  | { type: typeof MessageType.DONE_ACK }
  | { type: typeof MessageType.REQUEST; cids: Buffer[] }
  /** The chunk as the pieces it arrived in (socket reads), in order: nothing joins them. */
  | { type: typeof MessageType.DATA; cid: Buffer; data: Buffer[] }
  | { type: typeof MessageType.ERROR; message: string };

function frame(type: number, body: Buffer): Buffer {
  const head = Buffer.allocUnsafe(5);
  head.writeUInt32BE(body.length + 1, 0);
  head[4] = type;
  return Buffer.concat([head, body]);
}

function u64(value: number): Buffer {
  const b = Buffer.allocUnsafe(8);
  b.writeBigUInt64BE(BigInt(value));
  return b;
}

/**
 * A message as the buffers to write: DATA's chunk goes out as it is, behind its
 * header, instead of being copied into one frame.
 */
export function encodeMessageParts(message: ControlMessage): Buffer[] {
  if (message.type !== MessageType.DATA) return [encodeMessage(message)];
  const head = Buffer.allocUnsafe(25);
  head.writeUInt32BE(1 + 20 + byteLength(message.data), 0);
  head[4] = message.type;
  message.cid.copy(head, 5);
  return [head, ...message.data];
}

export function encodeMessage(message: ControlMessage): Buffer {
  switch (message.type) {
    case MessageType.HELLO:
      return frame(message.type, Buffer.concat([message.session, Buffer.of(PROTOCOL_VERSION, message.mode), Buffer.from(message.source, 'utf8')]));
    case MessageType.WELCOME:
      return frame(message.type, Buffer.concat([message.session, u64(message.nextRound)]));
    case MessageType.OFFER: {
      const parts = [u64(message.round), Buffer.alloc(4)];
      parts[1]!.writeUInt32BE(message.chunks.length);
      for (const chunk of message.chunks) {
        const head = Buffer.allocUnsafe(5);
        head[0] = chunk.kind;
        head.writeUInt32BE(chunk.length, 1);
        parts.push(head);
        if (chunk.kind === ChunkKind.FETCH) parts.push(chunk.cid!);
      }
      return frame(message.type, Buffer.concat(parts));
    }
    case MessageType.ACK:
      return frame(message.type, u64(message.round));
    case MessageType.DONE:
      return frame(message.type, Buffer.concat([u64(message.rounds), u64(message.bytes)]));
    case MessageType.DONE_ACK:
      return frame(message.type, Buffer.alloc(0));
    case MessageType.REQUEST: {
      const count = Buffer.allocUnsafe(4);
      count.writeUInt32BE(message.cids.length);
      return frame(message.type, Buffer.concat([count, ...message.cids]));
    }
    case MessageType.DATA:
      return frame(message.type, Buffer.concat([message.cid, ...message.data]));
    case MessageType.ERROR:
      return frame(message.type, Buffer.from(message.message, 'utf8'));
  }
}

function need(body: Buffer, bytes: number, what: string): void {
  if (body.length < bytes) throw new MalformedPacketError(`migration ${what} message of ${body.length} bytes is too short`);
}

export function decodeMessage(type: number, body: Buffer): ControlMessage {
  switch (type) {
    case MessageType.HELLO:
      need(body, 18, 'HELLO');
      if (body[16] !== PROTOCOL_VERSION) throw new MalformedPacketError(`migration protocol version ${body[16]} is not ${PROTOCOL_VERSION}`);
      return { type, session: Buffer.from(body.subarray(0, 16)), mode: body[17]!, source: body.toString('utf8', 18) };
    case MessageType.WELCOME:
      need(body, 24, 'WELCOME');
      return { type, session: Buffer.from(body.subarray(0, 16)), nextRound: Number(body.readBigUInt64BE(16)) };
    case MessageType.OFFER: {
      need(body, 12, 'OFFER');
      const round = Number(body.readBigUInt64BE(0));
      const count = body.readUInt32BE(8);
      const chunks: OfferedChunk[] = [];
      let at = 12;
      for (let i = 0; i < count; i++) {
        need(body, at + 5, 'OFFER');
        const kind = body[at]!;
        const length = body.readUInt32BE(at + 1);
        at += 5;
        if (kind === ChunkKind.FETCH) {
          need(body, at + 20, 'OFFER');
          chunks.push({ kind, length, cid: body.subarray(at, at + 20) });
          at += 20;
        } else if (kind === ChunkKind.ZERO) {
          chunks.push({ kind, length });
        } else {
          throw new MalformedPacketError(`migration chunk kind ${kind}`);
        }
      }
      if (at !== body.length) throw new MalformedPacketError('migration OFFER has trailing bytes');
      return { type, round, chunks };
    }
    case MessageType.ACK:
      need(body, 8, 'ACK');
      return { type, round: Number(body.readBigUInt64BE(0)) };
    case MessageType.DONE:
      need(body, 16, 'DONE');
      return { type, rounds: Number(body.readBigUInt64BE(0)), bytes: Number(body.readBigUInt64BE(8)) };
    case MessageType.DONE_ACK:
      return { type };
    case MessageType.REQUEST: {
      need(body, 4, 'REQUEST');
      const count = body.readUInt32BE(0);
      if (body.length !== 4 + 20 * count) throw new MalformedPacketError('migration REQUEST length does not match its count');
      return { type, cids: Array.from({ length: count }, (_, i) => body.subarray(4 + 20 * i, 24 + 20 * i)) };
    }
    case MessageType.DATA:
      need(body, 20, 'DATA');
      return { type, cid: body.subarray(0, 20), data: [body.subarray(20)] };
    case MessageType.ERROR:
      return { type, message: body.toString('utf8') };
    default:
      throw new MalformedPacketError(`migration message type ${type}`);
  }
}

export function byteLength(pieces: readonly Buffer[]): number {
  let length = 0;
  for (const piece of pieces) length += piece.length;
  return length;
}

/**
 * Splits a byte stream into control messages. A DATA frame spans many socket
 * reads: its chunk is handed on as views of them, never joined (joining costs a
 * fresh allocation and a copy of every migrated byte); other frames are small and
 * are joined before they are parsed.
 */
export class MessageReader {
  private pending: Buffer[] = [];
  private pendingBytes = 0;

  push(chunk: Buffer): ControlMessage[] {
    if (chunk.length > 0) {
      this.pending.push(chunk);
      this.pendingBytes += chunk.length;
    }
    const messages: ControlMessage[] = [];
    while (this.pendingBytes >= 5) {
      const head = this.peek(5);
      const length = head.readUInt32BE(0);
      if (length < 1 || length > MAX_FRAME) throw new MalformedPacketError(`migration frame of ${length} bytes`);
      if (this.pendingBytes < 4 + length) break;
      const type = head[4]!;
      if (type === MessageType.DATA) {
        if (length < 21) throw new MalformedPacketError(`migration DATA message of ${length - 1} bytes is too short`);
        this.take(5);
        const cid = Buffer.concat(this.take(20));
        messages.push({ type, cid, data: this.take(length - 21) });
      } else {
        const frame = this.take(4 + length);
        const bytes = frame.length === 1 ? frame[0]! : Buffer.concat(frame);
        messages.push(decodeMessage(type, bytes.subarray(5)));
      }
    }
    return messages;
  }

  /** The first `bytes` pending bytes in one buffer (joined only if they straddle reads). */
  private peek(bytes: number): Buffer {
    const first = this.pending[0]!;
    return first.length >= bytes ? first : Buffer.concat(this.pending, bytes);
  }

  /** Removes the first `bytes` pending bytes, as views of the reads they came in. */
  private take(bytes: number): Buffer[] {
    const taken: Buffer[] = [];
    let left = bytes;
    while (left > 0) {
      const first = this.pending[0]!;
      if (first.length <= left) {
        taken.push(first);
        this.pending.shift();
        left -= first.length;
      } else {
        taken.push(first.subarray(0, left));
        this.pending[0] = first.subarray(left);
        left = 0;
      }
    }
    this.pendingBytes -= bytes;
    return taken;
  }
}
