import { createHash, randomBytes } from 'node:crypto';
import fc from 'fast-check';
import { afterEach, describe, expect, it } from 'vitest';
import { encodeXip, NextHeader } from '../shared/xip-header.js';
import { Xid, XidType } from '../shared/xid.js';
import { waitFor } from '../test/support/wait.js';
import { mutation, serviceMessages, xipPacket } from '../test/support/xip-arbitraries.js';
import { datagramData } from './datagram.js';
import { DropReason } from './node.js';
import { InProcessNetwork, INTER_AD } from './topology.js';
import { ping } from './xping.js';

let network: InProcessNetwork | undefined;
afterEach(async () => {
  await network?.stop();
  network = undefined;
});

/** Waits (without sleeping a fixed time) until the memory segments have delivered what is queued. */
async function settle(): Promise<void> {
  for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
}

describe('XiaNode.receive under fuzzed input from links', () => {
  it('takes 12,000 random and mutated packets without a throw, then still forwards and answers', async () => {
    network = new InProcessNetwork(INTER_AD, { beaconIntervalMs: 100, helloIntervalMs: 1000 });
    await network.start();
    await network.ready();
    const net = network;
    const b = net.stack('B');
    const dgramSid = Xid.random(XidType.SID);
    const streamSid = Xid.random(XidType.SID);
    const received: string[] = [];
    b.node.bind(dgramSid, (packet, arrival) => {
      const data = datagramData(packet, arrival);
      if (data) received.push(data.toString());
    });
    const accepted: string[] = [];
    b.streams.listen(streamSid, (connection) => {
      const hash = createHash('sha256');
      connection.on('data', (d: Buffer) => hash.update(d));
      connection.on('end', () => {
        accepted.push(hash.digest('hex'));
        connection.end();
      });
      connection.on('error', () => undefined);
    });
    const cid = net.stack('A').chunks.publish(randomBytes(3000));
    const known = [...net.stacks.values()].flatMap((s) => [s.node.hid, ...(s.node.ad ? [s.node.ad] : [])]);
    known.push(dgramSid, streamSid, cid);
    const services = [b.node.serviceAddress(dgramSid), b.node.serviceAddress(streamSid), net.stack('A').node.serviceAddress(cid)];
    // And what the services behind the transports take, toward both routers' ADs.
    const messages = ['R1', 'R2'].flatMap((r) =>
      serviceMessages({ ad: net.stack(r).node.ad!, routerHid: net.stack(r).node.hid, chunks: [services[2]!], migration: [services[1]!] }),
    );
    const targets = [
      { node: net.stack('R1').node, port: 0 },
      { node: net.stack('R1').node, port: 2 },
      { node: net.stack('R2').node, port: 1 },
      { node: b.node, port: 0 },
      { node: net.stack('C').node, port: 0 },
    ];
    const from = net.link('C').address!;
    let fed = 0;
    await fc.assert(
      fc.asyncProperty(xipPacket(known, services, messages), mutation, fc.nat(targets.length - 1), async (packet, mutate, which) => {
        const target = targets[which]!;
        target.node.receive(mutate(packet), target.port, from);
        if (++fed % 250 === 0) await settle();
      }),
      { numRuns: 12_000 },
    );
    await settle();
    expect(fed).toBeGreaterThanOrEqual(12_000);
    for (const stack of net.stacks.values()) expect(stack.node.counters.dropped[DropReason.INTERNAL], stack.node.name).toBe(0);
    expect(net.stack('R1').node.counters.dropped[DropReason.MALFORMED]).toBeGreaterThan(0);

    // Still forwarding and answering: xping across both ADs, a datagram, a STREAM.
    const c = net.stack('C');
    const pinged = await ping(c.node, b.node.address(), { count: 3, intervalMs: 5, timeoutMs: 30_000 });
    expect(pinged.received).toBe(3);
    c.node.sendDatagram(b.node.serviceAddress(dgramSid), Buffer.from('after the storm'));
    const connection = await c.streams.connect(b.node.serviceAddress(streamSid));
    const data = randomBytes(200_000);
    connection.end(data);
    connection.resume();
    const digest = createHash('sha256').update(data).digest('hex');
    await waitFor(() => accepted.includes(digest) && received.includes('after the storm'), 20_000, 'the STREAM and the datagram after the fuzz', 5);
  });

  it('counts a packet that makes a handler throw as an internal drop, and goes on', async () => {
    network = new InProcessNetwork(INTER_AD, { beaconIntervalMs: 100, helloIntervalMs: 1000 });
    await network.start();
    await network.ready();
    const b = network.stack('B').node;
    const sid = Xid.random(XidType.SID);
    b.bind(sid, () => {
      throw new TypeError('a bug in a handler');
    });
    const packet = encodeXip({ dst: b.serviceAddress(sid), src: network.stack('C').node.address(), nextHeader: NextHeader.TRANSPORT, payload: Buffer.from([1, 2, 3]) });
    expect(() => b.receive(packet, 0, network!.link('R2').address!)).not.toThrow();
    expect(b.counters.dropped[DropReason.INTERNAL]).toBe(1);
    expect((await ping(network.stack('C').node, b.address(), { count: 1, timeoutMs: 30_000 })).received).toBe(1);
  });
});
