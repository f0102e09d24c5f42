/**
 * The mover inside the node, on an in-process network (host A -> R1 -> host B): a
 * migration through two mover sockets is intact; a client that goes away, on either
 * side, fails both and leaves nothing held in either node (published chunks, fetches,
 * the listening SID); the socket's bounds refuse and count; stop() ends what runs and
 * leaves nothing behind. With QEMU's `unix:` channel held by the nodes (a socket stands in
 * for each QEMU), the same: intact, and a broken end breaks the other QEMU's channel.
 */
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough, Writable } from 'node:stream';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { WellKnownSid } from '../shared/xid.js';
import { activeResources, leftBehind } from '../shared/startable.js';
import { LocalNodeApi } from '../xianet/api/local-api.js';
import { InProcessNetwork, INTRA_AD } from '../xianet/topology.js';
import { waitFor } from '../test/support/wait.js';
import { migrateInNode, recvViaNode, sendViaNode } from './mover-client.js';
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

/** The destination QEMU's `-incoming unix:PATH`: a listener taking one stream into `sink`. */
async function incomingQemu(path: string, sink: Sink): Promise<{ server: Server; closed: Promise<void> }> {
  let ended: () => void = () => undefined;
  const closed = new Promise<void>((resolve) => (ended = resolve));
  const server = createServer((socket) => {
    socket.on('error', () => undefined);
    socket.pipe(sink);
    // A QEMU that fails to load the stream exits: its end of the channel closes.
    sink.on('error', () => socket.destroy());
    socket.once('close', () => ended());
  });
  await new Promise<void>((resolve) => server.listen(path, resolve));
  return { server, closed };
}

