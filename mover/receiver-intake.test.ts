/**
 * Anyone who can reach the migration SID or port can connect to xmig recv. A stranger's
 * junk, silence or HELLO must not crash it, hold it, or lock the real sender out.
 */
import { createHash, randomBytes } from 'node:crypto';
import { connect, type Socket } from 'node:net';
import { PassThrough, Writable, type Duplex } from 'node:stream';
import { describe, expect, it, vi } from 'vitest';
import { TcpPublisher, TcpRetriever, type ChunkRetriever } from './chunk-exchange.js';
import { admitTcpFrom, admitXiaFrom, ConnectionQueue, connectTcp, listenTcp, type Listening } from './connections.js';
import { Dag } from '../shared/dag.js';
import { Xid, XidType } from '../shared/xid.js';
import { ChunkKind, encodeMessage, MessageType } from './control-messages.js';
import { MigrationReceiver, type ReceiveReport } from './receiver.js';
import { MigrationSender } from './sender.js';

function sink(): { stream: Writable; digest: () => string } {
  const hash = createHash('sha256');
  return {
    stream: new Writable({
      write(chunk: Buffer, _e, cb) {
        hash.update(chunk);
        cb();
      },
    }),
    digest: () => hash.digest('hex'),
  };
}

async function stranger(listening: Listening, bytes?: Buffer): Promise<Socket> {
  const [host, port] = listening.address.split(':');
  const socket = connect(Number(port), host!);
  socket.on('error', () => undefined);
  await new Promise((resolve) => socket.once('connect', resolve));
  if (bytes) socket.write(bytes);
  return socket;
}

function closed(socket: Socket): Promise<void> {
  return new Promise((resolve) => (socket.destroyed ? resolve() : socket.once('close', () => resolve())));
}

/** A receiver on loopback TCP and, when asked, a genuine sender of `data`. */
async function receiverOn(options: { helloTimeoutMs?: number; admit?: (s: Duplex) => string | undefined; retriever?: () => ChunkRetriever } = {}) {
  const listening = await listenTcp('127.0.0.1', 0);
  const out = sink();
  const receiver = new MigrationReceiver({ output: out.stream, accept: () => listening.accept(), retriever: () => new TcpRetriever(), resumeDeadlineMs: 3000, ...options });
  const received = receiver.run();
  received.catch(() => undefined);
  const send = async (data: Buffer): Promise<ReceiveReport> => {
    const [host, port] = listening.address.split(':');
    const input = new PassThrough();
    input.end(data);
    const sender = new MigrationSender({ input, connect: connectTcp(host!, Number(port)), publisher: new TcpPublisher(), mode: 'tcp', source: '', chunkBytes: 64 * 1024, resumeDeadlineMs: 3000 });
    const [, got] = await Promise.all([sender.run(), received]);
    expect(out.digest()).toBe(createHash('sha256').update(data).digest('hex'));
    return got;
  };
  return { listening, received, send };
}

