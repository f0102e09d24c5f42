/**
 * CHUNK transport messages (after the transport-type byte 3). Every field is read and
 * written through `ChunkOffset`, the one table of the layout:
 *
 *   REQUEST (op 1)                         DATA (op 2) / NOT_FOUND (op 3)
 *   off len field                          off len field
 *   0   1   op                             0   1   op (DATA: high bit = NO_STORE)
 *   1   4   request id                     1   4   request id (echoed)
 *   5   20  CID                            5   20  CID
 *   25  4   offset wanted                  25  4   total chunk length
 *   29  4   length wanted (0 = the rest)   29  4   offset of this fragment
 *   33  2   largest fragment payload the   33  n   fragment bytes
 *           requester takes (0 = the
 *           server's MTU decides); absent
 *           in a 33-byte request (older)
 *
 * A request names the chunk by the sink of its destination DAG as well as in the
 * body, so a router can answer from its cache without parsing the DAG. The requester
 * asks for byte ranges (a few datagrams' worth each, paced: chunk-fetcher.ts) and
 * re-asks for exactly the ranges that did not arrive; the server cuts each range
 * into fragments no larger than its own MTU allows nor the requester asked, so
 * every DATA datagram fits every link on the way without IP fragmentation. The
 * requester reassembles and verifies SHA-1. NO_STORE: the publisher asks routers
 * not to cache the chunk (private content such as a VM's memory, fetched once).
 */
import { MalformedPacketError } from '../../shared/errors.js';
import { TransportType } from '../transport-header.js';

export const ChunkOp = { REQUEST: 1, DATA: 2, NOT_FOUND: 3 } as const;
/** In a DATA op byte: routers must not cache this chunk. */
export const CHUNK_NO_STORE = 0x80;

/** Field offsets in a CHUNK message body (after the transport byte). */
export const ChunkOffset = {
  OP: 0,
  REQUEST_ID: 1,
  CID: 5,
  /** REQUEST: offset wanted. DATA: total chunk length. */
  OFFSET_OR_TOTAL: 25,
  /** REQUEST: length wanted. DATA: this fragment's offset. */
  LENGTH_OR_OFFSET: 29,
  /** REQUEST: largest fragment payload wanted. DATA: the fragment's bytes. */
  MAX_FRAGMENT_OR_DATA: 33,
  /** The shortest message (an old REQUEST, or a DATA header). */
  HEADER_END: 33,
  REQUEST_END: 35,
} as const;

/** Transport byte included. */
export const CHUNK_REQUEST_LENGTH = 1 + ChunkOffset.REQUEST_END;
export const CHUNK_DATA_HEADER_LENGTH = 1 + ChunkOffset.HEADER_END;
/** Chunks are at most this big (the mover uses far smaller ones). */
export const MAX_CHUNK_BYTES = 16 * 1024 * 1024;

export interface ChunkRequest {
  requestId: number;
  cid: Buffer;
  offset: number;
  /** 0: from `offset` to the end. */
  length: number;
  /** Largest fragment payload the requester takes (0: the server's MTU decides). */
  maxFragment?: number;
}

export interface ChunkData {
  /** The publisher asked routers not to cache it. */
  noStore?: boolean;
  requestId: number;
  cid: Buffer;
  total: number;
  offset: number;
  data: Buffer;
}

/** Encodes a request, transport byte included. */
export function encodeChunkRequest(request: ChunkRequest): Buffer {
  const buffer = Buffer.allocUnsafe(CHUNK_REQUEST_LENGTH);
  buffer[0] = TransportType.CHUNK;
  const at = 1;
  buffer[at + ChunkOffset.OP] = ChunkOp.REQUEST;
  buffer.writeUInt32BE(request.requestId >>> 0, at + ChunkOffset.REQUEST_ID);
  request.cid.copy(buffer, at + ChunkOffset.CID, 0, 20);
  buffer.writeUInt32BE(request.offset, at + ChunkOffset.OFFSET_OR_TOTAL);
  buffer.writeUInt32BE(request.length, at + ChunkOffset.LENGTH_OR_OFFSET);
  buffer.writeUInt16BE(Math.min(0xffff, request.maxFragment ?? 0), at + ChunkOffset.MAX_FRAGMENT_OR_DATA);
  return buffer;
}