/** The source QEMU's `migrate unix:PATH`: writes `data` into the node, then ends; resolves when its connection closes. */
function migrateUnix(path: string, data: Buffer): { socket: Socket; closed: Promise<boolean> } {
  const socket = connect(path);
  socket.on('error', () => undefined);
  const closed = new Promise<boolean>((resolve) => socket.once('close', (hadError) => resolve(hadError)));
  void (async () => {
    for (let at = 0; at < data.length && !socket.destroyed; at += 256 << 10) {
      if (!socket.write(data.subarray(at, at + (256 << 10)))) await new Promise((r) => socket.once('drain', r));
    }
    socket.end();
  })();
  return { socket, closed };
}

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

  it('streams through the sockets when the node refuses the pipes offered, and says why', async () => {
    const s = await setup();
    const data = randomBytes(3 << 20);
    const sink = new Sink();
    let listening = (): void => undefined;
    const heard = new Promise<void>((resolve) => (listening = resolve));
    // No such pipe: this process's stdin and stdout are not the ones named.
    const stdio = { pid: process.pid, dev: '1', ino: '1' };
    const answers: [string, boolean, string | undefined][] = [];
    const received = recvViaNode(s.b.path, { op: 'recv', sid }, sink, { stdio, onListening: () => listening(), onHandover: (taken, why) => answers.push(['recv', taken, why]) });
    await heard;
    const report = await sendViaNode(s.a.path, { op: 'send', to: s.to, chunkBytes: 256 << 10 }, source(data), { stdio, onHandover: (taken, why) => answers.push(['send', taken, why]) });
    const got = await received;
    expect(report['bytes']).toBe(data.length);
    expect(got['bytesWritten']).toBe(data.length);
    expect(sink.hash.digest('hex')).toBe(createHash('sha256').update(data).digest('hex'));
    expect(answers.map(([who, taken]) => [who, taken]).sort()).toEqual([
      ['recv', false],
      ['send', false],
    ]);
    for (const [, , why] of answers) expect(why).toMatch(/\/proc\/\d+\/fd\/[01]/);
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

  it("carries QEMU's own unix: channel on both hosts: intact, socket files gone after, one stream per migration", async () => {
    const s = await setup();
    const data = randomBytes(12 << 20);
    data.fill(0, 1 << 20, 3 << 20);
    const sink = new Sink();
    const incoming = join(dir, `qemu-in-${Math.random().toString(36).slice(2)}.sock`);
    const outgoing = join(dir, `qemu-out-${Math.random().toString(36).slice(2)}.sock`);
    const qemuB = await incomingQemu(incoming, sink);
    try {
      let listening = (): void => undefined;
      const heard = new Promise<void>((resolve) => (listening = resolve));
      const received = migrateInNode(s.b.path, { op: 'recv', sid, qemuSocket: incoming }, { onListening: () => listening() });
      await heard;
      let ready = (): void => undefined;
      const qemuListening = new Promise<void>((resolve) => (ready = resolve));
      let connected = false;
      const sent = migrateInNode(s.a.path, { op: 'send', to: s.to, chunkBytes: 256 << 10, qemuSocket: outgoing }, { onQemuListening: () => ready(), onConnected: () => (connected = true) });
      await qemuListening;
      const qemuA = migrateUnix(outgoing, data);
      const report = await sent;
      const got = await received;
      await qemuB.closed;
      expect(connected).toBe(true);
      expect(report['bytes']).toBe(data.length);
      expect(got['bytes']).toBe(data.length);
      expect(sink.bytes).toBe(data.length);
      expect(sink.hash.digest('hex')).toBe(createHash('sha256').update(data).digest('hex'));
      expect(await qemuA.closed).toBe(false);
      // The node's listening socket was QEMU's for this migration only.
      expect(existsSync(outgoing)).toBe(false);
      await nothingHeld(s);
    } finally {
      qemuB.server.close();
    }
  }, 60_000);

  it("breaks the source QEMU's channel when the destination QEMU goes away, and refuses a path it must not take", async () => {
    const s = await setup();
    const incoming = join(dir, `qemu-in-${Math.random().toString(36).slice(2)}.sock`);
    const outgoing = join(dir, `qemu-out-${Math.random().toString(36).slice(2)}.sock`);
    const sink = new Sink((bytes, self) => {
      if (bytes >= 2 << 20) self.destroy(new Error('QEMU failed to load the stream'));
    });
    const qemuB = await incomingQemu(incoming, sink);
    try {
      let listening = (): void => undefined;
      const heard = new Promise<void>((resolve) => (listening = resolve));
      const received = migrateInNode(s.b.path, { op: 'recv', sid, qemuSocket: incoming }, { onListening: () => listening() });
      received.catch(() => undefined);
      await heard;
      let ready = (): void => undefined;
      const qemuListening = new Promise<void>((resolve) => (ready = resolve));
      const sent = migrateInNode(s.a.path, { op: 'send', to: s.to, chunkBytes: 256 << 10, qemuSocket: outgoing }, { onQemuListening: () => ready() });
      sent.catch(() => undefined);
      await qemuListening;
      const qemuA = migrateUnix(outgoing, randomBytes(64 << 20));
      await new Promise((resolve) => qemuA.socket.once('connect', resolve));
      // A second QEMU at the same socket is shut out at once.
      const intruder = connect(outgoing);
      intruder.on('error', () => undefined);
      await new Promise((resolve) => intruder.once('close', resolve));
      await expect(received).rejects.toThrow();
      await expect(sent).rejects.toThrow();
      // The source QEMU's stream is cut off: it fails the migration, its VM runs on.
      await qemuA.closed;
      expect(qemuA.socket.bytesWritten).toBeLessThan(64 << 20);
      await nothingHeld(s);
    } finally {
      qemuB.server.close();
    }
    // A regular file at the path is never replaced; a QEMU that is not listening fails before any sender comes.
    const file = join(dir, `not-a-socket-${process.pid}`);
    writeFileSync(file, 'keep me');
    await expect(migrateInNode(s.a.path, { op: 'send', to: s.to, qemuSocket: file })).rejects.toThrow(/not a socket/);
    expect(readFileSync(file, 'utf8')).toBe('keep me');
    const nobody = join(dir, `nobody-${process.pid}.sock`);
    const started = performance.now();
    await expect(migrateInNode(s.b.path, { op: 'recv', sid, qemuSocket: nobody, resumeDeadlineMs: 1000 })).rejects.toThrow(/cannot reach QEMU's incoming migration socket/);
    expect(performance.now() - started).toBeLessThan(30_000);
    await expect(migrateInNode(s.b.path, { op: 'recv', sid, qemuSocket: 'relative.sock' } as never)).rejects.toThrow(/absolute socket path/);
    await nothingHeld(s);
  }, 90_000);

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
