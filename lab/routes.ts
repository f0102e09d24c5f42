/**
 * Route tables as the routers, the hosts and the VM report them on their control ports
 * (the Click ControlSocket `list` read handler, through shared/click-control-client.ts):
 * a snapshot before and after each move, what changed where, and whether the entries the
 * paper says must go — the old host's entry for the VM, the VM's entry for its old host
 * — are gone.
 */
import { ControlClient, RouteControl, type ControlTarget, type ListedRoute, type RouteType } from '../shared/click-control-client.js';
import { errorMessage } from '../shared/errors.js';

export interface RouteSnapshot {
  node: string;
  /** Epoch ms. */
  at: number;
  tables: Partial<Record<RouteType, ListedRoute[]>>;
  /** Why the table could not be read (the snapshot then has no tables). */
  error?: string;
}

export interface RouteChange {
  node: string;
  type: RouteType;
  xid: string;
  before?: ListedRoute;
  after?: ListedRoute;
}

export const SNAPSHOT_TYPES: readonly RouteType[] = ['HID', 'AD'];

/** Reads the `list` of each table of `router` (the node's name) at `target`; never throws. */
export async function snapshotRoutes(node: string, target: ControlTarget, types: readonly RouteType[] = SNAPSHOT_TYPES, timeoutMs = 10_000): Promise<RouteSnapshot> {
  const client = new ControlClient(target, { timeoutMs });
  const at = Date.now();
  try {
    const control = new RouteControl(client, node);
    const tables: RouteSnapshot['tables'] = {};
    for (const type of types) tables[type] = await control.listRoutes(type);
    return { node, at, tables };
  } catch (error) {
    return { node, at, tables: {}, error: errorMessage(error) };
  } finally {
    await client.stop();
  }
}

const same = (a: ListedRoute, b: ListedRoute): boolean => a.port === b.port && a.nextHop.toLowerCase() === b.nextHop.toLowerCase() && a.flags === b.flags;

/** Entries added, removed or changed between two snapshots of one node. */
export function routeChanges(before: RouteSnapshot, after: RouteSnapshot): RouteChange[] {
  const changes: RouteChange[] = [];
  for (const type of Object.keys({ ...before.tables, ...after.tables }) as RouteType[]) {
    const old = new Map((before.tables[type] ?? []).map((r) => [r.xid.toLowerCase(), r]));
    const now = new Map((after.tables[type] ?? []).map((r) => [r.xid.toLowerCase(), r]));
    for (const [xid, route] of now) {
      const was = old.get(xid);
      if (!was) changes.push({ node: after.node, type, xid: route.xid, after: route });
      else if (!same(was, route)) changes.push({ node: after.node, type, xid: route.xid, before: was, after: route });
    }
    for (const [xid, route] of old) if (!now.has(xid)) changes.push({ node: before.node, type, xid: route.xid, before: route });
  }
  return changes;
}

/** The entry for `xid` in a snapshot's table of its type, if any. */
export function routeFor(snapshot: RouteSnapshot, xid: string): ListedRoute | undefined {
  const type = xid.split(':')[0]!.toUpperCase() as RouteType;
  return snapshot.tables[type]?.find((r) => r.xid.toLowerCase() === xid.toLowerCase());
}

/** One line per change, for the report: `R1 HID:ab12… 0 → 2 via HID:cd34…`. */
export function describeChange(change: RouteChange): string {
  const short = (xid: string): string => (xid.length > 16 ? `${xid.slice(0, xid.indexOf(':') + 9)}…` : xid);
  const side = (r: ListedRoute | undefined): string => (r ? `port ${r.port}${r.nextHop ? ` via ${short(r.nextHop)}` : ''}` : 'none');
  // The default route is `-` in every table: name the table.
  const xid = change.xid === '-' ? `${change.type} default` : short(change.xid);
  return `${change.node} ${xid}: ${side(change.before)} -> ${side(change.after)}`;
}
