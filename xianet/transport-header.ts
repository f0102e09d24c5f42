/**
 * The first byte of every XIP payload with next header 60 (transport) says which
 * transport the rest belongs to. DGRAM has nothing more; STREAM and CHUNK carry
 * their own headers after it.
 */
export const TransportType = {
  DGRAM: 1,
  STREAM: 2,
  CHUNK: 3,
} as const;
export type TransportTypeCode = (typeof TransportType)[keyof typeof TransportType];

export const TRANSPORT_HEADER_LENGTH = 1;
