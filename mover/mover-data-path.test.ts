/**
 * The mover's side of the data path: fetches survive a control reconnection, idle
 * control connections keep talking, the window follows the path, and offers from the
 * sender are bounded.
 */
import { createHash, randomBytes } from 'node:crypto';
import { connect } from 'node:net';
import { PassThrough, Writable, type Duplex } from 'node:stream';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { describe, expect, it } from 'vitest';
import { Dag } from '../shared/dag.js';
import { Xid, XidType } from '../shared/xid.js';
import type { ChunkBytes, ChunkPublisher, ChunkRetriever } from './chunk-exchange.js';
import { sha1 } from './chunk-exchange.js';
import { ControlChannel } from './control-channel.js';
import { connectTcp, listenTcp } from './connections.js';
import { ChunkKind, encodeMessage, MessageReader, MessageType, type ControlMessage } from './control-messages.js';
import { MAX_EARLY_ROUNDS, MigrationReceiver } from './receiver.js';
import { DRAIN_MS, SendWindow } from './send-window.js';
import { MigrationSender } from './sender.js';

/** An XIA-like chunk exchange in memory: published chunks are fetched by CID, after a delay, counted. */
class MemoryExchange implements ChunkPublisher {
  readonly store = new Map<string, Buffer>();
  readonly fetches = new Map<string, number>();

  async publish(chunks: Buffer[]): Promise<Buffer[]> {
    return chunks.map((chunk) => {
      const cid = sha1(chunk);
      this.store.set(cid.toString('hex'), chunk);
      return cid;
    });
  }

  async drop(cids: Buffer[]): Promise<void> {
    for (const cid of cids) this.store.delete(cid.toString('hex'));
  }

  retriever(delayMs: number): ChunkRetriever {
    const stats = { fetched: 0, corrupt: 0, bytes: 0 };
    return {
      stats,
      fetch: async (cid: Buffer): Promise<ChunkBytes> => {
        const key = cid.toString('hex');
        this.fetches.set(key, (this.fetches.get(key) ?? 0) + 1);
        await new Promise((r) => setTimeout(r, delayMs));
        const data = this.store.get(key);
        if (!data) throw new Error(`no chunk ${key}`);
        stats.fetched++;
        return [data];
      },
    };
  }
}

function source(parts: Buffer[], pauseMs: number): PassThrough {
  const input = new PassThrough();
  void (async () => {
    for (const part of parts) {
      if (!input.write(part)) await new Promise((r) => input.once('drain', r));
      await new Promise((r) => setTimeout(r, pauseMs));
    }
    input.end();
  })();
  return input;
}

/** A sender of 64 KiB chunks in 256 KiB rounds to a receiver listening on TCP at `address`. */
function smallChunkSender(input: PassThrough, address: string, publisher: ChunkPublisher): MigrationSender {
  const [host, port] = address.split(':');
  return new MigrationSender({
    input,
    connect: connectTcp(host!, Number(port)),
    publisher,
    mode: 'xia',
    source: Dag.chain(Xid.of(XidType.HID, randomBytes(20))).toString(),
    chunkBytes: 64 * 1024,
    roundBytes: 256 * 1024,
    resumeDeadlineMs: 5000,
  });
}

