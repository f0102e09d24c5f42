/**
 * Runs through a router on real UDP links at MTU 1500: a host's burst of equal packets
 * leaves in GSO runs, reaches the router as UDP_GRO datagrams of alike packets, is routed
 * once per run and sent on whole, and arrives at the sink intact and in order — the same
 * bytes, the same per-packet counters, as packet by packet.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { Dag } from '../shared/dag.js';
import { Identity } from '../shared/identity.js';
import { encodeXip, NextHeader, XipOffset } from '../shared/xip-header.js';
import { Xid, XidType } from '../shared/xid.js';
import type { XiaNode } from './node.js';
import { staticPath, type StaticPath } from '../test/support/static-path.js';
import { TransportType } from './transport-header.js';
import { udpBatchAddon } from './udp-batch.js';
import { UdpLink } from './udp-link.js';

const { addon, reason } = udpBatchAddon();
if (!addon) console.warn(`forwarding-runs.test: SKIPPED: ${reason} (GSO and GRO need the addon; npm ci builds it)`);

const started: XiaNode[] = [];
afterEach(async () => {
  for (const node of started.splice(0)) await node.stop();
});

async function path(): Promise<StaticPath & { links: Record<'s' | 'r0' | 'r1' | 'd', UdpLink> }> {
  const link = (name: string): UdpLink => new UdpLink({ name, bindAddress: '127.0.0.1', port: 0, mtu: 1500, socketBufferBytes: 8 << 20 });
  const links = { s: link('s0'), r0: link('r0'), r1: link('r1'), d: link('d0') };
  const nodes = await staticPath(links);
  started.push(nodes.source, nodes.router, nodes.sink);
  return { ...nodes, links };
}

/** `count` packets of one flow to `dst`, payloads numbered, all but the last as large as the MTU allows. */
function burst(source: XiaNode, dst: Dag, count: number, mtu: number, kind: number = TransportType.DGRAM): Buffer[] {
  const header = encodeXip({ dst, src: source.address(), nextHeader: NextHeader.TRANSPORT, payload: Buffer.alloc(0) }).length;
  return Array.from({ length: count }, (_, i) => {
    const payload = Buffer.alloc(i === count - 1 ? 100 : mtu - header, i & 0xff);
    payload[0] = kind;
    payload.writeUInt32BE(i, 1);
    return encodeXip({ dst, src: source.address(), nextHeader: NextHeader.TRANSPORT, payload });
  });
}

