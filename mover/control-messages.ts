/**
 * The migration control protocol (the paper's Fig. 3), on a reliable stream:
 * the sender announces the CIDs of a round, the receiver fetches and verifies them,
 * writes them out in order and acknowledges the round; DONE ends the migration.
 * Frames are `u32 length, u8 type, body` (big-endian; length counts type + body):
 *
 *   1 HELLO     session(16) version(u8) mode(u8: 0 xia, 1 tcp) source DAG of the chunks (rest, utf8;
 *               a DAG in xia mode, empty in tcp mode)
 *   2 WELCOME   session(16) nextRound(u64)       where the receiver wants to resume
 *   3 OFFER     round(u64) count(u32) then per chunk: kind(u8) length(u32) [cid(20) if kind 0]
 *               kind 0: fetch by CID · kind 1: all zero bytes (nothing is fetched)
 *   4 ACK       round(u64)                       written out, verified
 *   5 DONE      rounds(u64) bytes(u64)
 *   6 DONE_ACK
 *   7 REQUEST   count(u32) cids(20 each)         (TCP mode: chunks travel in-band)
 *   8 DATA      cid(20) bytes
 *   9 ERROR     message (rest, utf8)
 *  10 KEEPALIVE (empty)                         either side, when it has sent nothing for a while:
 *               the connection's give-up (3 s of silence on the sender's STREAM) never
 *               fires on a connection that is merely idle
 *
 * Every field is read through shared/wire.ts, whose reads check bounds: whatever a peer
 * sends, decoding either yields a message or throws MalformedPacketError.
 */
import { Dag } from '../shared/dag.js';
import { MalformedPacketError } from '../shared/errors.js';
import { WireReader, WireWriter } from '../shared/wire.js';

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
  KEEPALIVE: 10,
} as const;

export const PROTOCOL_VERSION = 1;
export const ChunkKind = { FETCH: 0, ZERO: 1 } as const;

/** The frame layout: u32 length (of type + body), u8 type. */
export const FrameLayout = { LENGTH: 0, TYPE: 4, HEADER: 5 } as const;
export const SESSION_LENGTH = 16;
export const CID_LENGTH = 20;
/** The largest chunk a frame may carry (DATA, TCP mode): xianet's own chunk limit. */
export const MAX_CHUNK_BYTES = 16 * 1024 * 1024;
/** Largest frame: a DATA frame of the largest chunk. Anything longer is a protocol error, not a wait. */
export const MAX_FRAME = 1 + CID_LENGTH + MAX_CHUNK_BYTES;
/** Most chunks in one OFFER or REQUEST (a round is a few MiB: far fewer in practice). */
export const MAX_CHUNKS_PER_MESSAGE = 65_536;
/** Longest ERROR text and HELLO source we accept. */
export const MAX_TEXT_BYTES = 4096;

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
  | { type: typeof MessageType.ERROR; message: string }
  | { type: typeof MessageType.KEEPALIVE };

/** A frame around `body` (written after a reserved header). */
function framed(type: number, write: (w: WireWriter) => void): Buffer {
  const writer = new WireWriter(64);
  writer.u32(0).u8(type);
  write(writer);
  const frame = writer.finish();
  frame.writeUInt32BE(frame.length - FrameLayout.TYPE, FrameLayout.LENGTH);
  return frame;
}

/**
 * A message as the buffers to write: DATA's chunk goes out as it is, behind its
 * header, instead of being copied into one frame.
 */
export function encodeMessageParts(message: ControlMessage): Buffer[] {
  if (message.type !== MessageType.DATA) return [encodeMessage(message)];
  const head = Buffer.allocUnsafe(FrameLayout.HEADER + CID_LENGTH);
  head.writeUInt32BE(1 + CID_LENGTH + byteLength(message.data), FrameLayout.LENGTH);
  head[FrameLayout.TYPE] = message.type;
  message.cid.copy(head, FrameLayout.HEADER, 0, CID_LENGTH);
  return [head, ...message.data];
}

export function encodeMessage(message: ControlMessage): Buffer {
  switch (message.type) {
    case MessageType.HELLO:
      return framed(message.type, (w) => w.fixed(message.session, SESSION_LENGTH).u8(PROTOCOL_VERSION).u8(message.mode).rest(Buffer.from(message.source, 'utf8')));
    case MessageType.WELCOME:
      return framed(message.type, (w) => w.fixed(message.session, SESSION_LENGTH).u64(message.nextRound));
    case MessageType.OFFER:
      return framed(message.type, (w) => {
        w.u64(message.round).u32(message.chunks.length);
        for (const chunk of message.chunks) {
          w.u8(chunk.kind).u32(chunk.length);
          if (chunk.kind === ChunkKind.FETCH) w.fixed(chunk.cid!, CID_LENGTH);
        }
      });
    case MessageType.ACK:
      return framed(message.type, (w) => w.u64(message.round));
    case MessageType.DONE:
      return framed(message.type, (w) => w.u64(message.rounds).u64(message.bytes));
    case MessageType.DONE_ACK:
      return framed(message.type, () => undefined);
    case MessageType.REQUEST:
      return framed(message.type, (w) => {
        w.u32(message.cids.length);
        for (const cid of message.cids) w.fixed(cid, CID_LENGTH);
      });
    case MessageType.DATA:
      return Buffer.concat(encodeMessageParts(message));
    case MessageType.ERROR:
      return framed(message.type, (w) => w.rest(Buffer.from(message.message, 'utf8').subarray(0, MAX_TEXT_BYTES)));
    case MessageType.KEEPALIVE:
      return framed(message.type, () => undefined);
  }
}

