/**
 * Sender and receiver in one process over TCP on loopback (the XIA path is in
 * test/integration/mover.test.ts): the stream arrives intact, zero chunks are not
 * fetched, a corrupt chunk is fetched again, and a lost control connection resumes.
 */
import { createHash, randomBytes } from 'node:crypto';
import { PassThrough, Writable, type Duplex } from 'node:stream';
import { describe, expect, it } from 'vitest';
import type { ControlChannel } from './control-channel.js';
import { TcpPublisher, TcpRetriever } from './chunk-exchange.js';
import { connectTcp, listenTcp } from './connections.js';
import { decodeMessage, encodeMessage, FrameLayout, MessageReader, MessageType, type ControlMessage } from './control-messages.js';
import { MigrationReceiver } from './receiver.js';
import { MigrationSender } from './sender.js';

function source(parts: Buffer[], pauseMs = 0): PassThrough {
  const input = new PassThrough();
  void (async () => {
    for (const part of parts) {
      if (!input.write(part)) await new Promise((r) => input.once('drain', r));
      await new Promise((r) => (pauseMs ? setTimeout(r, pauseMs) : setImmediate(r)));
    }
    input.end();
  })();
  return input;
}

function sink(): { stream: Writable; digest: () => string; bytes: () => number } {
  const hash = createHash('sha256');
  let bytes = 0;
  const stream = new Writable({
    write(chunk: Buffer, _e, cb) {
      hash.update(chunk);
      bytes += chunk.length;
      cb();
    },
  });
  return { stream, digest: () => hash.digest('hex'), bytes: () => bytes };
}

/** Counts the receiver's connections and destroys the n-th after `readsBeforeCut(n)` reads (never if undefined). */
function cutConnections(readsBeforeCut: (n: number) => number | undefined) {
  const drops = {
    connections: 0,
    onConnection: (c: Duplex): void => {
      const cutAfter = readsBeforeCut(++drops.connections);
      if (cutAfter === undefined) return;
      let seen = 0;
      c.on('data', () => ++seen === cutAfter && c.destroy());
    },
  };
  return drops;
}

async function migrate(parts: Buffer[], tweak: { publisher?: TcpPublisher; onConnection?: (c: Duplex) => void; pauseMs?: number } = {}) {
  const listening = await listenTcp('127.0.0.1', 0);
  const [host, port] = listening.address.split(':');
  const out = sink();
  const receiver = new MigrationReceiver({
    output: out.stream,
    accept: async () => {
      const c = await listening.accept();
      tweak.onConnection?.(c);
      return c;
    },
    retriever: () => new TcpRetriever(),
    resumeDeadlineMs: 3000,
  });
  const received = receiver.run();
  const sender = new MigrationSender({
    input: source(parts, tweak.pauseMs),
    connect: connectTcp(host!, Number(port)),
    publisher: tweak.publisher ?? new TcpPublisher(),
    mode: 'tcp',
    source: '',
    chunkBytes: 64 * 1024,
    roundBytes: 512 * 1024,
    resumeDeadlineMs: 3000,
  });
  const [sent, got] = await Promise.all([sender.run(), received]);
  await listening.close();
  const expected = createHash('sha256');
  for (const part of parts) expected.update(part);
  return { sent, got, digest: out.digest(), expected: expected.digest('hex'), bytes: out.bytes() };
}

