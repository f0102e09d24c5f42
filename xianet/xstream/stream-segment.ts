/**
 * STREAM segments (the bytes after transport type 2), QUIC-like: a connection ID
 * that names the connection wherever its ends move, a packet number that is never
 * reused (a retransmission is a new packet, so RTT samples are unambiguous), and
 * frames.
 *
 *   off len field
 *   0   1   version (1)
 *   1   8   connection ID
 *   9   6   packet number (u48)
 *   15  ..  frames
 *
 * Frames (type byte first; integers big-endian, offsets u48):
 *   0x01 PING                                   ack-eliciting, nothing else
 *   0x02 ACK       n(u8) then n × [start u48, end u48)   packet ranges, highest first
 *   0x04 RESET     code(u16)
 *   0x08 STREAM    offset(u48) length(u32) data         0x09: the same, and FIN after it
 *   0x10 MAX_DATA  limit(u48)                           how far the peer may send
 *   0x1a PATH_CHALLENGE data(8) · 0x1b PATH_RESPONSE data(8)
 *   0x20 HANDSHAKE role(u8: 0 init, 1 accept) maxData(u48)
 */
import { MalformedPacketError } from '../../shared/errors.js';
import { TransportType } from '../transport-header.js';

export const STREAM_VERSION = 1;
export const SEGMENT_HEADER_LENGTH = 15;
export const CONNECTION_ID_LENGTH = 8;

export const Frame = {
  PING: 0x01,
  ACK: 0x02,
  RESET: 0x04,
  STREAM: 0x08,
  STREAM_FIN: 0x09,
  MAX_DATA: 0x10,
  PATH_CHALLENGE: 0x1a,
  PATH_RESPONSE: 0x1b,
  HANDSHAKE: 0x20,
} as const;

export const STREAM_FRAME_OVERHEAD = 11;
export const MAX_ACK_RANGES = 32;

export interface FrameVisitor {
  ping(): void;
  ack(ranges: Array<[number, number]>): void;
  reset(code: number): void;
  stream(offset: number, data: Buffer, fin: boolean): void;
  maxData(limit: number): void;
  pathChallenge(data: Buffer): void;
  pathResponse(data: Buffer): void;
  handshake(role: 0 | 1, maxData: number): void;
}

function readU48(buffer: Buffer, at: number): number {
  return buffer.readUIntBE(at, 6);
}

/** Writes frames into a packet under construction (one allocation per packet). */
export class SegmentWriter {
  readonly buffer: Buffer;
  length: number;
  ackEliciting = false;

  /** `prefix` bytes are left for the XIP header; then the transport byte and the segment header. */
  constructor(capacity: number, prefix: number, connectionId: Buffer, packetNumber: number) {
    this.buffer = Buffer.allocUnsafe(prefix + 1 + capacity);
    let at = prefix;
    this.buffer[at++] = TransportType.STREAM;
    this.buffer[at++] = STREAM_VERSION;
    connectionId.copy(this.buffer, at);
    at += CONNECTION_ID_LENGTH;
    this.buffer.writeUIntBE(packetNumber, at, 6);
    this.length = at + 6;
  }

  get room(): number {
    return this.buffer.length - this.length;
  }

  ping(): void {
    this.buffer[this.length++] = Frame.PING;
    this.ackEliciting = true;
  }

  ack(ranges: Array<[number, number]>): void {
    const count = Math.min(ranges.length, MAX_ACK_RANGES);
    this.buffer[this.length++] = Frame.ACK;
    this.buffer[this.length++] = count;
    for (let i = 0; i < count; i++) {
      this.buffer.writeUIntBE(ranges[i]![0], this.length, 6);
      this.buffer.writeUIntBE(ranges[i]![1], this.length + 6, 6);
      this.length += 12;
    }
  }

  static ackLength(ranges: number): number {
    return 2 + 12 * Math.min(ranges, MAX_ACK_RANGES);
  }

  reset(code: number): void {
    this.buffer[this.length++] = Frame.RESET;
    this.buffer.writeUInt16BE(code, this.length);
    this.length += 2;
  }

  stream(offset: number, data: Buffer, fin: boolean): void {
    this.buffer[this.length++] = fin ? Frame.STREAM_FIN : Frame.STREAM;
    this.buffer.writeUIntBE(offset, this.length, 6);
    this.buffer.writeUInt32BE(data.length, this.length + 6);
    this.length += 10;
    data.copy(this.buffer, this.length);
    this.length += data.length;
    this.ackEliciting = true;
  }

  maxData(limit: number): void {
    this.buffer[this.length++] = Frame.MAX_DATA;
    this.buffer.writeUIntBE(limit, this.length, 6);
    this.length += 6;
    this.ackEliciting = true;
  }

  path(type: typeof Frame.PATH_CHALLENGE | typeof Frame.PATH_RESPONSE, data: Buffer): void {
    this.buffer[this.length++] = type;
    data.copy(this.buffer, this.length, 0, 8);
    this.length += 8;
    this.ackEliciting = true;
  }

