/** Reading the DGRAM payload out of a locally delivered packet. */
import { TransportType } from './transport-header.js';
import type { Arrival } from './node.js';

/** The datagram's data (a view into the packet), or undefined if it is not a DGRAM. */
export function datagramData(packet: Buffer, arrival: Arrival): Buffer | undefined {
  if (arrival.payloadLength < 1 || packet[arrival.payloadOffset] !== TransportType.DGRAM) return undefined;
  return packet.subarray(arrival.payloadOffset + 1, arrival.payloadOffset + arrival.payloadLength);
}
