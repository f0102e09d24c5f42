/**
 * The batched send path when the kernel says EAGAIN (the socket's send buffer is full):
 * what sendmmsg did not take goes to node:dgram, which queues it in libuv until the socket
 * is writable — nothing dropped, nothing reordered, each hand-over counted — and while
 * node:dgram still holds some, later batches queue behind them. A full send buffer is not
 * something loopback produces on demand (it delivers at once), so the real addon sends
 * and this wrapper around it answers EAGAIN where a full buffer would: after the first
 * message of a flush, for the first `eagains` flushes. (What this does not reach: a flush
 * while node:dgram still holds datagrams — on loopback node:dgram's queue is empty again at
 * once, since the loopback device frees the sender's buffer as it delivers.)
 */
import { createSocket, type Socket } from 'node:dgram';
import { afterEach, describe, expect, it } from 'vitest';
import { UdpBatcher, udpBatchAddon, type UdpBatchAddon, type UdpBatchStats } from './udp-batch.js';

const { addon, reason } = udpBatchAddon();
if (!addon) console.warn(`udp-batch-eagain.test: SKIPPING: ${reason} (npm ci builds the addon: native/udp-batch/build.js)`);

const sockets: Socket[] = [];
afterEach(() => {
  for (const s of sockets.splice(0)) s.close();
});

async function bound(): Promise<Socket> {
  const socket = createSocket('udp4');
  sockets.push(socket);
  await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
  socket.setRecvBufferSize(4 << 20);
  return socket;
}

/** The real addon, but a flush's second sendmmsg call fails with EAGAIN (for the first `eagains` flushes), its first sends one message. */
function filling(real: UdpBatchAddon, eagains: number): UdpBatchAddon & { refused: number } {
  let callInFlush = 0;
  let lastFirst = -1;
  const wrapper = {
    refused: 0,
    constants: real.constants,
    sockaddr: (host: string, port: number) => real.sockaddr(host, port),
    sendBatch(fd: number, addrs: Buffer[], segments: number[], iovCounts: number[], buffers: Buffer[], first: number, count: number): number {
      if (first === 0 && first !== lastFirst) callInFlush = 0;
      lastFirst = first;
      callInFlush++;
      if (wrapper.refused < eagains && callInFlush === 2) {
        wrapper.refused++;
        return -real.constants.EAGAIN;
      }
      return real.sendBatch(fd, addrs, segments, iovCounts, buffers, first, wrapper.refused < eagains ? 1 : count);
    },
  };
  return wrapper;
}

describe.skipIf(!addon)('UdpBatcher on EAGAIN', () => {
  it('hands what the kernel did not take to node:dgram, in order and counted, and batches again afterwards', async () => {
    const sender = await bound();
    const receivers = [await bound(), await bound()];
    const got: number[][] = [[], []];
    receivers.forEach((r, k) => r.on('message', (m) => got[k]!.push(m.readUInt32BE(0))));
    const stats: UdpBatchStats = { sendErrors: 0, batchFallbacks: 0, batchedDatagrams: 0, batchCalls: 0 };
    const wrapped = filling(addon!, 2);
    const batcher = new UdpBatcher(wrapped, sender, stats, () => undefined);
    const sent: number[][] = [[], []];
    let n = 0;
    // Three flushes of mixed sizes to two neighbours: the first two meet EAGAIN after one message.
    for (let flush = 0; flush < 3; flush++) {
      for (let i = 0; i < 40; i++) {
        const k = i % 2;
        const p = Buffer.alloc(i % 5 === 0 ? 300 : 1200);
        p.writeUInt32BE(n, 0);
        sent[k]!.push(n++);
        expect(batcher.enqueue(p, p.length, receivers[k]!.address().port, '127.0.0.1')).toBe(true);
      }
      await new Promise((resolve) => setImmediate(resolve));
    }
    for (let k = 0; k < 2; k++) await expect.poll(() => got[k]!.length, { timeout: 10_000 }).toBe(sent[k]!.length);
    expect(got).toEqual(sent);
    expect(wrapped.refused).toBe(2);
    expect(stats.batchFallbacks).toBeGreaterThan(0);
    expect(stats.batchedDatagrams + stats.batchFallbacks).toBe(120);
    expect(stats.sendErrors).toBe(0);
    // The third flush met no EAGAIN: its 40 packets went in batches again, not one by one.
    expect(stats.batchedDatagrams).toBeGreaterThanOrEqual(42);
  });
});
