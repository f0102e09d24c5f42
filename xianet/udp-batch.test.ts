import { createSocket, type Socket } from 'node:dgram';
import fc from 'fast-check';
import { afterEach, describe, expect, it } from 'vitest';
import { MAX_RUN_BYTES, MAX_SEGMENTS, splitRuns, udpBatchAddon } from './udp-batch.js';
import { UdpLink } from './udp-link.js';

const { addon, reason } = udpBatchAddon();
if (!addon) console.warn(`udp-batch.test: SKIPPING the addon cases: ${reason} (npm ci builds it: native/udp-batch/build.js)`);

describe('splitRuns', () => {
  it('cuts any queue into GSO runs: in order, each packet once, equal sizes then at most one shorter, within the limits', () => {
    const sizes = fc.array(fc.oneof(fc.constant(1472), fc.constant(1000), fc.integer({ min: 1, max: 1472 })), { maxLength: 400 });
    fc.assert(
      fc.property(sizes, fc.integer({ min: 1, max: 80 }), fc.integer({ min: 1472, max: MAX_RUN_BYTES }), fc.boolean(), (queue, maxSegments, maxBytes, gso) => {
        const runs = splitRuns(queue, maxSegments, maxBytes, gso);
        let next = 0;
        for (const run of runs) {
          expect(run.start).toBe(next);
          expect(run.end).toBeGreaterThan(run.start);
          next = run.end;
          const part = queue.slice(run.start, run.end);
          if (part.length === 1) {
            expect(run.segment).toBe(0);
            continue;
          }
          expect(gso).toBe(true);
          expect(part.length).toBeLessThanOrEqual(maxSegments);
          expect(part.reduce((a, b) => a + b, 0)).toBeLessThanOrEqual(maxBytes);
          // The kernel cuts at `segment`: every packet but the last is exactly that, the last no larger.
          expect(part.slice(0, -1).every((s) => s === run.segment)).toBe(true);
          expect(part.at(-1)!).toBeLessThanOrEqual(run.segment);
        }
        expect(next).toBe(queue.length);
      }),
    );
  });

  it('takes 64 full packets per run at most, and a shorter one as its last', () => {
    const runs = splitRuns([...Array<number>(100).fill(1472), 200, 1472]);
    expect(runs.map((r) => [r.end - r.start, r.segment])).toEqual([
      [44, 1472], // 44 x 1472 = 64768 bytes: the next would pass 65507
      [44, 1472],
      [13, 1472], // 12 full and the 200-byte one
      [1, 0],
    ]);
    expect(splitRuns(Array<number>(70).fill(100)).map((r) => r.end - r.start)).toEqual([MAX_SEGMENTS, 6]);
  });
});

const links: UdpLink[] = [];
const sockets: Socket[] = [];
afterEach(async () => {
  for (const l of links.splice(0)) await l.stop();
  for (const s of sockets.splice(0)) s.close();
});

/** A plain socket as the receiver: it sees the datagrams as the wire has them, one message each. */
async function receiver(host: string): Promise<{ port: number; got: Buffer[] }> {
  const socket = createSocket(host.includes(':') ? 'udp6' : 'udp4');
  sockets.push(socket);
  const got: Buffer[] = [];
  socket.on('message', (m) => got.push(m));
  await new Promise<void>((resolve) => socket.bind(0, host, resolve));
  socket.setRecvBufferSize(4 << 20);
  return { port: socket.address().port, got };
}

function packet(size: number, n: number): Buffer {
  const b = Buffer.alloc(size, n & 0xff);
  b.writeUInt32BE(n, 0);
  return b;
}

