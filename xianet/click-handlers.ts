/**
 * The elements and handlers an `xmig node` shows on its control port, named and
 * behaving as on an xia-core router (click-2.0.1/elements/xia/xiaxidroutetable.cc,
 * lib/element.cc), so whatever drives an xia-core router's tables drives this
 * node's the same way. For a node named N:
 *
 *   N/xrc/n/proc/rt_AD|rt_HID|rt_SID|rt_CID|rt_IP   (class XIAXIDRouteTable)
 *       write add4, set4   "XID,port,nexthop,flags" ("-" = the default route; nexthop may be empty)
 *       write add, set     "XID port" (xia-core's older form)
 *       write remove       "XID" ("-" resets the default route to port -1, as Click does)
 *       read  list         "XID,port,nexthop,flags" per route, the default first, in Click's order
 *       read  enabled, name, class, handlers
 *   N/xrc (xmig's own, class XmigNode): read hid, ad, address, counters, neighbors
 *   root: read list (the element count, then one name a line), version
 *
 * A handler answers with data or with error lines; it never throws on what a client
 * sent. Where xmig refuses what Click takes (a route to a port without an interface,
 * an XID of another type than the table's, a short XID) the message says why, and
 * the README's control-port table lists each case.
 */
import type { Xid } from '../shared/xid.js';
import { parseXidTypeName, xidTypeName } from '../shared/xid.js';
import { clickArgvec, clickTrim, isClickSpace, parseClickInteger, parseClickXid } from './click-syntax.js';
import type { XiaNode } from './node.js';
import { Port, type RouteEntry } from './route-table.js';

/** The release of Click whose ControlSocket and XIA route tables this port speaks. */
export const CLICK_VERSION = '2.0.1';
export const ROUTE_TABLE_TYPES = ['AD', 'HID', 'SID', 'CID', 'IP'] as const;

/** What a handler call gave: data (reads), or the error lines Click's ErrorHandler would collect. */
export type HandlerResult = { ok: true; data: string } | { ok: false; errors: string[] };

export interface ClickHandler {
  readonly name: string;
  /** A read handler; `param` is what followed the handler name (empty for most). */
  readonly read?: (param: string) => HandlerResult;
  /** Takes a parameter (Click's h_read_param); others refuse a non-empty one. */
  readonly readParam?: boolean;
  readonly write?: (data: string) => HandlerResult;
  /** Click's handler flag characters after r/w in `handlers` ("." = calm). */
  readonly flags?: string;
}

export interface ClickElement {
  /** Empty for the root element. */
  readonly name: string;
  readonly className: string;
  readonly handlers: ReadonlyMap<string, ClickHandler>;
}

const OK: HandlerResult = { ok: true, data: '' };
const ok = (data = ''): HandlerResult => (data === '' ? OK : { ok: true, data });
const fail = (...errors: string[]): HandlerResult => ({ ok: false, errors });

/** xia-core's special ports a route may name. */
const SPECIAL_PORTS = new Set<number>([Port.DISCARD, Port.LOCAL, Port.DESTINED_FOR_DHCP, Port.BROADCAST, Port.FALLBACK]);

/** Click's initial HashContainer size, and how it grows (hashcontainer.hh). */
const CLICK_INITIAL_BUCKETS = 63;

/**
 * The order Click's `list` gives the routes of a table: a HashTable<XID> walked bucket
 * by bucket, the bucket being the XID's 32-bit word at id bytes 12..15 (XID::hashcode,
 * little-endian on x86) modulo the bucket count (63, growing to 127, 255, ... when the
 * table holds more than twice as many entries as buckets). Within one bucket Click
 * lists the newest first; xmig, which does not keep insertion times, by XID there.
 */
export function clickListOrder(entries: readonly RouteEntry[]): RouteEntry[] {
  let buckets = CLICK_INITIAL_BUCKETS;
  while (entries.length > 2 * buckets) buckets = (buckets + 1) * 2 - 1;
  const bucketOf = (xid: Xid): number => xid.id.readUInt32LE(12) % buckets;
  return [...entries].sort((a, b) => bucketOf(a.xid!) - bucketOf(b.xid!) || a.xid!.id.compare(b.xid!.id));
}

function routeLine(xid: string, entry: { port: number; nextHop: Xid | undefined; flags: number }): string {
  return `${xid},${entry.port},${entry.nextHop?.toString() ?? ''},${entry.flags}\n`;
}