/** Writes a DATA header (transport byte included) into `target` at `at`; returns its length. */
export function writeChunkDataHeader(target: Buffer, at: number, header: Omit<ChunkData, 'data'>, op: number = ChunkOp.DATA): number {
  target[at] = TransportType.CHUNK;
  const body = at + 1;
  target[body + ChunkOffset.OP] = op | (header.noStore && op === ChunkOp.DATA ? CHUNK_NO_STORE : 0);
  target.writeUInt32BE(header.requestId >>> 0, body + ChunkOffset.REQUEST_ID);
  header.cid.copy(target, body + ChunkOffset.CID, 0, 20);
  target.writeUInt32BE(header.total, body + ChunkOffset.OFFSET_OR_TOTAL);
  target.writeUInt32BE(header.offset, body + ChunkOffset.LENGTH_OR_OFFSET);
  return CHUNK_DATA_HEADER_LENGTH;
}

/** The op of a CHUNK body, NO_STORE bit removed (undefined if too short). */
export function chunkOpOf(body: Buffer): number | undefined {
  return body.length > ChunkOffset.OP ? body[ChunkOffset.OP]! & ~CHUNK_NO_STORE : undefined;
}

/** Decodes a CHUNK message body (after the transport byte). Views, no copies. */
export function decodeChunkMessage(body: Buffer): ({ op: typeof ChunkOp.REQUEST } & ChunkRequest) | ({ op: typeof ChunkOp.DATA | typeof ChunkOp.NOT_FOUND } & ChunkData) {
  if (body.length < ChunkOffset.HEADER_END) throw new MalformedPacketError(`CHUNK message of ${body.length} bytes is shorter than its header`);
  const noStore = (body[ChunkOffset.OP]! & CHUNK_NO_STORE) !== 0;
  const op = body[ChunkOffset.OP]! & ~CHUNK_NO_STORE;
  const requestId = body.readUInt32BE(ChunkOffset.REQUEST_ID);
  const cid = body.subarray(ChunkOffset.CID, ChunkOffset.CID + 20);
  const a = body.readUInt32BE(ChunkOffset.OFFSET_OR_TOTAL);
  const b = body.readUInt32BE(ChunkOffset.LENGTH_OR_OFFSET);
  if (op === ChunkOp.REQUEST) {
    if (noStore) throw new MalformedPacketError('CHUNK request with the NO_STORE bit');
    if (body.length !== ChunkOffset.HEADER_END && body.length !== ChunkOffset.REQUEST_END) throw new MalformedPacketError('CHUNK request has trailing bytes');
    const maxFragment = body.length === ChunkOffset.REQUEST_END ? body.readUInt16BE(ChunkOffset.MAX_FRAGMENT_OR_DATA) : 0;
    return { op, requestId, cid, offset: a, length: b, maxFragment };
  }
  if (op === ChunkOp.DATA || op === ChunkOp.NOT_FOUND) {
    if (noStore && op !== ChunkOp.DATA) throw new MalformedPacketError('CHUNK NOT_FOUND with the NO_STORE bit');
    const data = body.subarray(ChunkOffset.MAX_FRAGMENT_OR_DATA);
    if (a > MAX_CHUNK_BYTES) throw new MalformedPacketError(`CHUNK of ${a} bytes is larger than ${MAX_CHUNK_BYTES}`);
    if (b + data.length > a) throw new MalformedPacketError(`CHUNK fragment ${b}+${data.length} runs past the chunk's ${a} bytes`);
    return { op, noStore, requestId, cid, total: a, offset: b, data };
  }
  throw new MalformedPacketError(`CHUNK op ${op} is not known`);
}
