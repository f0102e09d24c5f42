/**
 * Publishers count the offered chunks that share a CID: the same bytes may come in
 * two rounds (QEMU sends a page pattern twice), and acknowledging the first must not
 * unpublish what the second is still being fetched for. (Seen over UDP: a stream of
 * one repeated MiB stalled 30 s on a chunk its sender had already dropped.)
 */
import { randomBytes } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { LocalNodeApi } from '../xianet/api/local-api.js';
import { InProcessNetwork, INTRA_AD } from '../xianet/topology.js';
import { Dag } from '../shared/dag.js';
import { Xid, XidType } from '../shared/xid.js';
import type { NodeApi } from '../xianet/api/node-api.js';
import { DEFAULT_API_LIMITS } from '../xianet/api/api-limits.js';
import { RETRIEVER_BYTES_IN_FLIGHT, XiaPublisher, XiaRetriever } from './chunk-exchange.js';
import { createHash } from 'node:crypto';
import { PassThrough, Writable } from 'node:stream';
import { connectTcp, listenTcp } from './connections.js';
import { MigrationReceiver } from './receiver.js';
import { MigrationSender } from './sender.js';

let network: InProcessNetwork | undefined;
afterEach(async () => {
  await network?.stop();
  network = undefined;
});

describe('XiaPublisher', () => {
  it('keeps a CID published until every chunk that has it is dropped; release() frees the rest', async () => {
    network = new InProcessNetwork(INTRA_AD, { beaconIntervalMs: 50, helloIntervalMs: 200 });
    await network.start();
    const api = new LocalNodeApi(network.stack('A'));
    const store = network.stack('A').chunks;
    const publisher = new XiaPublisher(api);
    const same = randomBytes(4096);
    const [first] = await publisher.publish([same]);
    const [second] = await publisher.publish([same]);
    expect(second!.equals(first!)).toBe(true);
    await publisher.drop([first!]);
    expect(store.published.chunks).toBe(1);
    await publisher.drop([second!]);
    expect(store.published.chunks).toBe(0);
    // Dropping again (a repeated ACK) does nothing.
    await publisher.drop([second!]);
    await publisher.publish([randomBytes(4096), randomBytes(4096), same]);
    expect(store.published.chunks).toBe(3);
    await publisher.release();
    expect(store.published.chunks).toBe(0);
    await api.close();
  });
});

describe('XiaRetriever', () => {
  /** A node API whose chunk fetches end when the test says, recording what was asked at once. */
  function slowApi(): { api: NodeApi; asked: Array<{ length: number; end: () => void }>; peak: () => number } {
    const asked: Array<{ length: number; end: () => void }> = [];
    let open = 0;
    let peak = 0;
    const api = {
      fetchChunk: (_cid: Xid, _source: Dag, options: { length?: number; signal?: AbortSignal }) =>
        new Promise<Buffer>((resolve, reject) => {
          const length = options.length!;
          open += length;
          peak = Math.max(peak, open);
          options.signal?.addEventListener('abort', () => reject(new Error('aborted')), { once: true });
          asked.push({ length, end: () => ((open -= length), resolve(Buffer.alloc(length))) });
        }),
    } as unknown as NodeApi;
    return { api, asked, peak: () => peak };
  }

  it('asks its node for at most its bytes in flight, in the order asked, whatever the window offered', async () => {
    const { api, asked, peak } = slowApi();
    const mib = 1 << 20;
    const retriever = new XiaRetriever(api, Dag.chain(Xid.of(XidType.HID, randomBytes(20))), 8 * mib);
    // A 40 MiB window offered at once: 40 chunks asked for by the receiver.
    const fetches = Array.from({ length: 40 }, (_, i) => retriever.fetch(Buffer.alloc(20, i), mib));
    await new Promise((r) => setImmediate(r));
    expect(asked.length).toBe(8);
    for (let done = 0; done < 40; done++) {
      asked[done]!.end();
      await fetches[done];
      await new Promise((r) => setImmediate(r));
      // Each one back lets exactly one more go, the next in order.
      expect(asked.length).toBe(Math.min(40, done + 9));
    }
    expect(peak()).toBe(8 * mib);
    // Cancelled: whatever waits for room fails at once instead of being asked for.
    const more = Array.from({ length: 12 }, (_, i) => retriever.fetch(Buffer.alloc(20, i), mib).catch((e: unknown) => e));
    await new Promise((r) => setImmediate(r));
    retriever.cancel();
    const outcomes = await Promise.all(more);
    expect(outcomes.every((o) => o instanceof Error)).toBe(true);
    expect(asked.length).toBe(48);
  });

  it('keeps what the node may queue toward it under the API\'s disconnect bound', () => {
    // Replies to the fetches in flight, plus what queued before the node stopped reading (its soft bound), with room for frame headers.
    expect(RETRIEVER_BYTES_IN_FLIGHT + DEFAULT_API_LIMITS.writeSoftBytes + (1 << 20)).toBeLessThan(DEFAULT_API_LIMITS.writeHardBytes);
  });
});