/** Click's `handlers` listing: one "name<TAB>flags" line per handler, last added first. */
function handlersListing(handlers: Iterable<ClickHandler>): string {
  return [...handlers]
    .reverse()
    .map((h) => `${h.name}\t${h.read ? 'r' : ''}${h.write ? 'w' : ''}${h.readParam ? '+' : ''}${h.flags ?? ''}\n`)
    .join('');
}

class Handlers {
  private readonly map = new Map<string, ClickHandler>();

  add(handler: ClickHandler): this {
    this.map.set(handler.name, handler);
    return this;
  }

  get all(): ReadonlyMap<string, ClickHandler> {
    return this.map;
  }
}

/** Every element has these (Element::add_default_handlers); registered first, so listed last. */
function defaultHandlers(elementName: () => string, className: string, handlers: () => Iterable<ClickHandler>): Handlers {
  return new Handlers()
    .add({ name: 'name', read: () => ok(elementName()), flags: '.' })
    .add({ name: 'class', read: () => ok(className), flags: '.' })
    .add({ name: 'handlers', read: () => ok(handlersListing(handlers())), flags: '.' });
}

export interface NamespaceOptions {
  /** The root `auth` write handler, if TCP connections authenticate (see click-control-port.ts). */
  auth?: ClickHandler;
}

/** The element tree of one node. */
export class ClickNamespace {
  readonly root: ClickElement;
  private readonly elements: ClickElement[];
  private readonly byName = new Map<string, ClickElement>();

  constructor(
    private readonly node: XiaNode,
    options: NamespaceOptions = {},
  ) {
    this.elements = [...ROUTE_TABLE_TYPES.map((type) => this.routeTable(type)), this.xrcElement()];
    for (const element of this.elements) this.byName.set(element.name, element);
    const root = new Handlers()
      .add({ name: 'version', read: () => ok(CLICK_VERSION), flags: '.' })
      .add({ name: 'list', read: () => ok(this.elementList()) });
    if (options.auth) root.add(options.auth);
    this.root = { name: '', className: '', handlers: root.all };
  }

  /** An element by name, or by its 1-based index as Click allows ("3.list"). */
  element(name: string): ClickElement | undefined {
    const found = this.byName.get(name);
    if (found) return found;
    const index = parseClickInteger(name);
    return index !== undefined && index > 0 && index <= this.elements.length ? this.elements[index - 1] : undefined;
  }

  private elementList(): string {
    return `${this.elements.length}\n${this.elements.map((e) => `${e.name}\n`).join('')}`;
  }

  private routeTable(typeName: (typeof ROUTE_TABLE_TYPES)[number]): ClickElement {
    const name = `${this.node.name}/xrc/n/proc/rt_${typeName}`;
    const type = parseXidTypeName(typeName)!;
    const handlers: Handlers = defaultHandlers(() => name, 'XIAXIDRouteTable', (): Iterable<ClickHandler> => handlers.all.values())
      .add({ name: 'add', write: (data) => this.setOldForm(type, data, true) })
      .add({ name: 'set', write: (data) => this.setOldForm(type, data, false) })
      .add({ name: 'add4', write: (data) => this.set4(type, data, true) })
      .add({ name: 'set4', write: (data) => this.set4(type, data, false) })
      .add({ name: 'remove', write: (data) => this.remove(type, data) })
      .add({ name: 'list', read: () => ok(this.list(type)) })
      .add({ name: 'enabled', read: () => ok('1') });
    return { name, className: 'XIAXIDRouteTable', handlers: handlers.all };
  }

  private xrcElement(): ClickElement {
    const node = this.node;
    const name = `${node.name}/xrc`;
    const handlers: Handlers = defaultHandlers(() => name, 'XmigNode', (): Iterable<ClickHandler> => handlers.all.values())
      .add({ name: 'hid', read: () => ok(`${node.hid}\n`) })
      .add({ name: 'ad', read: () => ok(node.ad ? `${node.ad}\n` : '') })
      .add({ name: 'address', read: () => ok(`${node.address().toString()}\n`) })
      .add({ name: 'counters', read: () => ok(`${JSON.stringify(node.counters)}\n`) })
      .add({
        name: 'neighbors',
        read: () =>
          ok(
            node.neighbors
              .list()
              .map((n) => `${n.hid},${n.port},${n.address},${n.role ?? ''},${n.ad?.toString() ?? ''}\n`)
              .join(''),
          ),
      });
    return { name, className: 'XmigNode', handlers: handlers.all };
  }

