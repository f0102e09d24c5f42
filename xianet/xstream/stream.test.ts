import { createHash, randomBytes } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { Xid, XidType } from '../../shared/xid.js';
import { seededRandom } from '../memory-link.js';
import { InProcessNetwork, INTER_AD } from '../topology.js';
import { StreamError, type StreamConnection } from './stream-connection.js';
import { StreamTransport } from './stream-transport.js';
import { Dag } from '../../shared/dag.js';
import { encodeXip, NextHeader, xipHeaderLengthOf } from '../../shared/xip-header.js';
import { waitFor } from '../../test/support/wait.js';
import { TransportType } from '../transport-header.js';

let network: InProcessNetwork | undefined;
const transports: StreamTransport[] = [];
afterEach(async () => {
  for (const t of transports.splice(0)) t.close();
  await network?.stop();
  network = undefined;
});

async function build(): Promise<InProcessNetwork> {
  network = new InProcessNetwork(INTER_AD, { beaconIntervalMs: 50, helloIntervalMs: 200 });
  await network.start();
  await network.ready();
  return network;
}

function transportOn(net: InProcessNetwork, name: string, options?: ConstructorParameters<typeof StreamTransport>[1]): StreamTransport {
  const t = new StreamTransport(net.stack(name).node, options);
  transports.push(t);
  return t;
}

/** Deterministic pseudo-random bytes, so both ends can hash what should arrive. */
function* blocks(total: number, size = 1 << 20): Generator<Buffer> {
  const random = seededRandom(42);
  for (let sent = 0; sent < total; sent += size) {
    const block = Buffer.allocUnsafe(Math.min(size, total - sent));
    for (let i = 0; i < block.length; i += 4) block.writeUInt32LE((random() * 2 ** 32) >>> 0, i);
    yield block;
  }
}

async function writeAll(connection: StreamConnection, total: number, onBlock?: (sent: number) => Promise<void> | void): Promise<string> {
  const hash = createHash('sha256');
  let sent = 0;
  for (const block of blocks(total)) {
    hash.update(block);
    if (!connection.write(block)) await new Promise((r) => connection.once('drain', r));
    sent += block.length;
    await onBlock?.(sent);
  }
  connection.end();
  return hash.digest('hex');
}

/** A server that hashes everything it receives, and reports errors. */
function hashingServer(transport: StreamTransport, sid: Xid): Promise<{ digest: string; bytes: number; error?: Error }> {
  return new Promise((resolve) => {
    transport.listen(sid, (connection) => {
      const hash = createHash('sha256');
      let bytes = 0;
      connection.on('data', (d: Buffer) => {
        hash.update(d);
        bytes += d.length;
      });
      connection.on('end', () => {
        connection.end();
        resolve({ digest: hash.digest('hex'), bytes });
      });
      connection.on('error', (error) => resolve({ digest: '', bytes, error }));
    });
  });
}

