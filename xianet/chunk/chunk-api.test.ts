/**
 * Chunk fetches through the application API end with their requester: a client that
 * cancels, or goes away, leaves nothing being fetched in the node. (A lossy run that
 * failed used to leave every fetch of the dead recv retrying inside host B's node,
 * which then took over a minute per chunk for the next transfer.)
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { NodeClient } from '../api/api-client.js';
import { ApiServer } from '../api/api-server.js';
import { LocalNodeApi } from '../api/local-api.js';
import { InProcessNetwork, INTER_AD } from '../topology.js';
import { waitFor } from '../../test/support/wait.js';
import { connect } from 'node:net';
import { encodeFrameParts, FrameDecoder, type Header } from '../api/api-frames.js';
import { toWire } from '../api/api-json.js';

const dir = mkdtempSync(join(tmpdir(), 'xmig-chunk-api-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
let network: InProcessNetwork | undefined;
const closers: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c();
  await network?.stop();
  network = undefined;
});

async function setup(): Promise<{ net: InProcessNetwork; api: LocalNodeApi; path: string }> {
  network = new InProcessNetwork(INTER_AD, { beaconIntervalMs: 50, helloIntervalMs: 200, mtu: 1500 });
  await network.start();
  await network.ready();
  const api = new LocalNodeApi(network.stack('C'));
  const server = new ApiServer(api, join(dir, `C-${Math.random()}.sock`));
  await server.start();
  closers.push(async () => {
    await server.stop();
    await api.close();
  });
  return { net: network, api, path: server.path };
}

describe('chunk-get through the API', () => {
  it('fetches with a known length, and cancels on the caller\'s signal', async () => {
    const { net, api, path } = await setup();
    const client = await NodeClient.connect(path);
    closers.push(() => client.close());
    const data = randomBytes(300_000);
    const cid = net.stack('B').chunks.publish(data);
    const got = await client.fetchChunk(cid, net.stack('B').node.address(), { length: data.length });
    expect(got.equals(data)).toBe(true);

    const stuck = net.stack('B').chunks.publish(randomBytes(300_000));
    net.segment('seg-C').impairments = { down: true };
    const controller = new AbortController();
    const fetching = client.fetchChunk(stuck, net.stack('B').node.address(), { signal: controller.signal });
    await waitFor(() => (api.chunkFetcher?.outstanding.fetches ?? 0) > 0, 5000, 'the fetch to start');
    controller.abort();
    await expect(fetching).rejects.toMatchObject({ code: 'ERR_CHUNK' });
    await waitFor(() => api.chunkFetcher!.outstanding.fetches === 0, 5000, 'the node to stop fetching');
    expect(api.chunkFetcher!.outstanding).toMatchObject({ inFlight: 0, inflightBytes: 0 });
  });

  it('cancels every fetch of a client that goes away', async () => {
    const { net, api, path } = await setup();
    const client = await NodeClient.connect(path);
    const cids = Array.from({ length: 8 }, () => net.stack('B').chunks.publish(randomBytes(200_000)));
    net.segment('seg-C').impairments = { down: true };
    const fetches = cids.map((cid) => client.fetchChunk(cid, net.stack('B').node.address()).catch((e: unknown) => e));
    await waitFor(() => api.chunkFetcher?.outstanding.fetches === 8, 5000, 'eight fetches');
    await client.close();
    for (const result of await Promise.all(fetches)) expect(result).toMatchObject({ code: 'ERR_CONNECTION' });
    await waitFor(() => api.chunkFetcher!.outstanding.fetches === 0, 5000, 'the node to stop fetching');
    expect(api.chunkFetcher!.outstanding).toMatchObject({ inFlight: 0, inflightBytes: 0 });
  });
});

describe('chunk-get replies assembled in memory the session fills again', () => {
  it('never fills a slot whose reply the client has not read yet', async () => {
    const { net, api, path } = await setup();
    const chunks = Array.from({ length: 24 }, () => randomBytes(256 * 1024));
    const cids = chunks.map((chunk) => net.stack('B').chunks.publish(chunk));
    const source = net.stack('B').node.address();
    // A raw client that asks and does not read: the replies wait in the node's socket.
    const socket = connect(path);
    await new Promise((resolve) => socket.once('connect', resolve));
    socket.pause();
    const decoder = new FrameDecoder();
    const replies = new Map<number, Buffer>();
    socket.on('data', (data: Buffer) => {
      for (const frame of decoder.push(data).frames) replies.set(frame.header['id'] as number, frame.body);
    });
    const ask = (from: number, to: number): void => {
      for (let i = from; i < to; i++) {
        const header = toWire({ op: 'chunk-get', id: i, cid: cids[i], source, length: chunks[i]!.length }) as Header;
        for (const part of encodeFrameParts(header)) socket.write(part);
      }
    };
    // Half of them fetched and queued unread; then the rest, while the first half still waits.
    ask(0, 12);
    await waitFor(() => api.chunkFetcher?.stats.verified === 12, 10_000, 'the first twelve');
    ask(12, 24);
    await waitFor(() => api.chunkFetcher?.stats.verified === 24, 10_000, 'all twenty-four');
    socket.resume();
    await waitFor(() => replies.size === 24, 10_000, 'every reply read');
    chunks.forEach((chunk, i) => expect(replies.get(i)!.equals(chunk), `chunk ${i}`).toBe(true));
    socket.destroy();
  });
});