describe('the receiver across a control reconnection', () => {
  it('keeps its fetches in flight: no chunk is fetched twice because the connection dropped', async () => {
    const exchange = new MemoryExchange();
    const listening = await listenTcp('127.0.0.1', 0);
    let connections = 0;
    const hash = createHash('sha256');
    const output = new Writable({
      write(chunk: Buffer, _e, cb) {
        hash.update(chunk);
        cb();
      },
    });
    const receiver = new MigrationReceiver({
      output,
      accept: async () => {
        const c = await listening.accept();
        // The first connection drops after a dozen reads: offers made, fetches under way.
        if (++connections === 1) {
          let reads = 0;
          c.on('data', () => ++reads === 12 && c.destroy());
        }
        return c;
      },
      retriever: () => exchange.retriever(30),
      resumeDeadlineMs: 5000,
    });
    const received = receiver.run();
    const parts = Array.from({ length: 48 }, () => randomBytes(64 * 1024));
    const sender = smallChunkSender(source(parts, 2), listening.address, exchange);
    const [sent, got] = await Promise.all([sender.run(), received]);
    await listening.close();
    expect(connections).toBe(2);
    expect(sent.reconnects).toBe(1);
    expect(got.reconnects).toBe(1);
    expect(hash.digest('hex')).toBe(createHash('sha256').update(Buffer.concat(parts)).digest('hex'));
    expect(Math.max(...exchange.fetches.values())).toBe(1);
  });

  it('fails the migration when the sender offers rounds far ahead (the early offers are bounded)', async () => {
    const listening = await listenTcp('127.0.0.1', 0);
    const [host, port] = listening.address.split(':');
    const receiver = new MigrationReceiver({ output: new PassThrough(), accept: () => listening.accept(), retriever: () => new MemoryExchange().retriever(0), resumeDeadlineMs: 5000 });
    const outcome = receiver.run().then(
      () => 'completed',
      (error: Error) => error.message,
    );
    const socket = connect(Number(port), host!);
    await new Promise((r) => socket.once('connect', r));
    socket.on('data', () => undefined);
    socket.on('error', () => undefined);
    const source = Dag.chain(Xid.of(XidType.HID, randomBytes(20))).toString();
    socket.write(encodeMessage({ type: MessageType.HELLO, session: randomBytes(16), mode: 0, source }));
    for (let i = 0; i < 20; i++) socket.write(encodeMessage({ type: MessageType.OFFER, round: 1 + i * 100, chunks: [{ kind: 1, length: 10 }] }));
    let timer: NodeJS.Timeout | undefined;
    const result = await Promise.race([outcome, new Promise((r) => (timer = setTimeout(() => r('hung'), 10_000)))]);
    clearTimeout(timer);
    socket.destroy();
    await listening.close();
    expect(result).toMatch(new RegExp(`more than ${MAX_EARLY_ROUNDS} ahead`));
  });
});

/** V8's collector, asked for at run time (vitest's workers run without --expose-gc). */
function collector(): () => void {
  setFlagsFromString('--expose-gc');
  return runInNewContext('gc') as () => void;
}

describe("the receiver's memory", () => {
  it('lets a chunk go once it is written: nothing keeps a migration\'s chunks for as long as it runs', async () => {
    const gc = collector();
    const exchange = new MemoryExchange();
    // Each fetch brings bytes of its own (as the node's datagrams are), watched for collection.
    const fetched: Array<WeakRef<Buffer>> = [];
    const plain = exchange.retriever(0);
    const retriever: ChunkRetriever = {
      stats: plain.stats,
      fetch: async (cid, length) => {
        const copy = Buffer.concat(await plain.fetch(cid, length));
        fetched.push(new WeakRef(copy));
        return [copy];
      },
    };
    const listening = await listenTcp('127.0.0.1', 0);
    let written = 0;
    const hash = createHash('sha256');
    const output = new Writable({
      write(chunk: Buffer, _e, cb) {
        written += chunk.length;
        hash.update(chunk);
        cb();
      },
    });
    // No cache: what the receiver keeps on purpose is not what this looks for.
    const receiver = new MigrationReceiver({ output, accept: () => listening.accept(), retriever: () => retriever, resumeDeadlineMs: 5000, cacheBytes: 0 });
    const received = receiver.run();
    const input = new PassThrough();
    const sender = smallChunkSender(input, listening.address, exchange);
    const sent = sender.run();
    const parts = Array.from({ length: 32 }, () => randomBytes(64 * 1024));
    for (const part of parts) input.write(part);
    // The migration goes on (its input is still open); what was fetched so far is written.
    while (written < parts.length * 64 * 1024) await new Promise((r) => setTimeout(r, 10));
    for (let i = 0; i < 3; i++) {
      await new Promise((r) => setTimeout(r, 10));
      gc();
    }
    const alive = fetched.filter((ref) => ref.deref() !== undefined).length;
    input.end();
    await Promise.all([sent, received]);
    await listening.close();
    expect(fetched.length).toBe(parts.length);
    expect(hash.digest('hex')).toBe(createHash('sha256').update(Buffer.concat(parts)).digest('hex'));
    // The last chunk written may still be in the writer's hands; the other 31 must be gone.
    expect(alive).toBeLessThanOrEqual(1);
  });
});