describe('STREAM', () => {
  it('delivers 100 MiB intact and in order under 5 % loss and reordering', async () => {
    const net = await build();
    for (const s of ['seg-C', 'r1-r2', 'seg-B']) net.segment(s).impairments = { lossRate: 0.05, reorderRate: 0.05 };
    const sid = Xid.random(XidType.SID);
    const received = hashingServer(transportOn(net, 'B'), sid);
    const connection = await transportOn(net, 'C').connect(net.stack('B').node.serviceAddress(sid));
    const digest = await writeAll(connection, 100 * 1024 * 1024);
    const result = await received;
    expect(result.error).toBeUndefined();
    expect(result.bytes).toBe(100 * 1024 * 1024);
    expect(result.digest).toBe(digest);
    expect(connection.stats.lostPackets).toBeGreaterThan(0);
  }, 60_000);

  it('keeps the queue short at a slow bottleneck with a deep buffer: slow start ends on a rising round trip, not at the first loss', async () => {
    const net = await build();
    // 50 Mbit/s with 4 s of queue (25 MB): a 16 MiB transfer never fills it, so without the
    // exit slow start only stops at the receiver's window, 8 MiB in flight, a round trip of
    // 1.3 s (1.08 s measured); with it, 0.35 s (the rest is congestion avoidance's growth).
    net.segment('r1-r2').impairments = { rateMbps: 50, queueMs: 4000, delayMs: 5 };
    const sid = Xid.random(XidType.SID);
    const received = hashingServer(transportOn(net, 'B'), sid);
    const connection = await transportOn(net, 'C').connect(net.stack('B').node.serviceAddress(sid));
    let maxSrtt = 0;
    const digest = await writeAll(connection, 16 * 1024 * 1024, () => {
      maxSrtt = Math.max(maxSrtt, connection.state.srtt);
    });
    const result = await received;
    expect(result.error).toBeUndefined();
    expect(result.digest).toBe(digest);
    expect(connection.stats.lostPackets).toBe(0);
    expect(maxSrtt).toBeGreaterThan(0);
    expect(maxSrtt).toBeLessThan(700);
  }, 60_000);

  it('survives a 3 s outage without an error and resumes at speed', async () => {
    const net = await build();
    const sid = Xid.random(XidType.SID);
    const received = hashingServer(transportOn(net, 'B'), sid);
    const connection = await transportOn(net, 'C').connect(net.stack('B').node.serviceAddress(sid));
    const total = 64 * 1024 * 1024;
    let windowBefore = 0;
    let windowAfter = 0;
    let outageAt: number | undefined;
    const digest = await writeAll(connection, total, async (sent) => {
      if (outageAt !== undefined && sent === outageAt + 2 * 1024 * 1024) windowAfter = connection.state.cwnd;
      // The outage comes once the window has grown past 4 MiB (from 16 MiB on; at 48 MiB at the
      // latest): on a starved CPU, drops of its own had kept it below that at a fixed 16 MiB.
      const grown = connection.state.cwnd > 4 * 1024 * 1024;
      if (outageAt === undefined && sent >= 16 * 1024 * 1024 && (grown || sent >= 48 * 1024 * 1024)) {
        outageAt = sent;
        windowBefore = connection.state.cwnd;
        net.segment('r1-r2').impairments = { down: true };
        await new Promise((r) => setTimeout(r, 3000));
        net.segment('r1-r2').impairments = {};
      }
    });
    const result = await received;
    expect(result.error).toBeUndefined();
    expect(result.digest).toBe(digest);
    // Resuming at speed: right after the outage (2 MiB later) the congestion window has
    // lost at most one halving to it; it did not restart from a few packets (which,
    // with 64 KiB packets, could not have regrown past 2 MiB by then).
    expect(windowBefore).toBeGreaterThan(4 * 1024 * 1024);
    expect(windowAfter).toBeGreaterThanOrEqual(windowBefore / 2);
    expect(connection.stats.probes).toBeGreaterThan(0);
  }, 30_000);

  it('cuts its backoff short when the outage visibly ends: the peer is heard, or probeAll says the node is back', async () => {
    const net = await build();
    const sid = Xid.random(XidType.SID);
    const server = transportOn(net, 'B');
    const accepted = new Promise<StreamConnection>((resolve) => server.listen(sid, resolve));
    const client = transportOn(net, 'C');
    const connection = await client.connect(net.stack('B').node.serviceAddress(sid));
    connection.write('hello');
    const peer = await accepted;
    const arrival = (): Promise<number> => new Promise((resolve) => peer.once('data', () => resolve(performance.now())));
    await arrival();
    while (connection.state.bytesInFlight > 0) await new Promise((r) => setTimeout(r, 5)); // 'hello' acknowledged
    // STREAM packets only are lost (the routers keep their routes), long enough for the
    // client's probes to back off to hundreds of ms apart.
    const segment = net.segment('r1-r2');
    const outage = async (): Promise<void> => {
      segment.impairments = { drop: (packet) => packet[xipHeaderLengthOf(packet)] === TransportType.STREAM };
      connection.write('lost in the outage');
      await new Promise((r) => setTimeout(r, 1200));
      segment.impairments = {};
    };

    await outage();
    let arrived = arrival();
    // The server talks first. The client probes in the same turn as it hears it, not
    // when its backoff ends: checked right after that turn, before any timer can run.
    const probedOnHearing = new Promise<boolean>((resolve) =>
      connection.once('data', () => {
        const probes = connection.stats.probes;
        queueMicrotask(() => resolve(connection.stats.probes === probes + 1));
      }),
    );
    let since = performance.now();
    peer.write('still there?');
    expect(await probedOnHearing).toBe(true);
    expect((await arrived) - since).toBeLessThan(200);

    await outage();
    arrived = arrival();
    since = performance.now();
    expect(client.probeAll()).toBe(1);
    expect((await arrived) - since).toBeLessThan(200);
  }, 15_000);

  it('survives the peer moving to another AD: it follows the new address', async () => {
    const net = await build();
    const sid = Xid.random(XidType.SID);
    const server = transportOn(net, 'VM');
    const received = hashingServer(server, sid);
    const vm = net.stack('VM');
    const oldAddress = vm.node.serviceAddress(sid);
    const connection = await transportOn(net, 'C').connect(oldAddress);
    const paths: string[] = [];
    connection.on('path', (dag) => paths.push(dag.toString()));
    const digest = await writeAll(connection, 24 * 1024 * 1024, async (sent) => {
      if (sent === 8 * 1024 * 1024) {
        net.move('VM', 'seg-B');
        await new Promise((r) => setTimeout(r, 300));
      }
    });
    const result = await received;
    expect(result.error).toBeUndefined();
    expect(result.digest).toBe(digest);
    expect(vm.node.ad?.equals(net.stack('R2').node.ad!)).toBe(true);
    expect(paths).toEqual([vm.node.serviceAddress(sid).toString()]);
  }, 30_000);

  it('survives the peer moving when pinned to the old address and the routers redirect it', async () => {
    const net = await build();
    const sid = Xid.random(XidType.SID);
    const received = hashingServer(transportOn(net, 'VM'), sid);
    const vm = net.stack('VM').node;
    const connection = await transportOn(net, 'C').connect(vm.serviceAddress(sid), { followPeerAddress: false });
    const digest = await writeAll(connection, 16 * 1024 * 1024, async (sent) => {
      if (sent === 4 * 1024 * 1024) {
        net.move('VM', 'seg-B');
        // What the router plugin does: R1 sends the VM's HID toward R2.
        const r1 = net.stack('R1').node;
        const r2 = net.stack('R2').node;
        const toR2 = r1.routes.route(r2.ad!)!;
        r1.routes.set(XidType.HID, { xid: vm.hid, port: toR2.port, nextHop: r2.hid, flags: 0, origin: 'mobility' });
      }
    });
    const result = await received;
    expect(result.digest).toBe(digest);
    expect(connection.stats.pathChanges).toBe(0);
    expect(connection.remote.toString()).toContain(net.stack('R1').node.ad!.toString().slice(3));
  }, 30_000);

  it('fails with a timeout when the outage outlasts outageTimeoutMs', async () => {
    const net = await build();
    const sid = Xid.random(XidType.SID);
    void hashingServer(transportOn(net, 'B'), sid);
    const connection = await transportOn(net, 'C').connect(net.stack('B').node.serviceAddress(sid), { outageTimeoutMs: 600 });
    net.segment('r1-r2').impairments = { down: true };
    const error = await new Promise<Error>((resolve) => {
      connection.on('error', resolve);
      connection.write(Buffer.alloc(100_000));
    });
    expect(error).toBeInstanceOf(StreamError);
    expect((error as StreamError).reason).toBe('timeout');
    expect(connection.timerArmed).toBe(false);
  });

  it('half-closes: one side ends, the other still writes back', async () => {
    const net = await build();
    const sid = Xid.random(XidType.SID);
    transportOn(net, 'B').listen(sid, (connection) => {
      const parts: Buffer[] = [];
      connection.on('data', (d: Buffer) => parts.push(d));
      connection.on('end', () => connection.end(Buffer.concat(parts).toString().toUpperCase()));
    });
    const client = transportOn(net, 'C');
    const connection = await client.connect(net.stack('B').node.serviceAddress(sid));
    connection.end('hello, half-closed world');
    const reply: Buffer[] = [];
    for await (const chunk of connection) reply.push(chunk as Buffer);
    expect(Buffer.concat(reply).toString()).toBe('HELLO, HALF-CLOSED WORLD');
    if (!connection.closed) await new Promise((r) => connection.once('close', r));
    expect(connection.timerArmed).toBe(false);
    expect(client.connectionCount).toBe(0);
  });

  it('reports a reset from the peer, and refuses a connection to a SID nobody listens on', async () => {
    const net = await build();
    const sid = Xid.random(XidType.SID);
    transportOn(net, 'B').listen(sid, (connection) => setTimeout(() => connection.destroy(), 20));
    const client = transportOn(net, 'C');
    const connection = await client.connect(net.stack('B').node.serviceAddress(sid));
    const error = await new Promise<Error>((resolve) => connection.on('error', resolve));
    expect((error as StreamError).reason).toBe('reset');
    const refused = await client.connect(net.stack('B').node.serviceAddress(Xid.random(XidType.SID))).catch((e: unknown) => e);
    expect((refused as StreamError).reason).toBe('refused');
    // B itself answers (PORT, a hard error), not a router's HOST, which a connect outlasts.
    expect((refused as StreamError).message).toMatch(/XCMP code 3/);
  });

  it('outlasts "host unreachable" during connect (a route that lapsed comes back), as TCP does (RFC 1122 4.2.3.9)', async () => {
    const net = await build();
    const sid = Xid.random(XidType.SID);
    transportOn(net, 'B').listen(sid, (connection) => connection.end('hello'));
    const b = net.stack('B').node;
    const routes = net.stack('R2').node.routes;
    const route = routes.route(b.hid)!;
    expect(route).toBeDefined();
    // R2 forgets B (as when a starved host misses its refresh): every SYN meets XCMP HOST.
    routes.remove(XidType.HID, b.hid);
    const client = transportOn(net, 'C');
    const pending = client.connect(b.serviceAddress(sid), { connectTimeoutMs: 30_000 });
    await waitFor(() => client.stats.softErrors > 0, 20_000, 'an XCMP host unreachable from R2');
    routes.set(XidType.HID, route);
    const connection = await pending;
    const reply: Buffer[] = [];
    for await (const chunk of connection) reply.push(chunk as Buffer);
    expect(Buffer.concat(reply).toString()).toBe('hello');
  });

  it('reports the last soft error when the connect deadline passes with the host still unreachable', async () => {
    const net = await build();
    const unknown = Dag.chain(net.stack('R2').node.ad!, Xid.random(XidType.HID), Xid.random(XidType.SID));
    const client = transportOn(net, 'C');
    const error = (await client.connect(unknown, { connectTimeoutMs: 1500 }).catch((e: unknown) => e)) as StreamError;
    expect(error.reason).toBe('timeout');
    expect(error.message).toMatch(/last error: .* unreachable \(XCMP code 1\)/);
    expect(client.stats.softErrors).toBeGreaterThan(0);
    expect(client.connectionCount).toBe(0);
  });

  it('lets a new listener take a SID at once while the old one\'s connections linger, as SO_REUSEADDR does', async () => {
    const net = await build();
    const sid = Xid.random(XidType.SID);
    const server = transportOn(net, 'B');
    const echo = (connection: StreamConnection): void => void connection.pipe(connection);
    const first = server.listen(sid, echo);
    const client = transportOn(net, 'C');
    const before = await client.connect(net.stack('B').node.serviceAddress(sid));
    before.end('one');
    for await (const _ of before) void _;
    // The old listener goes; its connection lingers (TIME_WAIT-like) and keeps the SID bound.
    first.close();
    const second = server.listen(sid, echo);
    // A second listener while one is active is still refused.
    expect(() => server.listen(sid, echo)).toThrow(/already bound/);
    first.close(); // closing the old handle again must not take the SID from the new listener
    const after = await client.connect(net.stack('B').node.serviceAddress(sid));
    after.end('two');
    const reply: Buffer[] = [];
    for await (const chunk of after) reply.push(chunk as Buffer);
    expect(Buffer.concat(reply).toString()).toBe('two');
    second.close();
  });

  it('applies backpressure: a receiver that does not read closes the window and the writer stalls', async () => {
    const net = await build();
    const sid = Xid.random(XidType.SID);
    let serverSide: StreamConnection | undefined;
    let received = 0;
    transportOn(net, 'B', { receiveWindow: 1 << 20 }).listen(sid, (connection) => {
      serverSide = connection;
      connection.pause();
    });
    const connection = await transportOn(net, 'C', { sendBuffer: 1 << 20 }).connect(net.stack('B').node.serviceAddress(sid));
    // Write, honouring backpressure, until no 'drain' comes for 300 ms: the writer is stalled.
    let written = 0;
    for (;;) {
      if (connection.write(Buffer.alloc(64 * 1024))) {
        written += 64 * 1024;
        continue;
      }
      written += 64 * 1024;
      const drained = await Promise.race([
        new Promise((r) => connection.once('drain', () => r(true))),
        new Promise((r) => setTimeout(() => r(false), 300)),
      ]);
      if (!drained) break;
    }
    // Bounded: the receiver holds its Readable buffer plus one window (1 MiB each), the
    // sender its send buffer plus Writable's own (1 MiB each).
    expect(written).toBeLessThanOrEqual(4 * (1 << 20) + 2 * 64 * 1024);
    expect(connection.state.ackedPrefix).toBeLessThanOrEqual(2 * (1 << 20));
    serverSide!.on('data', (d: Buffer) => (received += d.length));
    serverSide!.resume();
    await new Promise((r) => connection.once('drain', r));
    connection.end();
    await new Promise((r) => serverSide!.once('end', r));
    expect(received).toBe(written);
  });
});

