/**
 * Route tables, one per principal type, with xia-core's semantics
 * (click elements/xia/xiaxidroutetable.cc): an entry maps an XID to an output port
 * and a next-hop HID; a default entry catches the rest; negative ports are special.
 */
import type { Xid} from '../shared/xid.js';
import { XID_ID_LENGTH } from '../shared/xid.js';

/** xia-core's special ports. */
export const Port = {
  DISCARD: -1,
  LOCAL: -2,
  /** Unused by forwarding here; kept so tables read from xia-core keep their meaning. */
  DESTINED_FOR_DHCP: -3,
  BROADCAST: -4,
  FALLBACK: -7,
} as const;

export interface RouteEntry {
  /** The XID this entry is for; undefined for the default route. */
  readonly xid: Xid | undefined;
  readonly port: number;
  /** The neighbour to hand packets to on `port` (a HID), if any. */
  readonly nextHop: Xid | undefined;
  readonly flags: number;
  /** Who installed it (for logs, `list`, and expiry of learned neighbours). */
  readonly origin: RouteOrigin;
  /** When a learned entry stops being valid (ms since epoch), if it expires. */
  readonly expiresAt?: number;
}

export type RouteOrigin = 'static' | 'control' | 'local' | 'neighbor' | 'beacon' | 'register' | 'mobility' | 'routing';

export type RouteChange = { kind: 'set' | 'remove'; type: number; entry: RouteEntry };

/** One principal type's table. Lookups by raw packet bytes allocate one short string. */
export class RouteTable {
  readonly type: number;
  private readonly entries = new Map<string, RouteEntry>();
  private fallbackEntry: RouteEntry | undefined;

  constructor(type: number) {
    this.type = type;
  }

  static keyOf(xid: Xid): string {
    return xid.id.toString('latin1');
  }

  set(entry: RouteEntry): void {
    if (entry.xid === undefined) this.fallbackEntry = entry;
    else this.entries.set(RouteTable.keyOf(entry.xid), entry);
  }

  /** Removes the entry for `xid` (the default route when undefined); true if there was one. */
  remove(xid: Xid | undefined): boolean {
    if (xid === undefined) {
      const had = this.fallbackEntry !== undefined;
      this.fallbackEntry = undefined;
      return had;
    }
    return this.entries.delete(RouteTable.keyOf(xid));
  }

  get(xid: Xid | undefined): RouteEntry | undefined {
    return xid === undefined ? this.fallbackEntry : this.entries.get(RouteTable.keyOf(xid));
  }

  get defaultRoute(): RouteEntry | undefined {
    return this.fallbackEntry;
  }

  /** The entry for the 20-byte id at `offset` of `packet`, else the default route. */
  lookup(packet: Buffer, idOffset: number): RouteEntry | undefined {
    const entry = this.entries.get(packet.toString('latin1', idOffset, idOffset + XID_ID_LENGTH));
    return entry ?? this.fallbackEntry;
  }

  /** The exact entry for the id at `offset` (no default). */
  lookupExact(packet: Buffer, idOffset: number): RouteEntry | undefined {
    return this.entries.get(packet.toString('latin1', idOffset, idOffset + XID_ID_LENGTH));
  }

  /** Entries, default route first, then by XID. */
  list(): RouteEntry[] {
    const sorted = [...this.entries.values()].sort((a, b) => a.xid!.id.compare(b.xid!.id));
    return this.fallbackEntry ? [this.fallbackEntry, ...sorted] : sorted;
  }

  get size(): number {
    return this.entries.size + (this.fallbackEntry ? 1 : 0);
  }

  /** Drops learned entries whose time is up; returns them. */
  expire(now: number): RouteEntry[] {
    const gone: RouteEntry[] = [];
    for (const [key, entry] of this.entries) {
      if (entry.expiresAt !== undefined && entry.expiresAt <= now) {
        this.entries.delete(key);
        gone.push(entry);
      }
    }
    return gone;
  }
}

/** All tables of a node, created on first use of a principal type. */
export class RouteTables {
  private readonly tables = new Map<number, RouteTable>();
  private readonly listeners: Array<(change: RouteChange) => void> = [];

  table(type: number): RouteTable {
    let table = this.tables.get(type);
    if (!table) {
      table = new RouteTable(type);
      this.tables.set(type, table);
    }
    return table;
  }

  /** The table for `type` if it exists (the forwarding path must not create tables). */
  existing(type: number): RouteTable | undefined {
    return this.tables.get(type);
  }

  types(): number[] {
    return [...this.tables.keys()].sort((a, b) => a - b);
  }

  set(type: number, entry: RouteEntry): void {
    this.table(type).set(entry);
    for (const listener of this.listeners) listener({ kind: 'set', type, entry });
  }

  remove(type: number, xid: Xid | undefined): boolean {
    const table = this.tables.get(type);
    const entry = table?.get(xid);
    if (!table || !entry) return false;
    table.remove(xid);
    for (const listener of this.listeners) listener({ kind: 'remove', type, entry });
    return true;
  }

  /** Convenience for XID-typed calls. */
  route(xid: Xid): RouteEntry | undefined {
    return this.tables.get(xid.type)?.get(xid);
  }

  onChange(listener: (change: RouteChange) => void): void {
    this.listeners.push(listener);
  }

  expire(now: number): void {
    for (const [type, table] of this.tables) {
      for (const entry of table.expire(now)) for (const listener of this.listeners) listener({ kind: 'remove', type, entry });
    }
  }
}