describe('the receiver when the migration fails', () => {
  it("fails at once on the sender's ERROR, even while a fetch hangs, and cancels its fetches", async () => {
    const listening = await listenTcp('127.0.0.1', 0);
    const [host, port] = listening.address.split(':');
    let cancelled = 0;
    let started = 0;
    // A fetch that never ends by itself (the sender stopped serving: it failed).
    const hanging: ChunkRetriever = {
      stats: { fetched: 0, corrupt: 0, bytes: 0 },
      fetch: () => {
        started++;
        return new Promise<ChunkBytes>(() => undefined);
      },
      cancel: () => void cancelled++,
    };
    const receiver = new MigrationReceiver({ output: new PassThrough(), accept: () => listening.accept(), retriever: () => hanging, resumeDeadlineMs: 60_000 });
    const outcome = receiver.run().then(
      () => 'completed',
      (error: Error) => error.message,
    );
    const socket = connect(Number(port), host!);
    await new Promise((r) => socket.once('connect', r));
    socket.on('data', () => undefined);
    socket.on('error', () => undefined);
    const source = Dag.chain(Xid.of(XidType.HID, randomBytes(20))).toString();
    socket.write(encodeMessage({ type: MessageType.HELLO, session: randomBytes(16), mode: 0, source }));
    socket.write(encodeMessage({ type: MessageType.OFFER, round: 0, chunks: [{ kind: ChunkKind.FETCH, length: 10, cid: randomBytes(20) }] }));
    await new Promise<void>((resolve) => {
      const check = (): void => (started > 0 ? resolve() : void setTimeout(check, 10));
      check();
    });
    socket.write(encodeMessage({ type: MessageType.ERROR, message: 'the send client went away' }));
    // Nothing times out in 30 s here: without the failure racing the fetch, this waits forever.
    let timer: NodeJS.Timeout | undefined;
    const result = await Promise.race([outcome, new Promise((r) => (timer = setTimeout(() => r('hung'), 20_000)))]);
    clearTimeout(timer);
    socket.destroy();
    await listening.close();
    expect(result).toBe('sender: the send client went away');
    expect(cancelled).toBe(1);
  });
});

describe('control connection keepalive', () => {
  it('says KEEPALIVE when idle, and the other side never sees it as a message', async () => {
    const listening = await listenTcp('127.0.0.1', 0);
    const [host, port] = listening.address.split(':');
    const client = await connectTcp(host!, Number(port))();
    const server = await listening.accept();
    const raw: ControlMessage[] = [];
    const reader = new MessageReader();
    server.on('data', (d: Buffer) => raw.push(...reader.push(d)));
    const delivered: ControlMessage[] = [];
    const receiving = new ControlChannel(new PassThrough() as Duplex, (m) => delivered.push(m));
    const channel = new ControlChannel(client, () => undefined);
    channel.keepAlive(40);
    await expect.poll(() => raw.filter((m) => m.type === MessageType.KEEPALIVE).length).toBeGreaterThanOrEqual(3);
    // What arrives through a channel: KEEPALIVEs are swallowed, the rest passes.
    receiving.stream.write(Buffer.concat([encodeMessage({ type: MessageType.KEEPALIVE }), encodeMessage({ type: MessageType.ACK, round: 3 })]));
    await new Promise((r) => setImmediate(r));
    expect(delivered).toEqual([{ type: MessageType.ACK, round: 3 }]);
    channel.close('done');
    receiving.close('done');
    server.destroy();
    await listening.close();
  });
});

