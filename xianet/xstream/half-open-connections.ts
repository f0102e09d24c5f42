/**
 * Server connections between a client's HANDSHAKE init and its first acknowledgement of
 * our accept: TCP's SYN_RECEIVED. XIA source addresses are whatever the sender writes, so
 * an init costs its sender one datagram and us a connection: these are bounded, and the
 * application sees a connection only once its client has proved it hears us (its ACK
 * names a packet number of ours, which starts at random).
 *
 *  - at most `perSource` from one source host (its HID): more are not answered, and a
 *    genuine client says its init again at its next probe;
 *  - at most `total` in all: a new one pushes out the one heard from longest ago (as a
 *    SYN cache does), so a flood of forged inits cannot lock genuine clients out, whose
 *    ACK comes one round trip after the init;
 *  - each dropped once nothing was heard from it for `idleMs`.
 *
 * Every refusal is counted in the node's `xianet_refusals_total` (resource
 * stream-handshake: cap, timeout; stream-handshake-source: cap).
 */
import { LruMap, type Refusals } from '../../shared/limits.js';
import type { StreamConnection } from './stream-connection.js';

export interface HalfOpenLimits {
  /** Most half-open connections in all (default 1024); a new one pushes out the stalest. */
  total: number;
  /** Most half-open connections from one source host (default 64); more inits are not answered. */
  perSource: number;
  /** A half-open connection that hears nothing for this long is dropped (default 10 s). */
  idleMs: number;
}

export const DEFAULT_HALF_OPEN_LIMITS: HalfOpenLimits = { total: 1024, perSource: 64, idleMs: 10_000 };

interface Entry {
  source: string;
  heardAt: number;
}

export class HalfOpenConnections {
  private readonly entries: LruMap<StreamConnection, Entry>;
  private readonly perSource = new Map<string, number>();
  private timer: NodeJS.Timeout | undefined;
  private readonly limits: HalfOpenLimits;

  /** `drop`: end a connection pushed out or idle (quietly: its client may not exist). */
  constructor(
    limits: Partial<HalfOpenLimits>,
    private readonly refusals: Refusals,
    private readonly drop: (connection: StreamConnection) => void,
  ) {
    this.limits = { ...DEFAULT_HALF_OPEN_LIMITS, ...limits };
    this.entries = new LruMap({
      maxEntries: this.limits.total,
      onEvict: (connection, entry) => {
        this.release(entry.source);
        this.refusals.refuse('stream-handshake', 'cap');
        this.drop(connection);
      },
    });
  }

  get size(): number {
    return this.entries.size;
  }

  /** May one more half-open connection come from `source`? If not, the refusal is counted. */
  admit(source: string): boolean {
    if ((this.perSource.get(source) ?? 0) < this.limits.perSource) return true;
    this.refusals.refuse('stream-handshake-source', 'cap');
    return false;
  }

  add(connection: StreamConnection, source: string): void {
    this.perSource.set(source, (this.perSource.get(source) ?? 0) + 1);
    this.entries.set(connection, { source, heardAt: now() });
    this.arm();
  }

  /** A packet of this half-open connection arrived: it is not idle. */
  heard(connection: StreamConnection): void {
    const entry = this.entries.get(connection);
    if (entry) entry.heardAt = now();
  }

  /** Forgets the connection (confirmed, or gone); true if it was half-open here. */
  remove(connection: StreamConnection): boolean {
    const entry = this.entries.peek(connection);
    if (!entry) return false;
    this.entries.delete(connection);
    this.release(entry.source);
    if (this.entries.size === 0) this.disarm();
    return true;
  }

  /** Forgets every entry and the timer (the transport is closing; it destroys the connections). */
  clear(): void {
    this.entries.clear();
    this.perSource.clear();
    this.disarm();
  }

  private release(source: string): void {
    const left = (this.perSource.get(source) ?? 1) - 1;
    if (left > 0) this.perSource.set(source, left);
    else this.perSource.delete(source);
  }

  /** One timer for all: at the idle deadline of the one heard from longest ago (the LRU's first). */
  private arm(): void {
    if (this.timer) return;
    const oldest = this.entries.values().next().value;
    if (!oldest) return;
    this.timer = setTimeout(() => this.expire(), Math.max(1, oldest.heardAt + this.limits.idleMs - now()));
    this.timer.unref();
  }

  private disarm(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }

  private expire(): void {
    this.timer = undefined;
    const t = now();
    for (const [connection, entry] of this.entries.entries()) {
      if (entry.heardAt + this.limits.idleMs > t) break;
      this.entries.delete(connection);
      this.release(entry.source);
      this.refusals.refuse('stream-handshake', 'timeout');
      this.drop(connection);
    }
    this.arm();
  }
}

function now(): number {
  return performance.now();
}
