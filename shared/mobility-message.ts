/**
 * Datagrams on the mobility SID: a type byte, then sealed bytes.
 *   1 NOTICE     from the VM to its new gateway (a sealed HID-move notice)
 *   2 FORWARDED  the same notice, passed router to router toward the old gateway
 *   3 ACK        from the new gateway to the VM (a sealed move ack)
 */
import { MalformedPacketError } from './errors.js';

export const MobilityType = { NOTICE: 1, FORWARDED: 2, ACK: 3 } as const;
export type MobilityTypeCode = (typeof MobilityType)[keyof typeof MobilityType];

export function encodeMobility(type: MobilityTypeCode, sealed: Buffer): Buffer {
  return Buffer.concat([Buffer.of(type), sealed]);
}

export function decodeMobility(data: Buffer): { type: MobilityTypeCode; sealed: Buffer } {
  const type = data[0];
  if (type !== MobilityType.NOTICE && type !== MobilityType.FORWARDED && type !== MobilityType.ACK) {
    throw new MalformedPacketError(`mobility message type ${String(type)}`);
  }
  return { type, sealed: data.subarray(1) };
}