describe('SendWindow', () => {
  it('is 16 MiB until it knows the path, then twice its rate times its shortest round, within bounds', () => {
    const window = new SendWindow({ floorBytes: 16 << 20, capBytes: 256 << 20 });
    expect(window.bytes).toBe(16 << 20);
    // 4 MiB rounds acknowledged every 100 ms, each 400 ms after it was offered: 40 MiB/s, 0.4 s.
    for (let t = 0; t <= 2000; t += 100) window.acked(4 << 20, t - 400, t);
    expect(window.bytes / (2 * ((4 << 20) / 100) * 400)).toBeCloseTo(1, 1);
    // A fast short path stays at the floor; an enormous one stops at the cap.
    const lan = new SendWindow({ floorBytes: 16 << 20, capBytes: 256 << 20 });
    for (let t = 0; t <= 2000; t += 10) lan.acked(4 << 20, t - 5, t);
    expect(lan.bytes).toBe(16 << 20);
    const huge = new SendWindow({ floorBytes: 16 << 20, capBytes: 256 << 20 });
    for (let t = 0; t <= 20000; t += 100) huge.acked(64 << 20, t - 5000, t);
    expect(huge.bytes).toBe(256 << 20);
  });

  /**
   * The sender and its window in a closed loop with a path of `rate` and `baseMs` (offer
   * to fetched, queue aside), QEMU always ahead: rounds are offered whenever the window has
   * room and served one after another. Returns the largest window it reached and the
   * share of the path's rate it kept.
   */
  function closedLoop(rateMiBs: number, baseMs: number, seconds: number): { maxWindow: number; keptRate: number } {
    const window = new SendWindow({ floorBytes: 16 << 20, capBytes: 256 << 20 });
    const round = 4 << 20;
    const perMs = (rateMiBs * 1048576) / 1000;
    const queue: Array<{ offeredAt: number; doneAt: number }> = [];
    let unacked = 0;
    let lastDone = 0;
    let acked = 0;
    let maxWindow = 0;
    for (let now = 0; now < seconds * 1000; ) {
      while (unacked + round <= window.bytes) {
        const doneAt = Math.max(lastDone, now + baseMs) + round / perMs;
        queue.push({ offeredAt: now, doneAt });
        lastDone = doneAt;
        unacked += round;
      }
      maxWindow = Math.max(maxWindow, window.bytes);
      const next = queue.shift()!;
      now = next.doneAt;
      window.acked(round, next.offeredAt, now);
      unacked -= round;
      acked += round;
    }
    return { maxWindow, keptRate: acked / (seconds * 1000) / perMs };
  }

  it('holds no more than the path drains in a second beyond the floor, however long its own queue makes the rounds', () => {
    // A loaded machine's path, 6 MiB/s: the queue the window makes must not grow the window
    // (it grew to the 256 MiB cap: a 28 s downtime in the lab, QEMU saying 139 ms).
    const slow = closedLoop(6, 20, 120);
    expect(slow.maxWindow).toBeLessThanOrEqual(Math.max(16 << 20, 6 * 1048576 * (DRAIN_MS / 1000)));
    expect(slow.keptRate).toBeGreaterThan(0.95);
    // A fast LAN: the window still keeps it busy.
    const lan = closedLoop(200, 2, 30);
    expect(lan.maxWindow).toBeLessThanOrEqual(200 * 1048576 * (DRAIN_MS / 1000));
    expect(lan.keptRate).toBeGreaterThan(0.95);
    // A long path (400 ms, 40 MiB/s: 16 MiB in flight) is kept busy too.
    const long = closedLoop(40, 400, 60);
    expect(long.keptRate).toBeGreaterThan(0.9);
  });
});