describe('XiaRetriever in the node: memory lent to the fetcher, filled again', () => {
  it('moves a stream with repeated chunks intact, each slot given back once written and out of the cache', async () => {
    network = new InProcessNetwork(INTRA_AD, { beaconIntervalMs: 50, helloIntervalMs: 200 });
    await network.start();
    await network.ready();
    const sendApi = new LocalNodeApi(network.stack('A'));
    const recvApi = new LocalNodeApi(network.stack('B'));
    const mib = 1 << 20;
    // 48 chunks of 1 MiB; every fourth repeats the one three before it, long after it was
    // written (from the cache, or from a fetch of the same CID still running): a slot
    // filled again too early would show as a wrong digest.
    const chunks: Buffer[] = [];
    for (let i = 0; i < 48; i++) chunks.push(i % 4 === 3 ? chunks[i - 3]! : randomBytes(mib));
    const data = Buffer.concat(chunks);
    const hash = createHash('sha256');
    const output = new Writable({
      highWaterMark: 8 * mib,
      // Reads what it was given later, as a pipe's writes do, and slowly enough that chunks pile up behind the fetches.
      write(chunk: Buffer, _encoding, callback) {
        setTimeout(() => {
          hash.update(chunk);
          callback();
        }, 5);
      },
    });
    const retriever = new XiaRetriever(recvApi, (await sendApi.info()).address, 8 * mib);
    const listening = await listenTcp('127.0.0.1', 0);
    const [host, port] = listening.address.split(':');
    const receiver = new MigrationReceiver({ output, accept: () => listening.accept(), retriever: () => retriever, resumeDeadlineMs: 10_000, cacheBytes: 4 * mib });
    const received = receiver.run();
    const input = new PassThrough();
    input.end(data);
    const sender = new MigrationSender({
      input,
      connect: connectTcp(host!, Number(port)),
      publisher: new XiaPublisher(sendApi),
      mode: 'xia',
      source: (await sendApi.info()).address.toString(),
      chunkBytes: mib,
      roundBytes: 4 * mib,
      resumeDeadlineMs: 10_000,
    });
    const [, got] = await Promise.all([sender.run(), received]);
    expect(hash.digest('hex')).toBe(createHash('sha256').update(data).digest('hex'));
    expect(got.cachedChunks + got.chunks).toBeGreaterThan(0);
    const memory = retriever.memory!;
    // Slots were filled again, never more than the fetches in flight and the chunks written or cached at once.
    expect(memory.stats.reused).toBeGreaterThan(0);
    expect(memory.stats.allocated).toBeLessThan(48);
    // What is still lent is what the cache holds (4 MiB: 4 chunks), no more.
    expect(memory.lent).toBeLessThanOrEqual(4);
    await listening.close();
    await sendApi.close();
    await recvApi.close();
  }, 60_000);
});
