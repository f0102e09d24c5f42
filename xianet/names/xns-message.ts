/**
 * Name-service messages in xia-core's layout (api/include/xns.h, XgetDAGbyName.c):
 *
 *   type(1) flags(1) then NUL-terminated strings, by type:
 *   REGISTER name, dag · QUERY name · RQUERY dag · RESPONSE_QUERY dag ·
 *   RESPONSE_RQUERY name · RESPONSE_REGISTER, RESPONSE_ERROR nothing
 *
 * xmig appends one more string, `xmig1:` + base64 of: request id (u32) and, on
 * REGISTER and RESPONSE_QUERY, the owner-signed name record. xia-core reads the
 * strings it knows and stops there, so the two interoperate on queries.
 */
import { MalformedPacketError } from '../../shared/errors.js';

export const NsType = {
  REGISTER: 0x01,
  QUERY: 0x02,
  RQUERY: 0x03,
  RESPONSE_REGISTER: 0x04,
  RESPONSE_QUERY: 0x05,
  RESPONSE_RQUERY: 0x06,
  RESPONSE_ERROR: 0x07,
} as const;

export const NS_FLAGS_MIGRATE = 0x01;
const EXTENSION = 'xmig1:';

export interface NsMessage {
  type: number;
  flags: number;
  name?: string;
  dag?: string;
  requestId?: number;
  /** A sealed name record (REGISTER, RESPONSE_QUERY). */
  record?: Buffer;
  /** RESPONSE_ERROR: why (xmig). */
  error?: string;
}

function fieldsOf(message: NsMessage): string[] {
  switch (message.type) {
    case NsType.REGISTER:
      return [message.name ?? '', message.dag ?? ''];
    case NsType.QUERY:
    case NsType.RESPONSE_RQUERY:
      return [message.name ?? ''];
    case NsType.RQUERY:
    case NsType.RESPONSE_QUERY:
      return [message.dag ?? ''];
    default:
      return [];
  }
}

export function encodeNsMessage(message: NsMessage): Buffer {
  const error = message.error ? Buffer.from(message.error, 'utf8') : Buffer.alloc(0);
  const record = message.record ?? Buffer.alloc(0);
  const extension = Buffer.alloc(4 + 2 + record.length + 2 + error.length);
  extension.writeUInt32BE((message.requestId ?? 0) >>> 0, 0);
  extension.writeUInt16BE(record.length, 4);
  record.copy(extension, 6);
  extension.writeUInt16BE(error.length, 6 + record.length);
  error.copy(extension, 8 + record.length);
  const strings = [...fieldsOf(message), `${EXTENSION}${extension.toString('base64')}`];
  for (const s of strings) {
    if (s.includes('\0')) throw new MalformedPacketError('name-service strings may not contain NUL');
  }
  return Buffer.concat([Buffer.from([message.type, message.flags]), ...strings.map((s) => Buffer.from(`${s}\0`, 'utf8'))]);
}

export function decodeNsMessage(packet: Buffer): NsMessage {
  if (packet.length < 2) throw new MalformedPacketError(`name-service message of ${packet.length} bytes`);
  const type = packet[0]!;
  const flags = packet[1]!;
  if (type < NsType.REGISTER || type > NsType.RESPONSE_ERROR) throw new MalformedPacketError(`name-service type ${type}`);
  const strings: string[] = [];
  let offset = 2;
  while (offset < packet.length) {
    const end = packet.indexOf(0, offset);
    if (end < 0) throw new MalformedPacketError('name-service string is not NUL-terminated');
    strings.push(packet.toString('utf8', offset, end));
    offset = end + 1;
  }
  const message: NsMessage = { type, flags };
  const extension = strings.find((s) => s.startsWith(EXTENSION));
  const plain = strings.filter((s) => !s.startsWith(EXTENSION));
  const expected = fieldsOf({ type, flags }).length;
  if (plain.length < expected) throw new MalformedPacketError(`name-service type ${type} needs ${expected} strings, got ${plain.length}`);
  switch (type) {
    case NsType.REGISTER:
      [message.name, message.dag] = plain;
      break;
    case NsType.QUERY:
    case NsType.RESPONSE_RQUERY:
      message.name = plain[0];
      break;
    case NsType.RQUERY:
    case NsType.RESPONSE_QUERY:
      message.dag = plain[0];
      break;
  }
  if (extension) {
    const bytes = Buffer.from(extension.slice(EXTENSION.length), 'base64');
    if (bytes.length < 8) throw new MalformedPacketError('name-service extension is too short');
    message.requestId = bytes.readUInt32BE(0);
    const recordLength = bytes.readUInt16BE(4);
    if (6 + recordLength + 2 > bytes.length) throw new MalformedPacketError('name-service record runs past the extension');
    if (recordLength > 0) message.record = bytes.subarray(6, 6 + recordLength);
    const errorLength = bytes.readUInt16BE(6 + recordLength);
    if (8 + recordLength + errorLength > bytes.length) throw new MalformedPacketError('name-service error runs past the extension');
    if (errorLength > 0) message.error = bytes.toString('utf8', 8 + recordLength, 8 + recordLength + errorLength);
  }
  return message;
}
