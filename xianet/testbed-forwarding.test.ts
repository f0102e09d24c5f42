import { afterEach, describe, expect, it } from 'vitest';
import { Dag } from '../shared/dag.js';
import { Xid, XidType } from '../shared/xid.js';
import { NextHeader, xipSrcDag } from '../shared/xip-header.js';
import { InProcessNetwork, INTER_AD, INTRA_AD } from './topology.js';
import { encodeXcmp, XcmpType } from './xcmp.js';
import { ping } from './xping.js';

let network: InProcessNetwork | undefined;
afterEach(async () => {
  await network?.stop();
  network = undefined;
});

async function build(topology: typeof INTRA_AD): Promise<InProcessNetwork> {
  network = new InProcessNetwork(topology, { beaconIntervalMs: 50, helloIntervalMs: 200 });
  await network.start();
  await network.ready();
  return network;
}

describe.each([
  ['Fig. 1a (intra-AD)', INTRA_AD],
  ['Fig. 1b (inter-AD)', INTER_AD],
])('%s', (_, topology) => {
  it('xping works between every pair of hosts', async () => {
    const net = await build(topology);
    const hosts = ['A', 'B', 'C', 'VM'];
    for (const from of hosts) {
      for (const to of hosts) {
        if (from === to) continue;
        const result = await ping(net.stack(from).node, net.stack(to).node.address(), { count: 3, intervalMs: 5 });
        expect(result.received, `${from} -> ${to}`).toBe(3);
      }
    }
  });
});

describe('forwarding semantics', () => {
  it('reaches a host by the HID fallback edge when its AD has no route', async () => {
    const net = await build(INTER_AD);
    const b = net.stack('B').node;
    const r1 = net.stack('R1').node;
    // An AD nobody routes to, with B's HID behind it, and a route to B's HID on R1.
    const nowhere = Xid.parse('AD:9999999999999999999999999999999999999999');
    const dst = Dag.hostAddress(nowhere, b.hid);
    const r2 = net.stack('R2').node;
    const toR2 = r1.routes.route(b.ad!)!;
    r1.routes.set(XidType.HID, { xid: b.hid, port: toR2.port, nextHop: r2.hid, flags: 0, origin: 'static' });
    const result = await ping(net.stack('C').node, dst, { count: 3, intervalMs: 5 });
    expect(result.received).toBe(3);
  });

  it('delivers RE ( AD HID ) SID by the AD-HID fallback path when the SID intent has no route', async () => {
    const net = await build(INTRA_AD);
    const b = net.stack('B').node;
    const sid = Xid.random(XidType.SID);
    const got: string[] = [];
    b.bind(sid, (packet, arrival) => got.push(packet.toString('utf8', arrival.payloadOffset + 1, arrival.payloadOffset + arrival.payloadLength)));
    const dst = Dag.parse(`RE ( ${b.ad} ${b.hid} ) ${sid}`);
    net.stack('C').node.sendDatagram(dst, Buffer.from('fallback'));
    await expect.poll(() => got.length).toBeGreaterThan(0);
    expect(got).toEqual(['fallback']);
  });

  it('returns XCMP time exceeded when the hop limit runs out', async () => {
    const net = await build(INTER_AD);
    const c = net.stack('C').node;
    const b = net.stack('B').node;
    // Hop limit 1 leaves C and runs out at R1, the first router.
    const answer = new Promise<{ type: number; from: string }>((resolve) => {
      const off = c.onXcmp((message, packet) => {
        off();
        resolve({ type: message.type, from: xipSrcDag(packet).toString() });
      });
    });
    c.sendPacket(b.address(), encodeXcmp({ type: XcmpType.ECHO, code: 0, identifier: 1, sequence: 1, data: Buffer.alloc(8) }), {
      hopLimit: 1,
      nextHeader: NextHeader.XCMP,
    });
    expect(await answer).toEqual({ type: XcmpType.TIME_EXCEEDED, from: net.stack('R1').node.address().toString() });
    expect(net.stack('R1').node.counters.dropped['hop-limit']).toBe(1);
    // ... while with the default hop limit the same echo gets through.
    expect((await ping(c, b.address(), { count: 1 })).received).toBe(1);
  });

  it('returns XCMP unreachable for unknown destinations, and xping reports it', async () => {
    const net = await build(INTER_AD);
    const unknownHost = Dag.chain(net.stack('R2').node.ad!, Xid.random(XidType.HID));
    const result = await ping(net.stack('C').node, unknownHost, { count: 2, intervalMs: 5 });
    expect(result.received).toBe(0);
    expect(result.replies.map((r) => r.error)).toEqual(['unreachable/1', 'unreachable/1']);
  });

  it('counts and drops malformed packets without disturbing other traffic', async () => {
    const net = await build(INTRA_AD);
    const r1 = net.stack('R1').node;
    const junkLink = net.link('A');
    const flood = setInterval(() => {
      for (let i = 0; i < 50; i++) {
        const junk = Buffer.alloc(20 + (i % 60), i);
        junk[0] = 1;
        junkLink.broadcast(junk);
      }
    }, 1);
    const result = await ping(net.stack('A').node, net.stack('C').node.address(), { count: 40, intervalMs: 5 });
    clearInterval(flood);
    expect(result.received).toBe(40);
    expect(r1.counters.dropped.malformed).toBeGreaterThan(500);
  });
});