function text(reader: WireReader, what: string): string {
  const bytes = reader.rest();
  if (bytes.length > MAX_TEXT_BYTES) throw new MalformedPacketError(`migration ${what} of ${bytes.length} bytes is longer than ${MAX_TEXT_BYTES}`);
  return bytes.toString('utf8');
}

function count(reader: WireReader, what: string): number {
  const n = reader.u32(`${what} count`);
  if (n > MAX_CHUNKS_PER_MESSAGE) throw new MalformedPacketError(`migration ${what} of ${n} chunks is more than ${MAX_CHUNKS_PER_MESSAGE}`);
  return n;
}

/** Decodes a message body (after the frame header). Throws MalformedPacketError on anything but a well-formed message. */
export function decodeMessage(type: number, body: Buffer): ControlMessage {
  const r = new WireReader(body, `migration ${messageName(type)}`);
  let message: ControlMessage;
  switch (type) {
    case MessageType.HELLO: {
      const session = Buffer.from(r.fixed(SESSION_LENGTH, 'session'));
      const version = r.u8('version');
      if (version !== PROTOCOL_VERSION) throw new MalformedPacketError(`migration protocol version ${version} is not ${PROTOCOL_VERSION}`);
      const mode = r.u8('mode');
      if (mode !== 0 && mode !== 1) throw new MalformedPacketError(`migration HELLO mode ${mode} is neither 0 (xia) nor 1 (tcp)`);
      const source = text(r, 'HELLO source');
      // The chunks' source is a DAG the receiver will fetch from: checked here, not when it is first used.
      if (mode === 0) {
        try {
          Dag.parse(source);
        } catch (error) {
          throw new MalformedPacketError(`migration HELLO source is not a DAG: ${(error as Error).message}`);
        }
      }
      message = { type, session, mode, source };
      break;
    }
    case MessageType.WELCOME:
      message = { type, session: Buffer.from(r.fixed(SESSION_LENGTH, 'session')), nextRound: r.u64('next round') };
      break;
    case MessageType.OFFER: {
      const round = r.u64('round');
      const n = count(r, 'OFFER');
      const chunks: OfferedChunk[] = [];
      for (let i = 0; i < n; i++) {
        const kind = r.u8('chunk kind');
        const length = r.u32('chunk length');
        if (length > MAX_CHUNK_BYTES) throw new MalformedPacketError(`migration chunk of ${length} bytes is larger than ${MAX_CHUNK_BYTES}`);
        if (kind === ChunkKind.FETCH) chunks.push({ kind, length, cid: r.fixed(CID_LENGTH, 'cid') });
        else if (kind === ChunkKind.ZERO) chunks.push({ kind, length });
        else throw new MalformedPacketError(`migration chunk kind ${kind}`);
      }
      message = { type, round, chunks };
      break;
    }
    case MessageType.ACK:
      message = { type, round: r.u64('round') };
      break;
    case MessageType.DONE:
      message = { type, rounds: r.u64('rounds'), bytes: r.u64('bytes') };
      break;
    case MessageType.DONE_ACK:
      message = { type };
      break;
    case MessageType.REQUEST: {
      const n = count(r, 'REQUEST');
      message = { type, cids: Array.from({ length: n }, () => r.fixed(CID_LENGTH, 'cid')) };
      break;
    }
    case MessageType.DATA:
      message = { type, cid: r.fixed(CID_LENGTH, 'cid'), data: [r.rest()] };
      break;
    case MessageType.ERROR:
      message = { type, message: text(r, 'ERROR text') };
      break;
    case MessageType.KEEPALIVE:
      message = { type };
      break;
    default:
      throw new MalformedPacketError(`migration message type ${type}`);
  }
  r.end();
  return message;
}

function messageName(type: number): string {
  return Object.entries(MessageType).find(([, code]) => code === type)?.[0] ?? `type ${type}`;
}

/** Largest frame other than DATA: an OFFER of the most chunks allowed. */
const MAX_CONTROL_FRAME = 1 + 12 + MAX_CHUNKS_PER_MESSAGE * (5 + CID_LENGTH);

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
    while (this.pendingBytes >= FrameLayout.HEADER) {
      const head = this.peek(FrameLayout.HEADER);
      const length = head.readUInt32BE(FrameLayout.LENGTH);
      const type = head[FrameLayout.TYPE]!;
      // Judged on the header alone: a peer announcing a huge frame is refused before we buffer it.
      const limit = type === MessageType.DATA ? MAX_FRAME : MAX_CONTROL_FRAME;
      if (length < 1 || length > limit) throw new MalformedPacketError(`migration ${messageName(type)} frame of ${length} bytes (at most ${limit})`);
      if (this.pendingBytes < FrameLayout.TYPE + length) break;
      if (type === MessageType.DATA) {
        if (length < 1 + CID_LENGTH) throw new MalformedPacketError(`migration DATA message of ${length - 1} bytes is too short`);
        this.take(FrameLayout.HEADER);
        const cid = Buffer.concat(this.take(CID_LENGTH));
        messages.push({ type, cid, data: this.take(length - 1 - CID_LENGTH) });
      } else {
        const frame = this.take(FrameLayout.TYPE + length);
        const bytes = frame.length === 1 ? frame[0]! : Buffer.concat(frame);
        messages.push(decodeMessage(type, bytes.subarray(FrameLayout.HEADER)));
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