  /** The default route as Click keeps it: always there; port -1 once removed. */
  private defaultRoute(type: number): { port: number; nextHop: Xid | undefined; flags: number } {
    return this.node.routes.table(type).defaultRoute ?? { port: Port.FALLBACK, nextHop: undefined, flags: 0 };
  }

  private list(type: number): string {
    const table = this.node.routes.table(type);
    let text = routeLine('-', this.defaultRoute(type));
    const entries = table.list().filter((entry) => entry.xid !== undefined);
    for (const entry of clickListOrder(entries)) text += routeLine(entry.xid!.toString(), entry);
    return text;
  }

  /** xmig's check of a route's port: an interface this node has, or one of xia-core's special ports. */
  private portProblem(port: number): string | undefined {
    if (port < 0) return SPECIAL_PORTS.has(port) ? undefined : `invalid port: ${port} is not a port xia-core defines (-1, -2, -3, -4, -7)`;
    return this.node.interface(port) ? undefined : `invalid port: ${this.node.name} has no interface ${port}`;
  }

  /** xmig's check of a route's XID: of the table's own type (xmig's tables are keyed by the 20-byte id). */
  private typeProblem(xid: Xid, type: number): string | undefined {
    return xid.type === type ? undefined : `invalid XID: ${xid} is not an ${xidTypeName(type)} (xmig keeps each table to its own type)`;
  }

  /** set4 / add4, in the order Click checks: count, port, flags, next hop, XID, duplicate. */
  private set4(type: number, data: string, addOnly: boolean): HandlerResult {
    const args = clickArgvec(data);
    if (args.length < 2 || args.length > 4) return fail('invalid route: ');
    const port = parseClickInteger(args[1]!);
    if (port === undefined) return fail('invalid port: ');
    let flags = 0;
    if (args.length === 4) {
      const parsed = parseClickInteger(args[3]!, 'uint32');
      if (parsed === undefined) return fail('invalid flags: ');
      flags = parsed;
    }
    let nextHop: Xid | undefined;
    if (args.length >= 3 && args[2] !== '') {
      nextHop = parseClickXid(args[2]!);
      if (!nextHop) return fail('invalid next hop xid: ');
    }
    const routes = this.node.routes;
    if (args[0] === '-') {
      if (addOnly && this.defaultRoute(type).port !== Port.DISCARD) return fail('duplicate default route: ');
      const problem = this.portProblem(port);
      if (problem) return fail(problem);
      routes.set(type, { xid: undefined, port, nextHop, flags, origin: 'control' });
      return OK;
    }
    const xid = parseClickXid(args[0]!);
    if (!xid) return fail('invalid XID: ');
    const problem = this.typeProblem(xid, type) ?? this.portProblem(port);
    if (problem) return fail(problem);
    if (addOnly && routes.table(type).get(xid)) return fail('duplicate XID: ');
    routes.set(type, { xid, port, nextHop, flags, origin: 'control' });
    return OK;
  }

  /** add / set "XID port": the first word, then the rest must be a port. */
  private setOldForm(type: number, data: string, addOnly: boolean): HandlerResult {
    let start = 0;
    while (start < data.length && isClickSpace(data.charCodeAt(start))) start++;
    let end = start;
    while (end < data.length && !isClickSpace(data.charCodeAt(end))) end++;
    const xid = data.slice(start, end);
    if (xid === '') return OK; // Click ignores an empty entry
    const port = parseClickInteger(clickTrim(data.slice(end)));
    if (port === undefined) return fail('invalid port: ');
    return this.set4(type, `${xid},${port},,0`, addOnly);
  }

  private remove(type: number, data: string): HandlerResult {
    const text = clickTrim(data);
    if (text === '') return OK; // Click ignores an empty entry
    const routes = this.node.routes;
    if (text === '-') {
      routes.set(type, { xid: undefined, port: Port.DISCARD, nextHop: undefined, flags: 0, origin: 'control' });
      return OK;
    }
    const xid = parseClickXid(text);
    if (!xid) return fail('invalid XID: ');
    const problem = this.typeProblem(xid, type);
    if (problem) return fail(problem);
    if (!routes.remove(type, xid)) return fail('nonexistent XID: ');
    return OK;
  }
}
