import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { Xid, XidType } from '../../shared/xid.js';
import { InProcessNetwork, INTER_AD } from '../topology.js';
import { NodeClient } from './api-client.js';
import type { ApiLimits } from './api-limits.js';
import { ApiServer } from './api-server.js';
import { LocalNodeApi } from './local-api.js';
import type { GatewayEvent } from './node-api.js';

const dir = mkdtempSync(join(tmpdir(), 'xmig-api-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
let network: InProcessNetwork | undefined;
const closers: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c();
  await network?.stop();
  network = undefined;
});

async function setup(limits: Partial<ApiLimits> = {}): Promise<{ net: InProcessNetwork; client: (name: string) => Promise<NodeClient>; server: (name: string) => ApiServer | undefined }> {
  network = new InProcessNetwork(INTER_AD, { beaconIntervalMs: 50, helloIntervalMs: 200 });
  await network.start();
  await network.ready();
  const net = network;
  const servers = new Map<string, ApiServer>();
  const client = async (name: string): Promise<NodeClient> => {
    let server = servers.get(name);
    if (!server) {
      server = new ApiServer(new LocalNodeApi(net.stack(name)), join(dir, `${name}-${Math.random()}.sock`), { limits });
      await server.start();
      servers.set(name, server);
      const s = server;
      closers.push(() => s.stop());
    }
    const c = await NodeClient.connect(server.path);
    closers.push(() => c.close());
    return c;
  };
  return { net, client, server: (name) => servers.get(name) };
}

describe('application API over a Unix socket', () => {
  it('answers info, and the socket is private to its user', async () => {
    const { net, client } = await setup();
    const c = await client('C');
    const info = await c.info();
    expect(info.hid.equals(net.stack('C').node.hid)).toBe(true);
    expect(info.address.equals(net.stack('C').node.address())).toBe(true);
    expect(statSync((c as unknown as { path: string }).path).mode & 0o777).toBe(0o600);
  });

  it('carries datagrams both ways', async () => {
    const { client } = await setup();
    const b = await (await client('B')).bindDatagram();
    const c = await (await client('C')).bindDatagram();
    const got = new Promise<string>((resolve) => b.onMessage(({ data, from }) => resolve(`${data.toString()} from ${from.sink.typeName}`)));
    await c.send(await b.address(), Buffer.from('hello'));
    expect(await got).toBe('hello from SID');
  });

  it('carries a STREAM connection with backpressure and half-close, 32 MiB intact', async () => {
    const { client } = await setup();
    const server = await (await client('B')).listen();
    server.onConnection((connection) => {
      const hash = createHash('sha256');
      connection.on('data', (d: Buffer) => hash.update(d));
      connection.on('end', () => connection.end(hash.digest('hex')));
    });
    const connection = await (await client('C')).connect(await server.address());
    const sent = createHash('sha256');
    for (let i = 0; i < 32; i++) {
      const block = randomBytes(1 << 20);
      sent.update(block);
      if (!connection.write(block)) await new Promise((r) => connection.once('drain', r));
    }
    connection.end();
    let reply = '';
    for await (const chunk of connection) reply += (chunk as Buffer).toString();
    expect(reply).toBe(sent.digest('hex'));
  });

  it('ends a connection its server refuses at once for the peer at once, not after the attach deadline', async () => {
    // A server that destroys an incoming connection in its listener (a cap, a forbidden
    // source) does so before the connection's data socket has reached the node. The node
    // held that STREAM until its attach deadline, and the peer waited as long (10 s).
    const { client, server } = await setup({ pendingStreamMs: 60_000 });
    const listening = await (await client('B')).listen();
    listening.onConnection((connection) => connection.destroy());
    const connection = await (await client('C')).connect(await listening.address());
    connection.on('error', () => undefined);
    connection.resume();
    // Ended by the node (the peer sees the server's side end, as a TCP server's FIN), or reset.
    await new Promise<void>((resolve) => connection.once('end', resolve).once('close', resolve));
    expect(server('B')!.load.pendingStreams).toBe(0);
  }, 30_000);

  it('pings and reports gateway changes as events', async () => {
    const { net, client } = await setup();
    const c = await client('C');
    const summary = await c.ping(net.stack('B').node.address(), { count: 5, intervalMs: 5 });
    expect(summary.received).toBe(5);
    const vm = await client('VM');
    const changes: GatewayEvent[] = [];
    await vm.on('gateway', (e) => changes.push(e));
    net.move('VM', 'seg-B');
    await expect.poll(() => changes.length).toBeGreaterThan(0);
    expect(changes.map((e) => e.kind)).toEqual(['inter-ad']);
    expect(changes[0]!.ad.equals(net.stack('R2').node.ad!)).toBe(true);
    expect(changes[0]!.previousAd?.equals(net.stack('R1').node.ad!)).toBe(true);
  });

  it('ends a ping of thousands of echoes with its summary and every reply; the node answers on', async () => {
    // A summary's replies as JSON grow past the 64 KiB a frame's header holds after about
    // 1,300 echoes (xping at 10 ms for 13 s); sent in the reply's header they killed the node.
    const { net, client } = await setup();
    const c = await client('C');
    const results: number[] = [];
    const summary = await c.ping(net.stack('B').node.address(), { count: 2000, intervalMs: 1, onResult: (r) => results.push(r.seq) });
    expect(summary.sent).toBe(2000);
    expect(summary.replies.map((r) => r.seq)).toEqual([...Array(2000).keys()]);
    expect(results).toHaveLength(2000);
    expect((await c.info()).hid.equals(net.stack('C').node.hid)).toBe(true);
  }, 120_000);

  it('refuses a data socket with a wrong token, and reports unknown operations', async () => {
    const { client } = await setup();
    const c = await client('C');
    await expect((c as unknown as { request: (h: object) => Promise<unknown> }).request({ op: 'frobnicate' })).rejects.toThrow(/unknown API operation/);
    const sid = Xid.random(XidType.SID);
    const s = await c.bindDatagram(sid);
    expect(s.sid.equals(sid)).toBe(true);
  });
});
