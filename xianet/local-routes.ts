/** RouteBackend on an in-process node: the same operations as the control port, without a socket. */
import type { ListedRoute, RouteBackend, RouteType } from '../shared/route-backend.js';
import { parseXidTypeName, Xid } from '../shared/xid.js';
import { clickListOrder } from './click-handlers.js';
import type { XiaNode } from './node.js';
import { Port, type RouteOrigin } from './route-table.js';

export class LocalRoutes implements RouteBackend {
  constructor(
    private readonly node: XiaNode,
    private readonly origin: RouteOrigin = 'mobility',
  ) {}

  private type(type: RouteType): number {
    return parseXidTypeName(type)!;
  }

  async setRoute(type: RouteType, xid: string, port: number, nextHop = '', flags = 0): Promise<void> {
    this.node.routes.set(this.type(type), {
      xid: xid === '-' ? undefined : Xid.parse(xid),
      port,
      nextHop: nextHop ? Xid.parse(nextHop) : undefined,
      flags,
      origin: this.origin,
    });
  }

  /** As xia-core's `remove`: "-" leaves the default route at port -1 (discard). */
  async removeRoute(type: RouteType, xid: string): Promise<boolean> {
    if (xid === '-') {
      this.node.routes.set(this.type(type), { xid: undefined, port: Port.DISCARD, nextHop: undefined, flags: 0, origin: this.origin });
      return true;
    }
    return this.node.routes.remove(this.type(type), Xid.parse(xid));
  }

  async listRoutes(type: RouteType): Promise<ListedRoute[]> {
    const table = this.node.routes.table(this.type(type));
    const fallback = table.defaultRoute;
    const listed: ListedRoute[] = [
      fallback
        ? { xid: '-', port: fallback.port, nextHop: fallback.nextHop?.toString() ?? '', flags: fallback.flags }
        : { xid: '-', port: Port.FALLBACK, nextHop: '', flags: 0 },
    ];
    for (const entry of clickListOrder(table.list().filter((e) => e.xid !== undefined))) {
      listed.push({ xid: entry.xid!.toString(), port: entry.port, nextHop: entry.nextHop?.toString() ?? '', flags: entry.flags });
    }
    return listed;
  }

  async ownXid(type: 'HID' | 'AD'): Promise<string | undefined> {
    return type === 'HID' ? this.node.hid.toString() : this.node.ad?.toString();
  }

  async close(): Promise<void> {}
}