describe.skipIf(!addon)('runs of alike packets through a router (UDP GSO and GRO, MTU 1500)', () => {
  it('forwards each run once and whole, and the sink gets every packet intact and in order', async () => {
    const { source, router, sink, links } = await path();
    const sid = Xid.random(XidType.SID);
    const got: Buffer[] = [];
    sink.bind(sid, (packet, arrival) => got.push(Buffer.from(packet.subarray(arrival.payloadOffset, arrival.payloadOffset + arrival.payloadLength))));
    const dst = Dag.chain(sink.hid, sid);
    const packets = burst(source, dst, 150, links.s.mtu);
    const expected = packets.map((p) => Buffer.from(p.subarray(p.length - (p.readUInt16BE(XipOffset.PAYLOAD_LENGTH)))));
    // In a few turns of the event loop, each within the socket buffers.
    for (let at = 0; at < packets.length; at += 50) {
      for (const p of packets.slice(at, at + 50)) source.originate(p);
      await expect.poll(() => got.length, { timeout: 10_000 }).toBe(Math.min(packets.length, at + 50));
    }
    expect(Buffer.concat(got).equals(Buffer.concat(expected))).toBe(true);
    expect(links.r0.stats.groRuns).toBeGreaterThan(0);
    expect(links.r1.stats.runsSent).toBe(links.r0.stats.groRuns);
    expect(links.d.stats.groRuns).toBeGreaterThan(0);
    // Counted per packet, as packet by packet.
    expect(router.counters).toMatchObject({ received: 150, forwarded: 150 });
    expect(sink.counters).toMatchObject({ received: 150, delivered: 150 });
  });

  it('meets what is not a forward packet by packet: a run to a host the router cannot reach is dropped whole, counted each', async () => {
    const { source, router, links } = await path();
    // The way back, for the XCMP errors.
    router.neighbors.learn({ hid: source.hid, port: 0, address: links.s.address!, expiresAt: Date.now() + 3_600_000 });
    router.routes.set(XidType.HID, { xid: source.hid, port: 0, nextHop: source.hid, flags: 0, origin: 'static' });
    const stranger = Identity.generate().xid(XidType.HID);
    source.routes.set(XidType.HID, { xid: stranger, port: 0, nextHop: router.hid, flags: 0, origin: 'static' });
    for (const p of burst(source, Dag.chain(stranger, Xid.random(XidType.SID)), 40, links.s.mtu)) source.originate(p);
    await expect.poll(() => router.counters.received, { timeout: 10_000 }).toBe(40);
    expect(links.r0.stats.groRuns).toBeGreaterThan(0);
    expect(router.counters.dropped.unreachable).toBe(40);
    // Each its own XCMP error, as the responder's rate limit allows: all that was forwarded.
    expect(router.counters.xcmpSent).toBeGreaterThan(0);
    expect(router.counters.forwarded).toBe(router.counters.xcmpSent);
  });

  it("shows every CHUNK packet of a run to a router's transit tap", async () => {
    const { source, router, sink, links } = await path();
    const seen: number[] = [];
    router.setTransitChunkTap((packet, payloadOffset) => seen.push(packet.readUInt32BE(payloadOffset + 1)));
    let delivered = 0;
    const sid = Xid.random(XidType.SID);
    sink.bind(sid, () => delivered++);
    for (const p of burst(source, Dag.chain(sink.hid, sid), 60, links.s.mtu, TransportType.CHUNK)) source.originate(p);
    await expect.poll(() => delivered, { timeout: 10_000 }).toBe(60);
    expect(links.r0.stats.groRuns).toBeGreaterThan(0);
    expect(seen).toEqual(Array.from({ length: 60 }, (_, i) => i));
  });

  it('sends a group built alike (headers with tails, as a chunk response) routed once, intact and in order', async () => {
    const { source, router, sink, links } = await path();
    const sid = Xid.random(XidType.SID);
    const got: Buffer[] = [];
    sink.bind(sid, (packet, arrival) => got.push(Buffer.from(packet.subarray(arrival.payloadOffset, arrival.payloadOffset + arrival.payloadLength))));
    const packets = burst(source, Dag.chain(sink.hid, sid), 45, links.s.mtu);
    const payloads = packets.map((p) => Buffer.from(p.subarray(p.length - p.readUInt16BE(XipOffset.PAYLOAD_LENGTH))));
    // Each packet cut into its header and 8 bytes of payload, and the rest as its tail.
    const cut = packets.map((p) => p.length - p.readUInt16BE(XipOffset.PAYLOAD_LENGTH) + 8);
    source.originateAlike(packets.map((p, i) => Buffer.from(p.subarray(0, cut[i]))), packets.map((p, i) => p.subarray(cut[i])));
    await expect.poll(() => got.length, { timeout: 10_000 }).toBe(45);
    expect(Buffer.concat(got).equals(Buffer.concat(payloads))).toBe(true);
    expect(source.counters).toMatchObject({ originated: 45, forwarded: 45 });
    expect(router.counters.forwarded).toBe(45);
    expect(links.s.stats.batchedDatagrams).toBe(45);
  });

  it('meets a group whose first packet is not forwarded packet by packet (no route: each dropped)', async () => {
    const { source } = await path();
    const nowhere = Dag.chain(Identity.generate().xid(XidType.HID), Xid.random(XidType.SID));
    source.routes.remove(XidType.HID, undefined);
    source.originateAlike(burst(source, nowhere, 5, 1400), []);
    expect(source.counters.dropped.unreachable).toBe(5);
    expect(source.counters.forwarded).toBe(0);
  });

  it('delivers a run to the handler at its sink, looked up again once it unbinds mid-run', async () => {
    const { source, sink, links } = await path();
    const sid = Xid.random(XidType.SID);
    const got: number[] = [];
    const unbind = sink.bind(sid, (packet, arrival) => {
      got.push(packet.readUInt32BE(arrival.payloadOffset + 1));
      if (got.length === 5) unbind();
    });
    for (const p of burst(source, Dag.chain(sink.hid, sid), 40, links.s.mtu)) source.originate(p);
    await expect.poll(() => sink.counters.received, { timeout: 10_000 }).toBe(40);
    expect(links.d.stats.groRuns).toBeGreaterThan(0);
    expect(got).toEqual([0, 1, 2, 3, 4]);
    expect(sink.counters.delivered).toBe(5);
    expect(sink.counters.dropped['no-listener']).toBe(35);
  });
});