describe('STREAM segments for no known connection', () => {
  /** A STREAM packet to `dst` claiming to come from `src`, with one frame after the header. */
  function forged(dst: Dag, src: Dag, frame: Buffer): Buffer {
    const segment = Buffer.alloc(15);
    segment[0] = 1;
    randomBytes(8).copy(segment, 1);
    return encodeXip({ dst, src, nextHeader: NextHeader.TRANSPORT, payload: Buffer.concat([Buffer.from([TransportType.STREAM]), segment, frame]) });
  }

  it('answers a segment whose forged source is the node itself once, not with a loop of RESETs', async () => {
    const net = await build();
    const b = net.stack('B');
    const sid = Xid.random(XidType.SID);
    b.streams.listen(sid, () => undefined);
    // A PING for an unknown connection, "from" the listening SID itself: the RESET goes to
    // B's own SID, which must not answer it (it used to, recursively, until the stack overflowed).
    const packet = forged(b.node.serviceAddress(sid), b.node.serviceAddress(sid), Buffer.from([0x01]));
    expect(() => b.node.receive(packet, 0, net.link('R2').address!)).not.toThrow();
    expect(b.node.counters.dropped.internal ?? 0).toBe(0);
    expect(b.streams.stats.resetsSent).toBe(1);
  });

  it('never answers a RESET or an ACK with a RESET: two ends cannot bounce them forever', async () => {
    const net = await build();
    const b = net.stack('B');
    const c = net.stack('C');
    const sidB = Xid.random(XidType.SID);
    const sidC = Xid.random(XidType.SID);
    b.streams.listen(sidB, () => undefined);
    c.streams.listen(sidC, () => undefined);
    // B gets a PING "from" C's listening SID: B resets, C must not reset the reset.
    b.node.receive(forged(b.node.serviceAddress(sidB), c.node.serviceAddress(sidC), Buffer.from([0x01])), 0, net.link('R2').address!);
    b.node.receive(forged(b.node.serviceAddress(sidB), c.node.serviceAddress(sidC), Buffer.from([0x02, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1])), 0, net.link('R2').address!);
    await waitFor(() => c.streams.stats.unknown > 0 || c.streams.stats.resetsSent > 0, 5000, 'the RESET to reach C', 5);
    for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
    expect(b.streams.stats.resetsSent).toBe(1);
    expect(c.streams.stats.resetsSent).toBe(0);
  });
});
