/**
 * The application API against malformed, hostile and greedy clients: every bad request
 * gets a typed answer naming its field, every bound is refused and counted, and the
 * node goes on serving good clients throughout.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import type { Dag } from '../../shared/dag.js';
import { Xid, XidType } from '../../shared/xid.js';
import { RawApiClient } from '../../test/support/raw-api-client.js';
import { waitFor } from '../../test/support/wait.js';
import { InProcessNetwork, INTER_AD } from '../topology.js';
import { NodeClient } from './api-client.js';
import type { ApiLimits } from './api-limits.js';
import { encodeFrame } from './api-frames.js';
import { ApiServer } from './api-server.js';
import { LocalNodeApi } from './local-api.js';

const dir = mkdtempSync(join(tmpdir(), 'xmig-api-hard-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function setup(limits: Partial<ApiLimits> = {}): Promise<{ net: InProcessNetwork; server: ApiServer; raw: (options?: { read?: boolean }) => Promise<RawApiClient>; good: () => Promise<NodeClient> }> {
  // Neighbours live 3.5 hello intervals: long enough that a loop kept busy by a flood does not lose them.
  const net = new InProcessNetwork(INTER_AD, { beaconIntervalMs: 100, helloIntervalMs: 1000, metrics: true });
  await net.start();
  await net.ready();
  cleanups.push(() => net.stop());
  const c = net.stack('C');
  const server = new ApiServer(new LocalNodeApi(c), join(dir, `${Math.random()}.sock`), { refusals: c.node.refusals, limits });
  await server.start();
  cleanups.push(() => server.stop());
  const raw = async (options?: { read?: boolean }): Promise<RawApiClient> => {
    const client = await RawApiClient.connect(server.path, options);
    cleanups.push(() => client.close());
    return client;
  };
  const good = async (): Promise<NodeClient> => {
    const client = await NodeClient.connect(server.path);
    cleanups.push(() => client.close());
    return client;
  };
  return { net, server, raw, good };
}

const dagWire = (dag: Dag): { $dag: string } => ({ $dag: dag.toDagString() });
const errorOf = (reply: Record<string, unknown>): { code: string; message: string; field?: string } => reply['error'] as { code: string; message: string; field?: string };

describe('API requests are checked at the boundary', () => {
  it('answers connect with a malformed dst by a typed error naming the field, and stays up (it crashed 7/7)', async () => {
    const { net, raw, good } = await setup();
    const client = await raw();
    const bad: unknown[] = [{}, null, { $xid: `HID:${'0'.repeat(40)}` }, 'RE AD:00', [1, 2], 42, { $dag: 'not a dag' }, { $dag: 7 }, undefined];
    let id = 1;
    for (const dst of bad) {
      const reply = await client.ask({ op: 'connect', id: id++, dst });
      expect(reply['ok']).toBe(false);
      expect(errorOf(reply).code).toBe('ERR_BAD_REQUEST');
      expect(errorOf(reply).field).toBe('dst');
      expect(errorOf(reply).message).toMatch(/connect: field "dst"/);
    }
    // A timeout out of range, too, before anything starts:
    const reply = await client.ask({ op: 'connect', id: id++, dst: dagWire(net.stack('B').node.address()), connectTimeoutMs: 1e12 });
    expect(errorOf(reply).field).toBe('connectTimeoutMs');
    expect((await (await good()).info()).name).toBe('C');
  });

  it('answers ping with a bad dst or size by a typed error; no ping is left running (it crashed 4/4)', async () => {
    const { net, raw, good } = await setup();
    const client = await raw();
    const dst = dagWire(net.stack('B').node.address());
    const cases: Array<[Record<string, unknown>, string]> = [
      [{ dst: {} }, 'dst'],
      [{ dst: null }, 'dst'],
      [{ dst, size: 'x' }, 'size'],
      [{ dst, size: 70_000 }, 'size'],
      [{ dst, size: 1e9 }, 'size'],
      [{ dst, intervalMs: 0 }, 'intervalMs'],
      [{ dst, intervalMs: 'fast' }, 'intervalMs'],
      [{ dst, count: -1 }, 'count'],
      [{ dst, count: 1.5 }, 'count'],
      [{ dst, timeoutMs: Infinity }, 'timeoutMs'],
    ];
    let id = 1;
    for (const [fields, field] of cases) {
      const reply = await client.ask({ op: 'ping', id: id++, count: 3, intervalMs: 1, ...fields });
      expect(reply['ok'], JSON.stringify(fields)).toBe(false);
      expect(errorOf(reply).code).toBe('ERR_BAD_REQUEST');
      expect(errorOf(reply).field).toBe(field);
    }
    // Within the schema but beyond what the node's smallest link carries: refused by xping, counted.
    const mtu = net.stack('C').node.mtu;
    const tooBig = await client.ask({ op: 'ping', id: id++, dst, count: 3, intervalMs: 1, size: Math.min(65_535, mtu) });
    expect(errorOf(tooBig).code).toBe('ERR_BAD_REQUEST');
    expect(errorOf(tooBig).message).toMatch(/smallest link/);
    expect(net.stack('C').node.refusals.count('ping', 'malformed')).toBe(1);
    // No ping-result event ever follows a refused ping (its timer used to keep firing).
    const ok = await client.ask({ op: 'ping', id: id++, dst, count: 2, intervalMs: 1 }, 15_000);
    expect(ok['ok']).toBe(true);
    expect(new Set(client.frames.filter((f) => f.header['event'] === 'ping-result').map((f) => f.header['pingId']))).toEqual(new Set([id - 1]));
    expect((await (await good()).ping(net.stack('B').node.address(), { count: 2, intervalMs: 5, timeoutMs: 30_000 })).received).toBe(2);
  });

  it('answers every op with a bad field, an unknown op or a bad id as a bad request', async () => {
    const { raw } = await setup();
    const client = await raw();
    const cases: Array<[Record<string, unknown>, string]> = [
      [{ op: 'frobnicate' }, 'op'],
      [{ op: 42 }, 'op'],
      [{ op: 'subscribe', event: 'everything' }, 'event'],
      [{ op: 'bind', sid: { $xid: `HID:${'1'.repeat(40)}` } }, 'sid'],
      [{ op: 'send', sid: 'SID:x', dst: {} }, 'sid'],
      [{ op: 'unlisten' }, 'sid'],
      [{ op: 'chunk-put', sizes: [1, -1] }, 'sizes.1'],
      [{ op: 'chunk-put', sizes: [1, 2] }, 'sizes'],
      [{ op: 'chunk-drop', cids: [{ $xid: 'CID:00' }] }, 'cids.0'],
      [{ op: 'chunk-get', cid: { $xid: `CID:${'2'.repeat(40)}` }, source: [] }, 'source'],
      [{ op: 'cancel', pingId: 'all' }, 'pingId'],
    ];
    let id = 1;
    for (const [header, field] of cases) {
      const reply = await client.ask({ ...header, id: id++ });
      expect(reply['ok'], JSON.stringify(header)).toBe(false);
      expect(errorOf(reply).code).toBe('ERR_BAD_REQUEST');
      expect(errorOf(reply).field, JSON.stringify(header)).toBe(field);
    }
    // No usable id: nobody to answer, but counted, and the connection lives on.
    client.send({ op: 'info', id: 'one' });
    client.send({ op: 'info', id: -5 });
    expect((await client.ask({ op: 'info', id: 999 }))['ok']).toBe(true);
  });
});

describe('API bounds', () => {
  it('holds 16 half-sent 16 MiB frames within its partial-frame budget and times them out, while a good client pings and streams', async () => {
    const { net, server, raw, good } = await setup({ frameIdleMs: 1500 });
    const refusals = net.stack('C').node.refusals;
    const half = Buffer.alloc(8 * 1024 * 1024, 0x61);
    const attackers: RawApiClient[] = [];
    for (let i = 0; i < 16; i++) {
      const client = await raw();
      const head = Buffer.alloc(6);
      head.writeUInt32BE(16 * 1024 * 1024, 0);
      head.writeUInt16BE(2, 4);
      client.write(Buffer.concat([head, Buffer.from('{}'), half]));
      attackers.push(client);
    }
    // The node never holds more than its budget of them, and sheds the stalest to stay there.
    await waitFor(() => refusals.count('api-frame', 'budget') + server.load.partialBytes / half.length >= 15, 30_000, 'the half-sent frames to arrive or be shed', 20);
    expect(server.load.partialBytes).toBeLessThanOrEqual(server.limits.partialBytesTotal);
    const c = await good();
    expect((await c.ping(net.stack('B').node.address(), { count: 3, intervalMs: 5, timeoutMs: 30_000 })).received).toBe(3);
    const sid = Xid.random(XidType.SID);
    const digests: string[] = [];
    net.stack('B').streams.listen(sid, (connection) => {
      const hash = createHash('sha256');
      connection.on('data', (d: Buffer) => hash.update(d));
      connection.on('end', () => {
        digests.push(hash.digest('hex'));
        connection.end();
      });
    });
    const stream = await c.connect(net.stack('B').node.serviceAddress(sid));
    const data = randomBytes(1 << 20);
    stream.end(data);
    stream.resume();
    await waitFor(() => digests.includes(createHash('sha256').update(data).digest('hex')), 20_000, 'the good STREAM', 10);
    // The rest go when their frames stop making progress.
    await waitFor(() => attackers.every((a) => a.closed), 30_000, 'every half-sent frame to time out or be shed', 20);
    expect(server.load.partialBytes).toBe(0);
    expect(refusals.count('api-frame', 'timeout') + refusals.count('api-frame', 'budget')).toBe(16);
  }, 60_000);

  it('refuses a frame longer than the cap, one that stalls, and one that never completes', async () => {
    const { net, raw } = await setup({ maxFrameBytes: 1024, frameIdleMs: 200, frameCompletionMs: 600 });
    const refusals = net.stack('C').node.refusals;
    const big = await raw();
    big.write(Buffer.from([0, 0, 0x10, 0, 0, 2]));
    await big.until(() => big.closed, 10_000, 'the oversized frame to be refused');
    expect(big.frames.map((f) => f.header['event'])).toEqual(['refused']);
    expect(refusals.count('api-frame', 'cap')).toBe(1);
    const stalled = await raw();
    stalled.write(Buffer.from([0, 0, 0, 100, 0, 2]));
    await stalled.until(() => stalled.closed, 10_000, 'the stalled frame to time out');
    const dripping = await raw();
    dripping.write(Buffer.from([0, 0, 3, 0, 0, 2]));
    const drip = setInterval(() => dripping.write(Buffer.from('x')), 20);
    cleanups.push(() => clearInterval(drip));
    await dripping.until(() => dripping.closed, 10_000, 'the dripping frame to miss its completion deadline');
    expect(refusals.count('api-frame', 'timeout')).toBe(2);
  });

  it('caps connections, and takes new ones when some go', async () => {
    const { net, server, raw, good } = await setup({ maxConnections: 4 });
    const held = await Promise.all([raw(), raw(), raw(), raw()]);
    await waitFor(() => server.load.connections === 4, 10_000, 'four connections', 5);
    const extra = await raw();
    await extra.until(() => extra.closed, 10_000, 'the fifth connection to be refused');
    expect(net.stack('C').node.refusals.count('api-connection', 'cap')).toBe(1);
    held[0]!.close();
    await waitFor(() => server.load.connections === 3, 10_000, 'the first connection to go', 5);
    expect((await (await good()).info()).name).toBe('C');
  });

  it('bounds what it queues toward a client that does not read: events shed, then the client cut off', async () => {
    const { net, raw } = await setup({ writeSoftBytes: 16 * 1024, writeHardBytes: 64 * 1024, maxInFlightPerSession: 512 });
    const refusals = net.stack('C').node.refusals;
    // A ping whose results nobody reads: once 16 KiB wait in the socket, results are dropped.
    const deaf = await raw({ read: false });
    deaf.send({ op: 'ping', id: 1, dst: dagWire(net.stack('B').node.address()), count: 0, intervalMs: 1 });
    await waitFor(() => refusals.count('api-event', 'budget') > 0, 30_000, 'ping results to be shed', 10);
    // Many requests at once whose replies nobody reads: more than 64 KiB of them is too much.
    const greedy = await raw({ read: false });
    const frames = Buffer.concat(Array.from({ length: 400 }, (_, i) => encodeFrame({ op: 'info', id: i + 1 })));
    greedy.write(frames);
    await waitFor(() => refusals.count('api-write', 'budget') > 0, 30_000, 'the greedy client to be cut off', 10);
    deaf.close();
  });

  it('bounds STREAM connections waiting for their data socket, and drops those never attached', async () => {
    const { net, raw } = await setup({ maxPendingStreams: 2, pendingStreamMs: 300 });
    const refusals = net.stack('C').node.refusals;
    const b = net.stack('B');
    const sid = Xid.random(XidType.SID);
    b.streams.listen(sid, (connection) => connection.on('error', () => undefined));
    const client = await raw();
    const dst = dagWire(b.node.serviceAddress(sid));
    const answers = [];
    for (let id = 1; id <= 3; id++) answers.push(await client.ask({ op: 'connect', id, dst }, 20_000));
    expect(answers.map((a) => a['ok'])).toEqual([true, true, false]);
    expect(errorOf(answers[2]!).code).toBe('ERR_REFUSED');
    expect(refusals.count('api-stream-token', 'cap')).toBe(1);
    await waitFor(() => refusals.count('api-stream-token', 'timeout') === 2, 20_000, 'the unattached connections to be dropped', 10);
    // A wrong token is refused and counted.
    const thief = await raw();
    thief.send({ op: 'attach', streamId: answers[0]!['streamId'], token: 'guess' });
    await thief.until(() => thief.closed, 10_000, 'the wrong token to be refused');
    expect(refusals.count('api-stream-token', 'forbidden')).toBe(1);
    // ... and told why before the close, as any refused client is (it was a bare close).
    expect(thief.frames.find((f) => f.header['event'] === 'refused')?.header['message']).toMatch(/^attach: no STREAM connection waits for that streamId and token/);
  });

  it('exports every refusal on the node registry as xianet_refusals_total, at 0 from the start', async () => {
    const { net, raw } = await setup({ maxConnections: 1 });
    const registry = net.registries.get('C')!;
    const before = await registry.getSingleMetricAsString('xianet_refusals_total');
    expect(before).toMatch(/xianet_refusals_total\{node="C",resource="api-connection",reason="cap"\} 0/);
    expect(before).toMatch(/resource="stream-handshake",reason="cap"\} 0/);
    await raw();
    const extra = await raw();
    await extra.until(() => extra.closed, 10_000, 'the second connection to be refused');
    expect(await registry.getSingleMetricAsString('xianet_refusals_total')).toMatch(/resource="api-connection",reason="cap"\} 1/);
  });

  it('carries a connect\'s AbortSignal to the node: the handshake stops there too', async () => {
    const { net, good } = await setup();
    const c = await good();
    // B listens, but nothing reaches it: the handshake would wait for its 10 s timeout.
    const sid = Xid.random(XidType.SID);
    net.stack('B').streams.listen(sid, () => undefined);
    net.segment('seg-B').impairments = { down: true };
    const controller = new AbortController();
    const connecting = c.connect(net.stack('B').node.serviceAddress(sid), { signal: controller.signal });
    await waitFor(() => net.stack('C').streams.connectionCount === 1, 10_000, 'the handshake to start on the node', 5);
    controller.abort();
    await expect(connecting).rejects.toThrow(/aborted/);
    await waitFor(() => net.stack('C').streams.connectionCount === 0, 10_000, 'the node to drop the handshake', 5);
  });
});