describe.each([
  ['addon', true],
  ['node:dgram fallback', false],
] as const)('UdpLink batches over %s', (name, batch) => {
  const run = batch && !addon ? it.skip : it;

  run.each(['127.0.0.1', '::1'])('delivers equal and mixed sizes, headers with tails, as exactly the datagrams sent, in order, none over the MTU (%s)', async (host) => {
    const link = new UdpLink({ name, bindAddress: host, port: 0, mtu: 1500, batch, socketBufferBytes: 4 << 20 });
    links.push(link);
    await link.start();
    const mtu = link.mtu;
    expect(mtu).toBe(host === '::1' ? 1452 : 1472);
    const { port, got } = await receiver(host);
    const to = host === '::1' ? `[::1]:${port}` : `${host}:${port}`;
    const sent: Buffer[] = [];
    let n = 0;
    // Batches small enough for the receive buffer; each awaited, so a loaded machine drops nothing.
    const batches = [
      Array<number>(100).fill(mtu), // two full GSO runs and a short one
      [...Array<number>(30).fill(mtu), 17, ...Array<number>(20).fill(1000), mtu, 4], // a shorter one ends a run, a longer one starts one
      Array.from({ length: 60 }, (_, i) => 8 + ((i * 37) % (mtu - 8))), // every size different: single datagrams
    ];
    for (const sizes of batches) {
      for (const size of sizes) {
        const p = packet(size, n++);
        sent.push(p);
        if (size > 40 && n % 3 === 0) link.send(p.subarray(0, 20), to, p.subarray(20)); // header + tail: two iovecs
        else link.send(p, to);
      }
      await expect.poll(() => got.length, { timeout: 10_000 }).toBe(sent.length);
    }
    expect(got.every((d) => d.length <= mtu)).toBe(true);
    expect(got.map((d) => d.length)).toEqual(sent.map((d) => d.length));
    expect(Buffer.concat(got).equals(Buffer.concat(sent))).toBe(true);
    expect(link.stats.sendErrors).toBe(0);
    if (batch) {
      // Batched: far fewer system calls than datagrams.
      expect(link.stats.batchedDatagrams + link.stats.batchFallbacks).toBe(sent.length);
      expect(link.stats.batchCalls).toBeLessThan(sent.length / 10);
    } else {
      expect(link.stats.batchCalls).toBe(0);
    }
  });

  run('sends to several neighbours in one flush, each in its own order', async () => {
    const link = new UdpLink({ name, bindAddress: '127.0.0.1', port: 0, mtu: 1500, batch, socketBufferBytes: 4 << 20 });
    links.push(link);
    await link.start();
    const peers = await Promise.all([receiver('127.0.0.1'), receiver('127.0.0.1'), receiver('127.0.0.1')]);
    const sent: Buffer[][] = [[], [], []];
    for (let i = 0; i < 150; i++) {
      const k = i % 3;
      const p = packet(i % 7 === 0 ? 300 : link.mtu, i);
      sent[k]!.push(p);
      link.send(p, `127.0.0.1:${peers[k]!.port}`);
    }
    for (let k = 0; k < 3; k++) {
      await expect.poll(() => peers[k]!.got.length, { timeout: 10_000 }).toBe(50);
      expect(Buffer.concat(peers[k]!.got).equals(Buffer.concat(sent[k]!))).toBe(true);
    }
  });

  run('sends a run as the packets it holds, in order among packets queued around it, cut to GSO limits', async () => {
    const link = new UdpLink({ name, bindAddress: '127.0.0.1', port: 0, mtu: 1500, batch, socketBufferBytes: 4 << 20 });
    links.push(link);
    await link.start();
    const { port, got } = await receiver('127.0.0.1');
    const to = `127.0.0.1:${port}`;
    const stride = link.mtu;
    let n = 0;
    const sent: Buffer[] = [];
    const single = (size: number): void => {
      const p = packet(size, n++);
      sent.push(p);
      link.send(p, to);
    };
    const runOf = (count: number, last: number): void => {
      const packets = Array.from({ length: count }, (_, i) => packet(i === count - 1 ? last : stride, n++));
      sent.push(...packets);
      link.sendRun(Buffer.concat(packets), stride, to);
    };
    single(stride);
    runOf(30, 200); // one GSO message
    single(300);
    runOf(100, stride); // past 64 segments and 65507 bytes: cut
    single(stride);
    await expect.poll(() => got.length, { timeout: 10_000 }).toBe(sent.length);
    expect(got.map((d) => d.length)).toEqual(sent.map((d) => d.length));
    expect(Buffer.concat(got).equals(Buffer.concat(sent))).toBe(true);
    expect(link.stats.sendErrors).toBe(0);
    if (batch) {
      expect(link.stats.runsSent).toBe(2);
      expect(link.stats.batchedDatagrams + link.stats.batchFallbacks).toBe(sent.length);
      expect(link.stats.batchCalls).toBeLessThan(5);
    } else {
      expect(link.stats.runsSent).toBe(0);
      expect(link.stats.dgramPackets).toBe(sent.length);
    }
  });

  run('sends a run packet by packet through an impairment, which decides for each', async () => {
    const link = new UdpLink({ name, bindAddress: '127.0.0.1', port: 0, mtu: 1500, batch, impairment: { lossRate: 0.5, seed: 7 } });
    links.push(link);
    await link.start();
    const { port, got } = await receiver('127.0.0.1');
    link.sendRun(Buffer.concat(Array.from({ length: 40 }, (_, i) => packet(link.mtu, i))), link.mtu, `127.0.0.1:${port}`);
    const counters = link.impairment!.counters;
    await expect.poll(() => got.length, { timeout: 10_000 }).toBe(counters.sent);
    expect(counters.lost).toBeGreaterThan(0);
    expect(counters.sent + counters.lost).toBe(40);
    expect(link.stats.runsSent).toBe(0);
  });

  run('batches what an impairment lets through (delayed, duplicated), and counts it as before', async () => {
    const link = new UdpLink({ name, bindAddress: '127.0.0.1', port: 0, mtu: 1500, batch, impairment: { delayMs: 5, duplicateRate: 0.1, seed: 3 } });
    links.push(link);
    await link.start();
    const { port, got } = await receiver('127.0.0.1');
    for (let i = 0; i < 50; i++) link.send(packet(link.mtu, i), `127.0.0.1:${port}`);
    const counters = link.impairment!.counters;
    await expect.poll(() => counters.sent, { timeout: 10_000 }).toBe(50 + counters.duplicated);
    await expect.poll(() => got.length, { timeout: 10_000 }).toBe(counters.sent);
    expect(counters.duplicated).toBeGreaterThan(0);
    expect(new Set(got.map((d) => d.readUInt32BE(0))).size).toBe(50);
  });
});

