/**
 * Neighbours: which link address a HID has on each interface (xia-core's XARP
 * table). Forwarding hands a packet to `route.nextHop` on `route.port`; this table
 * says where that is on the segment. Entries are learned from authenticated hellos,
 * beacons and registrations, and expire when not refreshed: each learning grants a hold,
 * and an entry lasts to the longest hold granted, so a hello (a few periods) never cuts
 * short what a registration granted (see XrouteServiceOptions.registeredHostMs).
 */
import type { Xid } from '../shared/xid.js';
import type { LinkAddress } from './link.js';

export interface Neighbor {
  readonly hid: Xid;
  readonly port: number;
  readonly address: LinkAddress;
  /** The neighbour's AD, when it said (routers do). */
  readonly ad?: Xid;
  readonly role?: 'router' | 'host';
  readonly expiresAt: number;
}

export class NeighborTable {
  /** Per port, HID id (latin1) -> neighbour. */
  private readonly ports = new Map<number, Map<string, Neighbor>>();

  private static key(hid: Xid): string {
    return hid.id.toString('latin1');
  }

  /** Where `neighbor.hid` is on its port now; it lasts to the later of its expiry and the one it had. */
  learn(neighbor: Neighbor): { isNew: boolean; moved: boolean } {
    let table = this.ports.get(neighbor.port);
    if (!table) {
      table = new Map();
      this.ports.set(neighbor.port, table);
    }
    const key = NeighborTable.key(neighbor.hid);
    const previous = table.get(key);
    table.set(key, previous && previous.expiresAt > neighbor.expiresAt ? { ...neighbor, expiresAt: previous.expiresAt } : neighbor);
    return { isNew: previous === undefined, moved: previous !== undefined && previous.address !== neighbor.address };
  }

  /** Link address of `hid` on `port` (the forwarding path: one string allocation). */
  addressOf(port: number, hid: Xid): LinkAddress | undefined {
    return this.ports.get(port)?.get(NeighborTable.key(hid))?.address;
  }

  get(port: number, hid: Xid): Neighbor | undefined {
    return this.ports.get(port)?.get(NeighborTable.key(hid));
  }

  /** Every port on which `hid` is a neighbour. */
  portsOf(hid: Xid): number[] {
    const key = NeighborTable.key(hid);
    return [...this.ports].filter(([, table]) => table.has(key)).map(([port]) => port);
  }

  forget(port: number, hid: Xid): boolean {
    return this.ports.get(port)?.delete(NeighborTable.key(hid)) ?? false;
  }

  forgetPort(port: number): Neighbor[] {
    const table = this.ports.get(port);
    this.ports.delete(port);
    return table ? [...table.values()] : [];
  }

  list(port?: number): Neighbor[] {
    const tables = port === undefined ? [...this.ports.values()] : [this.ports.get(port) ?? new Map<string, Neighbor>()];
    return tables.flatMap((t) => [...t.values()]);
  }

  expire(now: number): Neighbor[] {
    const gone: Neighbor[] = [];
    for (const table of this.ports.values()) {
      for (const [key, neighbor] of table) {
        if (neighbor.expiresAt <= now) {
          table.delete(key);
          gone.push(neighbor);
        }
      }
    }
    return gone;
  }
}
