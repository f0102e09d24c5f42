/**
 * STREAM connections of API clients: each travels on a data socket of its own (see
 * api-frames.ts). A connection waits here, under a one-time token, until its client
 * opens that socket and `attach`es; the waiting room is bounded (by count and by time),
 * and then the socket and the connection are spliced with backpressure both ways, so a
 * data socket can never make the node buffer more than the STREAM windows.
 */
import { randomBytes } from 'node:crypto';
import type { Socket } from 'node:net';
import type { Refusals } from '../../shared/limits.js';
import type { StreamConnection } from './node-api.js';

interface Waiting {
  connection: StreamConnection;
  token: string;
  timer: NodeJS.Timeout;
}

/** STREAM connections waiting for their data socket to attach. */
export class PendingStreams {
  private nextId = 1;
  private readonly pending = new Map<number, Waiting>();

  constructor(
    private readonly limits: { maxPendingStreams: number; pendingStreamMs: number },
    private readonly refusals: Refusals,
  ) {}

  get size(): number {
    return this.pending.size;
  }

  /** A token for `connection`, or undefined (refused and counted) when too many wait already. */
  add(connection: StreamConnection): { streamId: number; token: string } | undefined {
    if (this.pending.size >= this.limits.maxPendingStreams) {
      this.refusals.refuse('api-stream-token', 'cap');
      return undefined;
    }
    const streamId = this.nextId++;
    const token = randomBytes(16).toString('hex');
    // A connection nobody attaches to in time is dropped, not leaked.
    const timer = setTimeout(() => {
      this.pending.delete(streamId);
      this.refusals.refuse('api-stream-token', 'timeout');
      connection.destroy();
    }, this.limits.pendingStreamMs);
    timer.unref();
    this.pending.set(streamId, { connection, token, timer });
    // Gone before anyone attached (the peer reset it): forget it now.
    connection.once('close', () => {
      const entry = this.pending.get(streamId);
      if (entry?.connection !== connection) return;
      clearTimeout(entry.timer);
      this.pending.delete(streamId);
    });
    return { streamId, token };
  }

  take(streamId: unknown, token: unknown): StreamConnection | undefined {
    const entry = typeof streamId === 'number' ? this.pending.get(streamId) : undefined;
    if (!entry || typeof token !== 'string' || entry.token !== token) return undefined;
    clearTimeout(entry.timer);
    this.pending.delete(streamId as number);
    return entry.connection;
  }

  clear(): void {
    for (const entry of this.pending.values()) {
      clearTimeout(entry.timer);
      entry.connection.destroy();
    }
    this.pending.clear();
  }
}

/**
 * Joins a data socket and a STREAM connection: bytes both ways through pipe() (each
 * side pauses the other when its buffer is full), half-close passed on (the application
 * ending its socket ends the connection gracefully), and an abrupt close of either side
 * aborts the other.
 */
export function splice(socket: Socket, connection: StreamConnection, initial: Buffer): void {
  if (initial.length > 0) connection.write(initial);
  let socketEnded = false;
  socket.on('end', () => (socketEnded = true));
  socket.pipe(connection);
  connection.pipe(socket);
  socket.on('error', () => connection.destroy());
  socket.on('close', () => {
    // Closed without ending first: the application went away (or crashed).
    if (!socketEnded && !connection.destroyed) connection.destroy();
  });
  connection.on('error', () => socket.destroy());
  connection.on('close', () => {
    if (!socket.destroyed && !socket.writableEnded) socket.destroy();
  });
}
