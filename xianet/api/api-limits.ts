/**
 * The bounds of the application API server: what one client, and all of them, may make
 * the node hold. Anything beyond is refused and counted in the node's
 * `xianet_refusals_total{resource,reason}`; nothing is dropped silently.
 *
 * The defaults fit the heaviest genuine client, the mover (at most 64 MiB of chunks
 * asked for at once: mover/chunk-exchange.ts RETRIEVER_BYTES_IN_FLIGHT, whose replies
 * must fit under `writeHardBytes` with `writeSoftBytes` beside them; frames of a round
 * of chunks), with room, and keep a flood of bad clients to a few hundred MB at most.
 */
import { MAX_FRAME } from './api-frames.js';

export interface ApiLimits {
  /** Largest frame (its length field) a client may send. */
  maxFrameBytes: number;
  /** A frame being received that makes no progress for this long is refused (the connection goes). */
  frameIdleMs: number;
  /** A frame being received that is not complete after this long is refused. */
  frameCompletionMs: number;
  /** Bytes of frames being received (not yet whole) one connection may hold. */
  partialBytesPerConnection: number;
  /** Bytes of frames being received all connections together may hold; the stalest goes first. */
  partialBytesTotal: number;
  /** Connections (control sessions, STREAM data sockets and those not yet either) at once. */
  maxConnections: number;
  /** Requests one session runs at once; beyond, the session stops reading until one ends. */
  maxInFlightPerSession: number;
  /** Bytes queued toward a client beyond which the session stops reading and sheds events. */
  writeSoftBytes: number;
  /** Bytes queued toward a client beyond which it is disconnected. */
  writeHardBytes: number;
  /** DGRAM sockets, STREAM listeners and pings one session may hold open. */
  maxDatagramSockets: number;
  maxListeners: number;
  maxPings: number;
  /** STREAM connections waiting for their data socket, over all sessions. */
  maxPendingStreams: number;
  /** A STREAM connection whose data socket does not attach in this long is dropped. */
  pendingStreamMs: number;
}

export const DEFAULT_API_LIMITS: ApiLimits = {
  maxFrameBytes: MAX_FRAME,
  frameIdleMs: 10_000,
  frameCompletionMs: 60_000,
  partialBytesPerConnection: MAX_FRAME + 64 * 1024,
  partialBytesTotal: 96 * 1024 * 1024,
  maxConnections: 256,
  maxInFlightPerSession: 256,
  writeSoftBytes: 8 * 1024 * 1024,
  writeHardBytes: 96 * 1024 * 1024,
  maxDatagramSockets: 256,
  maxListeners: 256,
  maxPings: 32,
  maxPendingStreams: 1024,
  pendingStreamMs: 10_000,
};