describe('UdpLink without a numeric address', () => {
  it('sends to a neighbour given by name through node:dgram, batching or not', async () => {
    const link = new UdpLink({ name: 'by-name', bindAddress: '127.0.0.1', port: 0 });
    links.push(link);
    await link.start();
    const { port, got } = await receiver('127.0.0.1');
    link.send(Buffer.from('one'), `localhost:${port}`);
    link.send(Buffer.from('two'), `127.0.0.1:${port}`);
    await expect.poll(() => got.length, { timeout: 10_000 }).toBe(2);
    expect(got.map(String).sort()).toEqual(['one', 'two']);
  });
});

describe('the addon refuses bad arguments at its boundary', () => {
  const run = addon ? it : it.skip;
  run('a missing argument is a TypeError naming the call, a value that is not a number an Error, and nothing is done', () => {
    const calls = {
      enableGro: (...args: unknown[]) => (addon!.enableGro as (...a: unknown[]) => number)(...args),
      forceBuffers: (...args: unknown[]) => (addon!.forceBuffers as (...a: unknown[]) => number)(...args),
      keepFreedMemory: (...args: unknown[]) => (addon!.keepFreedMemory as (...a: unknown[]) => number)(...args),
      pipeCapacity: (...args: unknown[]) => (addon!.pipeCapacity as (...a: unknown[]) => number)(...args),
    };
    const refusal = (call: () => unknown): { name: string; message: string; code: unknown } => {
      try {
        call();
      } catch (error) {
        const e = error as Error & { code?: unknown };
        return { name: e.name, message: e.message, code: e.code };
      }
      throw new Error('it did not throw');
    };
    expect(refusal(() => calls.enableGro())).toEqual({ name: 'TypeError', message: 'enableGro(fd)', code: 'ERR_UDP_BATCH' });
    expect(refusal(() => calls.forceBuffers(3))).toEqual({ name: 'TypeError', message: 'forceBuffers(fd, bytes)', code: 'ERR_UDP_BATCH' });
    expect(refusal(() => calls.keepFreedMemory())).toEqual({ name: 'TypeError', message: 'keepFreedMemory(bytes)', code: 'ERR_UDP_BATCH' });
    expect(refusal(() => calls.pipeCapacity(3))).toEqual({ name: 'TypeError', message: 'pipeCapacity(fd, bytes)', code: 'ERR_UDP_BATCH' });
    for (const call of [() => calls.enableGro('3'), () => calls.forceBuffers(3, 'big'), () => calls.keepFreedMemory({}), () => calls.pipeCapacity(null, 0)]) {
      expect(refusal(call)).toEqual({ name: 'Error', message: 'udp-batch: bad argument', code: 'ERR_UDP_BATCH' });
    }
    // Numbers of the right kind still work: an fd that is no socket or pipe is -errno, not a throw.
    expect(calls.enableGro(-1)).toBeLessThan(0);
    expect(calls.pipeCapacity(2 ** 30, 0)).toBeLessThan(0);
  });
});
