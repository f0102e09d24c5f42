/**
 * XCMP, XIA's ICMP (xia-core clicknet/xia.h, elements/xia/xcmp.cc): echo for
 * xping, and the errors routers send back (unreachable, time exceeded).
 *
 *   off len field
 *   0   1   type   0 echo reply, 3 unreachable, 8 echo, 11 time exceeded
 *   1   1   code
 *   2   2   checksum (Internet checksum over the whole XCMP message)
 *   4   2   identifier (echo)         | unused (errors)
 *   6   2   sequence (echo)           | unused (errors)
 *   8   n   echo data                 | the offending XIP header and first bytes of its payload
 */
import { MalformedPacketError } from '../shared/errors.js';

export const XcmpType = {
  ECHO_REPLY: 0,
  UNREACHABLE: 3,
  REDIRECT: 5,
  ECHO: 8,
  TIME_EXCEEDED: 11,
} as const;

export const XcmpUnreachableCode = {
  NET: 0,
  HOST: 1,
  PROTOCOL: 2,
  PORT: 3,
  NEED_FRAGMENT: 4,
  NET_UNKNOWN: 6,
  HOST_UNKNOWN: 7,
} as const;

export const XCMP_HEADER_LENGTH = 8;
/** How much of an offending packet an error quotes (like ICMP's header + 8 bytes, but XIP headers are longer). */
export const XCMP_QUOTE_LIMIT = 576;

export interface XcmpMessage {
  type: number;
  code: number;
  identifier: number;
  sequence: number;
  data: Buffer;
}

/** RFC 1071 Internet checksum. */
export function internetChecksum(data: Uint8Array): number {
  let sum = 0;
  const even = data.length & ~1;
  for (let i = 0; i < even; i += 2) sum += (data[i]! << 8) | data[i + 1]!;
  if (data.length & 1) sum += data[data.length - 1]! << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

export function encodeXcmp(message: XcmpMessage): Buffer {
  const buffer = Buffer.allocUnsafe(XCMP_HEADER_LENGTH + message.data.length);
  buffer[0] = message.type;
  buffer[1] = message.code;
  buffer.writeUInt16BE(0, 2);
  buffer.writeUInt16BE(message.identifier, 4);
  buffer.writeUInt16BE(message.sequence, 6);
  message.data.copy(buffer, XCMP_HEADER_LENGTH);
  buffer.writeUInt16BE(internetChecksum(buffer), 2);
  return buffer;
}

export function decodeXcmp(payload: Buffer): XcmpMessage {
  if (payload.length < XCMP_HEADER_LENGTH) {
    throw new MalformedPacketError(`XCMP message of ${payload.length} bytes is shorter than its 8-byte header`);
  }
  if (internetChecksum(payload) !== 0) throw new MalformedPacketError('XCMP checksum does not match');
  return {
    type: payload[0]!,
    code: payload[1]!,
    identifier: payload.readUInt16BE(4),
    sequence: payload.readUInt16BE(6),
    data: payload.subarray(XCMP_HEADER_LENGTH),
  };
}

/** Turns an echo request (in place) into its reply: type 0, checksum patched. */
export function echoReplyInPlace(payload: Buffer): void {
  payload[0] = XcmpType.ECHO_REPLY;
  payload.writeUInt16BE(0, 2);
  payload.writeUInt16BE(internetChecksum(payload), 2);
}

export function isXcmpError(type: number): boolean {
  return type === XcmpType.UNREACHABLE || type === XcmpType.TIME_EXCEEDED || type === XcmpType.REDIRECT;
}