  handshake(role: 0 | 1, maxData: number): void {
    this.buffer[this.length++] = Frame.HANDSHAKE;
    this.buffer[this.length++] = role;
    this.buffer.writeUIntBE(maxData, this.length, 6);
    this.length += 6;
    this.ackEliciting = true;
  }
}

export interface SegmentHeader {
  connectionId: Buffer;
  packetNumber: number;
  /** Offset of the first frame in the segment. */
  framesAt: number;
}

/** Reads the fixed header of a segment (a view: no copy). */
export function readSegmentHeader(segment: Buffer): SegmentHeader {
  if (segment.length < SEGMENT_HEADER_LENGTH) {
    throw new MalformedPacketError(`STREAM segment of ${segment.length} bytes is shorter than its header`);
  }
  if (segment[0] !== STREAM_VERSION) throw new MalformedPacketError(`STREAM version ${segment[0]} is not ${STREAM_VERSION}`);
  return {
    connectionId: segment.subarray(1, 1 + CONNECTION_ID_LENGTH),
    packetNumber: readU48(segment, 9),
    framesAt: SEGMENT_HEADER_LENGTH,
  };
}

/** Calls the visitor for each frame; throws MalformedPacketError on anything that does not parse. */
export function visitFrames(segment: Buffer, at: number, visitor: FrameVisitor): boolean {
  let ackEliciting = false;
  const need = (bytes: number, what: string): void => {
    if (at + bytes > segment.length) throw new MalformedPacketError(`STREAM ${what} frame runs past the segment`);
  };
  while (at < segment.length) {
    const type = segment[at++]!;
    switch (type) {
      case Frame.PING:
        ackEliciting = true;
        visitor.ping();
        break;
      case Frame.ACK: {
        need(1, 'ACK');
        const count = segment[at++]!;
        need(12 * count, 'ACK');
        const ranges: Array<[number, number]> = [];
        for (let i = 0; i < count; i++) {
          const start = readU48(segment, at);
          const end = readU48(segment, at + 6);
          if (end <= start) throw new MalformedPacketError('STREAM ACK range is empty or reversed');
          ranges.push([start, end]);
          at += 12;
        }
        visitor.ack(ranges);
        break;
      }
      case Frame.RESET:
        need(2, 'RESET');
        visitor.reset(segment.readUInt16BE(at));
        at += 2;
        break;
      case Frame.STREAM:
      case Frame.STREAM_FIN: {
        need(10, 'STREAM');
        const offset = readU48(segment, at);
        const length = segment.readUInt32BE(at + 6);
        at += 10;
        need(length, 'STREAM');
        ackEliciting = true;
        visitor.stream(offset, segment.subarray(at, at + length), type === Frame.STREAM_FIN);
        at += length;
        break;
      }
      case Frame.MAX_DATA:
        need(6, 'MAX_DATA');
        ackEliciting = true;
        visitor.maxData(readU48(segment, at));
        at += 6;
        break;
      case Frame.PATH_CHALLENGE:
      case Frame.PATH_RESPONSE: {
        need(8, 'PATH');
        ackEliciting = true;
        const data = segment.subarray(at, at + 8);
        if (type === Frame.PATH_CHALLENGE) visitor.pathChallenge(data);
        else visitor.pathResponse(data);
        at += 8;
        break;
      }
      case Frame.HANDSHAKE: {
        need(7, 'HANDSHAKE');
        const role = segment[at]!;
        if (role > 1) throw new MalformedPacketError(`STREAM HANDSHAKE role ${role}`);
        ackEliciting = true;
        visitor.handshake(role as 0 | 1, readU48(segment, at + 1));
        at += 7;
        break;
      }
      default:
        throw new MalformedPacketError(`STREAM frame type 0x${type.toString(16)} is not known`);
    }
  }
  return ackEliciting;
}

/** True if the segment's frames include a HANDSHAKE initiation (what may open a connection). */
export function isHandshakeInit(segment: Buffer): boolean {
  return segment.length >= SEGMENT_HEADER_LENGTH + 2 && segment[SEGMENT_HEADER_LENGTH] === Frame.HANDSHAKE && segment[SEGMENT_HEADER_LENGTH + 1] === 0;
}

const NO_FRAMES: FrameVisitor = {
  ping: () => undefined,
  ack: () => undefined,
  reset: () => undefined,
  stream: () => undefined,
  maxData: () => undefined,
  pathChallenge: () => undefined,
  pathResponse: () => undefined,
  handshake: () => undefined,
};

/**
 * What a segment for no known connection asks for, or undefined if it does not parse.
 * Such a segment is answered (a RESET, a tombstone's ACK) only if it is ack-eliciting
 * and carries no RESET itself: answers to answers would loop forever between two ends,
 * or within one node when a forged source names the node itself.
 */
export function segmentWantsAnswer(segment: Buffer, framesAt: number): boolean {
  let reset = false;
  let ackEliciting: boolean;
  try {
    ackEliciting = visitFrames(segment, framesAt, { ...NO_FRAMES, reset: () => (reset = true) });
  } catch {
    return false;
  }
  return ackEliciting && !reset;
}
