/**
 * The mover inside the node, on an in-process network (host A -> R1 -> host B): a
 * migration through two mover sockets is intact; a client that goes away, on either
 * side, fails both and leaves nothing held in either node (published chunks, fetches,
 * the listening SID); the socket's bounds refuse and count; stop() ends what runs and
 * leaves nothing behind.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough, Writable } from 'node:stream';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { WellKnownSid } from '../shared/xid.js';
import { activeResources, leftBehind } from '../shared/startable.js';
import { LocalNodeApi } from '../xianet/api/local-api.js';
import { InProcessNetwork, INTRA_AD } from '../xianet/topology.js';
import { waitFor } from '../test/support/wait.js';
import { recvViaNode, sendViaNode } from './mover-client.js';
import { FrameType, frameHeader } from './mover-socket-protocol.js';
import { MoverService, type MoverServiceOptions } from './mover-service.js';

const dir = mkdtempSync(join(tmpdir(), 'xmig-mover-service-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

interface Setup {
  net: InProcessNetwork;
  a: MoverService;
  b: MoverService;
  apiA: LocalNodeApi;
  apiB: LocalNodeApi;
  to: string;
}

let current: Setup | undefined;
afterEach(async () => {
  if (!current) return;
  await current.a.stop();
  await current.b.stop();
  await current.apiA.close();
  await current.apiB.close();
  await current.net.stop();
  current = undefined;
});

async function setup(options: Partial<MoverServiceOptions> = {}, mtu?: number): Promise<Setup> {
  const net = new InProcessNetwork(INTRA_AD, { beaconIntervalMs: 50, helloIntervalMs: 200, mtu });
  await net.start();
  await net.ready();
  const apiA = new LocalNodeApi(net.stack('A'));
  const apiB = new LocalNodeApi(net.stack('B'));
  const id = Math.random().toString(36).slice(2);
  const a = new MoverService({ api: apiA, path: join(dir, `A-${id}.mover`), ...options });
  const b = new MoverService({ api: apiB, path: join(dir, `B-${id}.mover`), ...options });
  await a.start();
  await b.start();
  // The migration SID on B: its DAG with the SID appended.
  const to = net.stack('B').node.serviceAddress(WellKnownSid.MIGRATION).toString();
  current = { net, a, b, apiA, apiB, to };
  return current;
}

/** A source that writes `data` in 256 KiB pieces, pausing now and then (as QEMU's rounds do). */
function source(data: Buffer): PassThrough {
  const input = new PassThrough({ highWaterMark: 1 << 20 });
  void (async () => {
    for (let at = 0; at < data.length; at += 256 << 10) {
      if (!input.write(data.subarray(at, at + (256 << 10)))) await new Promise((r) => input.once('drain', r));
    }
    input.end();
  })();
  return input;
}

class Sink extends Writable {
  readonly hash = createHash('sha256');
  bytes = 0;
  constructor(private readonly onBytes?: (bytes: number, sink: Sink) => void) {
    super();
  }
  override _write(chunk: Buffer, _: BufferEncoding, callback: () => void): void {
    this.hash.update(chunk);
    this.bytes += chunk.length;
    this.onBytes?.(this.bytes, this);
    callback();
  }
}

/** Nothing of any migration is held in either node: published chunks, fetches, migrations. */
async function nothingHeld(s: Setup): Promise<void> {
  await waitFor(() => s.a.load.migrations === 0 && s.b.load.migrations === 0, 20_000, 'the migrations to end');
  await waitFor(() => s.net.stack('A').chunks.published.chunks === 0, 20_000, "A's published chunks to go");
  await waitFor(() => (s.apiB.chunkFetcher?.outstanding.fetches ?? 0) === 0, 20_000, "B's fetches to end");
}

const sid = WellKnownSid.MIGRATION.toString();

