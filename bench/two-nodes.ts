/** Two nodes on one UDP segment over loopback, wired by hand (no beacons): the benches' network. */
import { Identity } from '../shared/identity.js';
import { XidType } from '../shared/xid.js';
import { XiaNode } from '../xianet/node.js';
import { UdpLink } from '../xianet/udp-link.js';

export async function twoUdpNodes(): Promise<{ a: XiaNode; b: XiaNode; stop(): Promise<void> }> {
  const ad = Identity.generate().xid(XidType.AD);
  const make = (name: string): { node: XiaNode; link: UdpLink } => {
    const node = new XiaNode({ name, role: 'host', identity: Identity.generate(), ad });
    const link = new UdpLink({ name, bindAddress: '127.0.0.1', port: 0, socketBufferBytes: 16 << 20 });
    node.addInterface(link);
    return { node, link };
  };
  const a = make('A');
  const b = make('B');
  await a.node.start();
  await b.node.start();
  const forever = Date.now() + 24 * 3600_000;
  a.node.neighbors.learn({ hid: b.node.hid, port: 0, address: b.link.address!, expiresAt: forever });
  b.node.neighbors.learn({ hid: a.node.hid, port: 0, address: a.link.address!, expiresAt: forever });
  a.node.routes.set(XidType.HID, { xid: b.node.hid, port: 0, nextHop: b.node.hid, flags: 0, origin: 'static' });
  b.node.routes.set(XidType.HID, { xid: a.node.hid, port: 0, nextHop: a.node.hid, flags: 0, origin: 'static' });
  return {
    a: a.node,
    b: b.node,
    stop: async () => {
      await a.node.stop();
      await b.node.stop();
    },
  };
}

export function median(values: number[]): number {
  const sorted = [...values].sort((x, y) => x - y);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}
