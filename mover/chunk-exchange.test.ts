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
import { XiaPublisher } from './chunk-exchange.js';

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