describe('migration control protocol', () => {
  it('round-trips every message and rejects junk frames', () => {
    const messages: ControlMessage[] = [
      { type: MessageType.HELLO, session: randomBytes(16), mode: 1, source: 'RE HID:00' },
      { type: MessageType.OFFER, round: 7, chunks: [{ kind: 0, length: 5, cid: randomBytes(20) }, { kind: 1, length: 9 }] },
      { type: MessageType.ACK, round: 7 },
      { type: MessageType.DONE, rounds: 8, bytes: 123456789 },
      { type: MessageType.REQUEST, cids: [randomBytes(20), randomBytes(20)] },
    ];
    const reader = new MessageReader();
    const decoded = reader.push(Buffer.concat(messages.map((m) => encodeMessage(m))));
    expect(decoded).toEqual(messages);
    expect(() => decodeMessage(MessageType.OFFER, Buffer.alloc(3))).toThrow(/runs past the end/);
    // DATA arrives in pieces of any size (here 1 to 7 bytes): its chunk comes out as
    // views of them, in order, and the messages around it are whole.
    const chunk = randomBytes(1000);
    const cid = randomBytes(20);
    const stream = Buffer.concat([encodeMessage({ type: MessageType.ACK, round: 1 }), encodeMessage({ type: MessageType.DATA, cid, data: [chunk] }), encodeMessage({ type: MessageType.ACK, round: 2 })]);
    const pieces = new MessageReader();
    const out: ControlMessage[] = [];
    for (let at = 0, size = 1; at < stream.length; at += size, size = (size % 7) + 1) out.push(...pieces.push(stream.subarray(at, at + size)));
    expect(out.map((m) => m.type)).toEqual([MessageType.ACK, MessageType.DATA, MessageType.ACK]);
    const data = out[1] as Extract<ControlMessage, { type: typeof MessageType.DATA }>;
    expect(data.cid.equals(cid)).toBe(true);
    expect(data.data.length).toBeGreaterThan(100);
    expect(Buffer.concat(data.data).equals(chunk)).toBe(true);
    expect(out[2]).toEqual({ type: MessageType.ACK, round: 2 });
    expect(() => reader.push(Buffer.from([0xff, 0xff, 0xff, 0xff, 1]))).toThrow(/frame/);
  });

  it('moves a stream intact, not fetching zero chunks', async () => {
    const parts = [randomBytes(3 << 20), Buffer.alloc(2 << 20), randomBytes(1 << 20), Buffer.from('tail')];
    const r = await migrate(parts);
    expect(r.digest).toBe(r.expected);
    expect(r.sent.zeroChunks).toBeGreaterThanOrEqual(32);
    expect(r.got.zeroChunks).toBe(r.sent.zeroChunks);
  });

  it('fetches a chunk again when it arrives corrupt', async () => {
    class Corrupting extends TcpPublisher {
      corrupted = 0;
      override async serve(cids: Buffer[], channel: ControlChannel): Promise<void> {
        if (this.corrupted === 0) {
          this.corrupted++;
          await channel.send({ type: MessageType.DATA, cid: Buffer.from(cids[0]!), data: [randomBytes(100)] });
        }
        return super.serve(cids, channel);
      }
    }
    const publisher = new Corrupting();
    const r = await migrate([randomBytes(1 << 20)], { publisher });
    expect(publisher.corrupted).toBe(1);
    expect(r.digest).toBe(r.expected);
  });

  it('resumes after the control connection drops, from what was written', async () => {
    const parts = Array.from({ length: 40 }, () => randomBytes(128 * 1024));
    // Cut the first connection after a few messages have crossed it (rounds under way).
    const drops = cutConnections((n) => (n === 1 ? 6 : undefined));
    const r = await migrate(parts, { pauseMs: 3, onConnection: drops.onConnection });
    expect(drops.connections).toBe(2);
    expect(r.sent.reconnects).toBe(1);
    expect(r.digest).toBe(r.expected);
  });

  it('keeps rounds in order through repeated drops while the input flows on', async () => {
    const parts = Array.from({ length: 120 }, () => randomBytes(64 * 1024));
    // Cut each of the first four connections soon after it starts: new rounds are
    // announced while the lost ones are being offered again.
    const drops = cutConnections((n) => (n <= 4 ? 3 + n : undefined));
    const r = await migrate(parts, { pauseMs: 1, onConnection: drops.onConnection });
    expect(drops.connections).toBe(5);
    expect(r.sent.reconnects).toBe(4);
    expect(r.digest).toBe(r.expected);
  });
});

/** A free TCP port on loopback (listened on once, then closed). */
async function freePort(): Promise<number> {
  const probe = await listenTcp('127.0.0.1', 0);
  await probe.close();
  return Number(probe.address.split(':')[1]);
}

/** Settles with the promise's outcome, or with 'hung' if it has not settled after `ms`. */
function within<T>(promise: Promise<T>, ms: number): Promise<T | 'hung'> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([promise, new Promise<'hung'>((resolve) => (timer = setTimeout(() => resolve('hung'), ms)))]).finally(() => clearTimeout(timer));
}