describe('MoverService', () => {
  it('moves a stream intact through the two nodes, and lets go of everything after', async () => {
    const s = await setup();
    const data = randomBytes(12 << 20);
    data.fill(0, 2 << 20, 5 << 20);
    const sink = new Sink();
    let listening = (): void => undefined;
    const heard = new Promise<void>((resolve) => (listening = resolve));
    const received = recvViaNode(s.b.path, { op: 'recv', sid }, sink, { onListening: () => listening() });
    await heard;
    let connected = false;
    const report = await sendViaNode(s.a.path, { op: 'send', to: s.to, chunkBytes: 256 << 10 }, source(data), { onConnected: () => (connected = true) });
    const got = await received;
    expect(connected).toBe(true);
    expect(report['bytes']).toBe(data.length);
    expect(got['bytesWritten']).toBe(data.length);
    expect(sink.hash.digest('hex')).toBe(createHash('sha256').update(data).digest('hex'));
    await nothingHeld(s);
  }, 60_000);

  it('keeps a chunk published while a later round offers the same bytes again', async () => {
    // Small packets and a delay: fetches of later rounds are still under way when the first is acknowledged.
    const s = await setup({}, 1500);
    s.net.segment('seg-A').impairments = { delayMs: 5 };
    // The same 256 KiB, 40 times: every chunk has one CID; the first acknowledged must not unpublish the rest.
    const piece = randomBytes(256 << 10);
    const data = Buffer.concat(Array.from({ length: 40 }, () => piece));
    const sink = new Sink();
    let listening = (): void => undefined;
    const heard = new Promise<void>((resolve) => (listening = resolve));
    const received = recvViaNode(s.b.path, { op: 'recv', sid, resumeDeadlineMs: 2000 }, sink, { onListening: () => listening() });
    await heard;
    await sendViaNode(s.a.path, { op: 'send', to: s.to, chunkBytes: 256 << 10, roundBytes: 256 << 10 }, source(data));
    await received;
    expect(sink.bytes).toBe(data.length);
    await nothingHeld(s);
  }, 60_000);

  it('fails both when the recv client goes away mid-way, and lets go of everything', async () => {
    const s = await setup();
    const data = randomBytes(24 << 20);
    const controller = new AbortController();
    const sink = new Sink((bytes, self) => {
      if (bytes >= 2 << 20 && !controller.signal.aborted) {
        controller.abort();
        self.destroy(new Error('QEMU went away'));
      }
    });
    let listening = (): void => undefined;
    const heard = new Promise<void>((resolve) => (listening = resolve));
    const received = recvViaNode(s.b.path, { op: 'recv', sid }, sink, { onListening: () => listening() });
    received.catch(() => undefined);
    await heard;
    await expect(sendViaNode(s.a.path, { op: 'send', to: s.to, chunkBytes: 256 << 10 }, source(data))).rejects.toThrow(/recv client went away|output/);
    await expect(received).rejects.toThrow();
    await nothingHeld(s);
    // The SID is free again: the next migration can listen on it.
    const again = recvViaNode(s.b.path, { op: 'recv', sid }, new Sink(), { onListening: () => undefined });
    await waitFor(() => s.b.load.migrations === 1, 10_000, 'the next recv');
    await s.b.stop();
    await expect(again).rejects.toThrow(/node is stopping/);
  }, 60_000);

  it('fails both when the send client goes away without END, and lets go of everything', async () => {
    const s = await setup();
    const sink = new Sink();
    let listening = (): void => undefined;
    const heard = new Promise<void>((resolve) => (listening = resolve));
    const received = recvViaNode(s.b.path, { op: 'recv', sid }, sink, { onListening: () => listening() });
    received.catch(() => undefined);
    await heard;
    // A send client by hand: the request, 4 MiB of DATA, then gone (killed: its socket just closes).
    const socket = connect(s.a.path);
    socket.on('error', () => undefined);
    socket.write(`${JSON.stringify({ op: 'send', to: s.to, chunkBytes: 256 << 10 })}\n`);
    const piece = randomBytes(1 << 20);
    for (let i = 0; i < 4; i++) socket.write(Buffer.concat([frameHeader(FrameType.DATA, piece.length), piece]));
    await waitFor(() => sink.bytes > 0, 20_000, 'the stream to start arriving');
    socket.end();
    await expect(received).rejects.toThrow(/send client went away/);
    await nothingHeld(s);
  }, 60_000);

  it('refuses and counts: past the connection cap, a request that never comes, one that is not a request', async () => {
    const s = await setup({ maxConnections: 2, requestTimeoutMs: 200 });
    const answer = (socket: Socket): Promise<string> =>
      new Promise((resolve) => {
        let text = '';
        socket.on('error', () => undefined);
        socket.on('data', (d: Buffer) => (text += d.toString('latin1')));
        socket.once('close', () => resolve(text));
      });
    const idle = [connect(s.b.path), connect(s.b.path)];
    const idleAnswers = idle.map(answer);
    await waitFor(() => s.b.load.connections === 2, 5000, 'two connections');
    const third = connect(s.b.path);
    expect(await answer(third)).toMatch(/connections already/);
    expect(s.b.refusals.count('mover-connection', 'cap')).toBe(1);
    // The two that said nothing are refused for it once their time is up.
    for (const text of await Promise.all(idleAnswers)) expect(text).toMatch(/no request line/);
    expect(s.b.refusals.count('mover-request', 'timeout')).toBe(2);
    const junk = connect(s.b.path);
    junk.write('{"op":"dance"}\n');
    expect(await answer(junk)).toMatch(/"ok":false/);
    const long = connect(s.b.path);
    const longAnswer = answer(long);
    long.write(Buffer.alloc(9000, 0x20));
    expect(await longAnswer).toMatch(/longer than/);
    expect(s.b.refusals.count('mover-request', 'malformed')).toBe(2);
    // And it still serves: a migration runs after all that.
    const sink = new Sink();
    let listening = (): void => undefined;
    const heard = new Promise<void>((resolve) => (listening = resolve));
    const received = recvViaNode(s.b.path, { op: 'recv', sid }, sink, { onListening: () => listening() });
    await heard;
    await sendViaNode(s.a.path, { op: 'send', to: s.to, chunkBytes: 256 << 10 }, source(randomBytes(1 << 20)));
    await received;
    expect(sink.bytes).toBe(1 << 20);
  }, 60_000);

  it('stop() ends the migrations running (both clients hear of it) and leaves nothing behind', async () => {
    const net = new InProcessNetwork(INTRA_AD, { beaconIntervalMs: 50, helloIntervalMs: 200 });
    await net.start();
    await net.ready();
    const apiA = new LocalNodeApi(net.stack('A'));
    const apiB = new LocalNodeApi(net.stack('B'));
    const before = activeResources();
    const a = new MoverService({ api: apiA, path: join(dir, `stop-A-${process.pid}.mover`) });
    const b = new MoverService({ api: apiB, path: join(dir, `stop-B-${process.pid}.mover`) });
    await a.start();
    await a.start();
    await b.start();
    try {
      let listening = (): void => undefined;
      const heard = new Promise<void>((resolve) => (listening = resolve));
      const sink = new Sink();
      const received = recvViaNode(b.path, { op: 'recv', sid }, sink, { onListening: () => listening() });
      received.catch(() => undefined);
      await heard;
      // A source that never ends: only stop() ends this migration.
      const input = new PassThrough();
      input.write(randomBytes(2 << 20));
      const sent = sendViaNode(a.path, { op: 'send', to: net.stack('B').node.serviceAddress(WellKnownSid.MIGRATION).toString(), chunkBytes: 256 << 10 }, input);
      sent.catch(() => undefined);
      await waitFor(() => sink.bytes >= 2 << 20, 20_000, 'the stream to arrive');
      await a.stop();
      await a.stop();
      await expect(sent).rejects.toThrow(/node is stopping|went away/);
      await expect(received).rejects.toThrow();
      input.destroy();
      await b.stop();
      await apiA.close();
      await apiB.close();
      expect(net.stack('A').chunks.published.chunks).toBe(0);
      await waitFor(() => Object.keys(leftBehind(before, activeResources())).length === 0, 10_000, 'nothing left behind');
    } finally {
      await a.stop();
      await b.stop();
      await net.stop();
    }
  }, 60_000);
});
