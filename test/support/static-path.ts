/**
 * Source -> router -> sink on the links given (source on s, router on r0 and r1, sink on
 * d), started, with the neighbours and routes written in by hand: no hellos, no
 * registration, nothing but forwarding between them. bench/forwarding.ts and the
 * forwarding tests run packets through it.
 */
import { Identity } from '../../shared/identity.js';
import { XidType } from '../../shared/xid.js';
import type { Link } from '../../xianet/link.js';
import { XiaNode } from '../../xianet/node.js';

export interface StaticPath {
  source: XiaNode;
  router: XiaNode;
  sink: XiaNode;
}

export async function staticPath(links: Record<'s' | 'r0' | 'r1' | 'd', Link>): Promise<StaticPath> {
  const make = (name: string, role: 'router' | 'host'): XiaNode =>
    new XiaNode({ name, role, identity: Identity.generate(), ad: role === 'router' ? Identity.generate().xid(XidType.AD) : undefined });
  const source = make('S', 'host');
  const router = make('R', 'router');
  const sink = make('D', 'host');
  source.addInterface(links.s);
  router.addInterface(links.r0);
  router.addInterface(links.r1);
  sink.addInterface(links.d);
  for (const node of [source, router, sink]) await node.start();
  const expiresAt = Date.now() + 3_600_000;
  source.neighbors.learn({ hid: router.hid, port: 0, address: links.r0.address!, expiresAt });
  router.neighbors.learn({ hid: sink.hid, port: 1, address: links.d.address!, expiresAt });
  source.routes.set(XidType.HID, { xid: sink.hid, port: 0, nextHop: router.hid, flags: 0, origin: 'static' });
  router.routes.set(XidType.HID, { xid: sink.hid, port: 1, nextHop: sink.hid, flags: 0, origin: 'static' });
  return { source, router, sink };
}