describe('the sender at the edges: the receiver late, gone, or a round unpublishable', () => {
  it('waits for a receiver that starts listening after it (QEMU may start send first)', async () => {
    const port = await freePort();
    const parts = [randomBytes(1 << 20)];
    const sender = new MigrationSender({
      input: source(parts),
      connect: connectTcp('127.0.0.1', port),
      publisher: new TcpPublisher(),
      mode: 'tcp',
      source: '',
      chunkBytes: 64 * 1024,
      resumeDeadlineMs: 10_000,
    });
    const sent = sender.run();
    sent.catch(() => undefined);
    // Refused connections first: the receiver comes up only after several tries.
    await new Promise((r) => setTimeout(r, 400));
    const listening = await listenTcp('127.0.0.1', port);
    const out = sink();
    const receiver = new MigrationReceiver({ output: out.stream, accept: () => listening.accept(), retriever: () => new TcpRetriever(), resumeDeadlineMs: 3000 });
    const [report] = await Promise.all([sent, receiver.run()]);
    await listening.close();
    expect(report.bytes).toBe(1 << 20);
    expect(out.digest()).toBe(createHash('sha256').update(parts[0]!).digest('hex'));
  });

  it('gives up connecting, with the reason, once the deadline has passed', async () => {
    const port = await freePort();
    const sender = new MigrationSender({ input: source([randomBytes(1000)]), connect: connectTcp('127.0.0.1', port), publisher: new TcpPublisher(), mode: 'tcp', source: '', resumeDeadlineMs: 600 });
    await expect(sender.run()).rejects.toThrow(/gave up connecting after \d+ attempts.*ECONNREFUSED/);
  });

  it("takes the rounds a resumed receiver says it wrote as acknowledged, though their ACKs were lost", async () => {
    // What host B's node stopped for 3 s does: the receiver wrote rounds and acknowledged
    // them on a connection that then died, so the ACKs never came; its WELCOME on the new
    // connection says how far it got. Rounds before that are done, or the window stays
    // full of them and the input paused for ever.
    const listening = await listenTcp('127.0.0.1', 0);
    const [host, port] = listening.address.split(':');
    let connections = 0;
    let lost = 0;
    const out = sink();
    const receiver = new MigrationReceiver({
      output: out.stream,
      accept: async () => {
        const c = await listening.accept();
        if (++connections === 1) {
          const write = c.write.bind(c) as (chunk: unknown, ...rest: unknown[]) => boolean;
          c.write = ((chunk: unknown, ...rest: unknown[]) => {
            if (Buffer.isBuffer(chunk) && chunk.length >= FrameLayout.HEADER && chunk[FrameLayout.TYPE] === MessageType.ACK) {
              // No ACK is heard; once everything offered has been written (the sender's
              // window is full, its input paused), the connection dies.
              if (++lost === 1) setTimeout(() => c.destroy(), 500);
              return true;
            }
            return write(chunk, ...rest);
          }) as typeof c.write;
        }
        return c;
      },
      retriever: () => new TcpRetriever(),
      resumeDeadlineMs: 5000,
    });
    const received = receiver.run();
    const parts = Array.from({ length: 40 }, () => randomBytes(128 * 1024));
    const sender = new MigrationSender({
      input: source(parts),
      connect: connectTcp(host!, Number(port)),
      publisher: new TcpPublisher(),
      mode: 'tcp',
      source: '',
      chunkBytes: 64 * 1024,
      roundBytes: 512 * 1024,
      maxUnackedBytes: 1024 * 1024,
      resumeDeadlineMs: 5000,
    });
    const outcome = await within(Promise.all([sender.run(), received]), 10_000);
    if (outcome === 'hung') {
      sender.abort(new Error('hung'));
      receiver.abort(new Error('hung'));
    }
    await listening.close();
    expect(outcome, `${lost} ACKs lost, ${connections} connections, ${out.bytes()} bytes out`).not.toBe('hung');
    expect(lost).toBeGreaterThanOrEqual(2);
    expect(connections).toBe(2);
    const expected = createHash('sha256');
    for (const part of parts) expected.update(part);
    expect(out.digest()).toBe(expected.digest('hex'));
  }, 30_000);

  it('fails, instead of hanging with its input paused, when a round cannot be published', async () => {
    class Failing extends TcpPublisher {
      rounds = 0;
      override async publish(chunks: Buffer[]): Promise<Buffer[]> {
        if (++this.rounds === 2) throw new Error('chunk store full');
        return super.publish(chunks);
      }
    }
    const listening = await listenTcp('127.0.0.1', 0);
    const [host, port] = listening.address.split(':');
    const receiver = new MigrationReceiver({ output: sink().stream, accept: () => listening.accept(), retriever: () => new TcpRetriever(), resumeDeadlineMs: 1000 });
    receiver.run().catch(() => undefined);
    const sender = new MigrationSender({
      input: source(Array.from({ length: 64 }, () => randomBytes(256 * 1024))),
      connect: connectTcp(host!, Number(port)),
      publisher: new Failing(),
      mode: 'tcp',
      source: '',
      chunkBytes: 64 * 1024,
      roundBytes: 512 * 1024,
      maxUnackedBytes: 2 * 1024 * 1024,
    });
    const outcome = await within(sender.run().then(() => 'completed', (error: Error) => error.message), 15_000);
    expect(outcome).toMatch(/chunk store full/);
    await listening.close();
  });
});