describe('xmig recv and the connections it did not ask for', () => {
  it('survives a waiting connection failing before anyone reads it', async () => {
    const queue = new ConnectionQueue<PassThrough>();
    const waiting = new PassThrough();
    queue.push(waiting);
    // An ApiStream whose node reports a stream error is destroyed with one: no listener, no crash.
    waiting.destroy(new Error('stream reset by the node'));
    await new Promise((r) => setImmediate(r));
    const next = new PassThrough();
    queue.push(next);
    expect(await queue.next()).toBe(next);
  });

  it('refuses a malformed HELLO (its source is no DAG) and goes on to migrate with the real sender', async () => {
    const r = await receiverOn();
    const junk = encodeMessage({ type: MessageType.HELLO, session: randomBytes(16), mode: 1, source: '' });
    junk[4 + 1 + 16 + 1] = 0; // mode 1 -> 0 (xia): its empty source must now be a DAG
    const rogue = await stranger(r.listening, junk);
    await closed(rogue);
    const got = await r.send(randomBytes(300_000));
    expect(got.refused['control-connection/malformed']).toBe(1);
    await r.listening.close();
  });

  it('lets the real sender take over from a stranger whose HELLO came first but who wrote nothing and left', async () => {
    const r = await receiverOn();
    const rogue = await stranger(r.listening, encodeMessage({ type: MessageType.HELLO, session: randomBytes(16), mode: 1, source: '' }));
    await new Promise((resolve) => rogue.once('data', resolve)); // its WELCOME: it holds the session
    rogue.destroy();
    await r.send(randomBytes(300_000));
    await r.listening.close();
  });

  it('stops the fetches of a replaced session and goes on: they are cancelled, not waited for', async () => {
    // The stranger's HELLO binds the session, its OFFER starts a fetch it will never answer,
    // and it leaves. The real sender replaces it; the writer was waiting on that fetch.
    const made: TcpRetriever[] = [];
    const r = await receiverOn({ retriever: () => { const retriever = new TcpRetriever(); made.push(retriever); return retriever; } });
    const rogue = await stranger(r.listening, encodeMessage({ type: MessageType.HELLO, session: randomBytes(16), mode: 1, source: '' }));
    await new Promise((resolve) => rogue.once('data', resolve)); // its WELCOME: it holds the session
    const cid = randomBytes(20);
    rogue.write(encodeMessage({ type: MessageType.OFFER, round: 0, chunks: [{ kind: ChunkKind.FETCH, length: 4096, cid }] }));
    const requested = new Promise((resolve) => rogue.once('data', resolve)); // our REQUEST for it
    await requested;
    const cancel = vi.spyOn(made[0]!, 'cancel');
    rogue.destroy();
    await r.send(randomBytes(300_000));
    expect(made).toHaveLength(2);
    expect(cancel).toHaveBeenCalledOnce();
    await r.listening.close();
  }, 20_000);

  it('admits only allowed senders, and closes connections that never say HELLO', async () => {
    let allowed = false;
    const r = await receiverOn({ helloTimeoutMs: 300, admit: () => (allowed ? undefined : 'not an allowed sender') });
    const denied = await stranger(r.listening, encodeMessage({ type: MessageType.HELLO, session: randomBytes(16), mode: 1, source: '' }));
    await closed(denied);
    allowed = true;
    const silent = await stranger(r.listening);
    await closed(silent);
    const got = await r.send(randomBytes(200_000));
    expect(got.refused['control-connection/forbidden']).toBe(1);
    expect(got.refused['control-connection/timeout']).toBe(1);
    await r.listening.close();
  });

  it('keeps at most a few connections waiting for their HELLO, and still lets the sender in', async () => {
    const r = await receiverOn({ helloTimeoutMs: 20_000 });
    const idle: Socket[] = [];
    for (let i = 0; i < 12; i++) idle.push(await stranger(r.listening));
    // The oldest four are pushed out as the last four arrive.
    await Promise.all(idle.slice(0, 4).map(closed));
    const got = await r.send(randomBytes(200_000));
    expect(got.refused['control-connection/cap']).toBeGreaterThanOrEqual(5);
    for (const socket of idle) socket.destroy();
    await r.listening.close();
  });
});

describe('--from: who may migrate to us', () => {
  it('admits XIA senders by the HID their STREAM comes from, TCP senders by address', () => {
    const hid = Xid.of(XidType.HID, randomBytes(20));
    const other = Xid.of(XidType.HID, randomBytes(20));
    const admit = admitXiaFrom([hid]);
    const from = (h: Xid): Duplex => Object.assign(new PassThrough(), { remote: Dag.chain(Xid.of(XidType.AD, randomBytes(20)), h) });
    expect(admit(from(hid))).toBeUndefined();
    expect(admit(from(other))).toMatch(/not an allowed sender/);
    expect(admit(new PassThrough())).toMatch(/no HID/);
    const tcp = admitTcpFrom(['10.0.0.1']);
    expect(tcp(Object.assign(new PassThrough(), { remoteAddress: '::ffff:10.0.0.1' }))).toBeUndefined();
    expect(tcp(Object.assign(new PassThrough(), { remoteAddress: '10.0.0.2' }))).toMatch(/not an allowed sender/);
  });
});
