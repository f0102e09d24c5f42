/**
 * CHUNK transport messages (after the transport-type byte 3):
 *
 *   REQUEST (op 1)                      DATA (op 2)
 *   off len field                       off len field
 *   0   1   op                          0   1   op
 *   1   4   request id                  1   4   request id (echoed)
 *   5   20  CID                         5   20  CID
 *   25  4   offset wanted               25  4   total chunk length
 *   29  4   length wanted (0 = all)     29  4   offset of this fragment
 *                                       33  n   fragment bytes
 *
 * A request names the chunk by the sink of its destination DAG as well as in the
 * body, so a router can answer from its cache without parsing the DAG. Responses
 * are fragmented to the path MTU; the requester reassembles and verifies SHA-1.
 * The op byte's high bit on DATA is NO_STORE: the publisher asks routers not to
 * cache the chunk (private content such as a VM's memory, fetched once).
 */
import { MalformedPacketError } from '../../shared/errors.js';
import { TransportType } from '../transport-header.js';

export const ChunkOp = { REQUEST: 1, DATA: 2, NOT_FOUND: 3 } as const;
/** In a DATA op byte: routers must not cache this chunk. */
export const CHUNK_NO_STORE = 0x80;

export const CHUNK_REQUEST_LENGTH = 1 + 33;
export const CHUNK_DATA_HEADER_LENGTH = 1 + 33;
/** Chunks are at most this big (the mover uses far smaller ones). */
export const MAX_CHUNK_BYTES = 16 * 1024 * 1024;

export interface ChunkRequest {
  requestId: number;
  cid: Buffer;
  offset: number;
  length: number;
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
  buffer[1] = ChunkOp.REQUEST;
  buffer.writeUInt32BE(request.requestId >>> 0, 2);
  request.cid.copy(buffer, 6, 0, 20);
  buffer.writeUInt32BE(request.offset, 26);
  buffer.writeUInt32BE(request.length, 30);
  return buffer;
}

/** Writes a DATA header (transport byte included) into `target` at `at`; returns its length. */
export function writeChunkDataHeader(target: Buffer, at: number, header: Omit<ChunkData, 'data'>, op: number = ChunkOp.DATA): number {
  target[at] = TransportType.CHUNK;
  target[at + 1] = op | (header.noStore && op === ChunkOp.DATA ? CHUNK_NO_STORE : 0);
  target.writeUInt32BE(header.requestId >>> 0, at + 2);
  header.cid.copy(target, at + 6, 0, 20);
  target.writeUInt32BE(header.total, at + 26);
  target.writeUInt32BE(header.offset, at + 30);
  return CHUNK_DATA_HEADER_LENGTH;
}

/** Decodes a CHUNK message body (after the transport byte). Views, no copies. */
export function decodeChunkMessage(body: Buffer): ({ op: typeof ChunkOp.REQUEST } & ChunkRequest) | ({ op: typeof ChunkOp.DATA | typeof ChunkOp.NOT_FOUND } & ChunkData) {
  if (body.length < 33) throw new MalformedPacketError(`CHUNK message of ${body.length} bytes is shorter than its header`);
  const noStore = (body[0]! & CHUNK_NO_STORE) !== 0;
  const op = body[0]! & ~CHUNK_NO_STORE;
  const requestId = body.readUInt32BE(1);
  const cid = body.subarray(5, 25);
  const a = body.readUInt32BE(25);
  const b = body.readUInt32BE(29);
  if (op === ChunkOp.REQUEST) {
    if (noStore) throw new MalformedPacketError('CHUNK request with the NO_STORE bit');
    if (body.length !== 33) throw new MalformedPacketError('CHUNK request has trailing bytes');
    return { op, requestId, cid, offset: a, length: b };
  }
  if (op === ChunkOp.DATA || op === ChunkOp.NOT_FOUND) {
    if (noStore && op !== ChunkOp.DATA) throw new MalformedPacketError('CHUNK NOT_FOUND with the NO_STORE bit');
    const data = body.subarray(33);
    if (a > MAX_CHUNK_BYTES) throw new MalformedPacketError(`CHUNK of ${a} bytes is larger than ${MAX_CHUNK_BYTES}`);
    if (b + data.length > a) throw new MalformedPacketError(`CHUNK fragment ${b}+${data.length} runs past the chunk's ${a} bytes`);
    return { op, noStore, requestId, cid, total: a, offset: b, data };
  }
  throw new MalformedPacketError(`CHUNK op ${op} is not known`);
}
