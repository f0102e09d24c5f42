import { randomBytes } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { MalformedPacketError, XmigError } from '../../shared/errors.js';
import { Xid, XidType } from '../../shared/xid.js';
import { InProcessNetwork, INTER_AD } from '../topology.js';
import { ChunkCache } from './chunk-cache.js';
import { ChunkFetcher } from './chunk-fetcher.js';
import { ChunkOp, decodeChunkMessage } from './chunk-messages.js';
import { cidKey } from './chunk-service.js';
import { TransportType } from '../transport-header.js';
import { xipHeaderLengthOf } from '../../shared/xip-header.js';

let network: InProcessNetwork | undefined;
const fetchers: ChunkFetcher[] = [];
afterEach(async () => {
  for (const f of fetchers.splice(0)) f.stop();
  await network?.stop();
  network = undefined;
});

async function build(mtu?: number): Promise<InProcessNetwork> {
  network = new InProcessNetwork(INTER_AD, { beaconIntervalMs: 50, helloIntervalMs: 200, mtu });
  await network.start();
  await network.ready();
  return network;
}

function fetcherOn(net: InProcessNetwork, name: string): ChunkFetcher {
  const fetcher = new ChunkFetcher(net.stack(name).node);
  fetcher.start();
  fetchers.push(fetcher);
  return fetcher;
}

describe('ChunkCache', () => {
  it('evicts least recently used chunks to stay within its bytes, in O(1)', () => {
    const cache = new ChunkCache(1000, 1 / 2);
    const evicted: string[] = [];
    cache.onEvict = (k) => evicted.push(k);
    cache.put('a', Buffer.alloc(400));
    cache.put('b', Buffer.alloc(400));
    cache.get('a');
    cache.put('c', Buffer.alloc(400));
    expect(evicted).toEqual(['b']);
    expect(cache.stats).toMatchObject({ bytes: 800, entries: 2, hits: 1, evictions: 1 });
    expect(cache.put('huge', Buffer.alloc(600))).toBe(false);
  });
});

describe('CHUNK transport', () => {
  it('fetches a chunk across two ADs, in fragments, verified', async () => {
    const net = await build(1500);
    const data = randomBytes(20_000);
    const cid = net.stack('B').chunks.publish(data);
    expect(cid.equals(Xid.hashOf(XidType.CID, data))).toBe(true);
    const got = await fetcherOn(net, 'C').fetch(cid, net.stack('B').node.address());
    expect(got.equals(data)).toBe(true);
    expect(net.stack('B').chunks.stats.fragmentsSent).toBeGreaterThan(10);
  });

  it('rejects a corrupted chunk and fetches it again', async () => {
    const net = await build();
    const data = randomBytes(5000);
    const cid = net.stack('B').chunks.publish(data);
    // A man in the middle on C's segment flips one byte of the first chunk data it sees.
    let tampered = 0;
    net.segment('seg-C').impairments = {
      tamper: (packet) => {
        const payload = xipHeaderLengthOf(packet);
        if (tampered === 0 && packet[payload] === TransportType.CHUNK && packet[payload + 1] === ChunkOp.DATA) {
          packet[packet.length - 1]! ^= 0x01;
          tampered++;
        }
      },
    };
    const fetcher = fetcherOn(net, 'C');
    expect((await fetcher.fetch(cid, net.stack('B').node.address())).equals(data)).toBe(true);
    expect(tampered).toBe(1);
    expect(fetcher.stats.corrupt).toBeGreaterThan(0);
    expect(fetcher.stats.verified).toBe(1);
  });

  it('gives up with ERR_CHUNK after its attempts when the chunk does not exist', async () => {
    const net = await build();
    const missing = Xid.hashOf(XidType.CID, Buffer.from('nobody has this'));
    const error = await fetcherOn(net, 'C')
      .fetch(missing, net.stack('B').node.address(), { attempts: 3 })
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(XmigError);
    expect((error as XmigError).code).toBe('ERR_CHUNK');
  });

  it('serves a second fetch from the router cache without reaching the origin', async () => {
    const net = await build();
    const data = randomBytes(30_000);
    const origin = net.stack('B').chunks;
    const cid = origin.publish(data);
    await fetcherOn(net, 'C').fetch(cid, net.stack('B').node.address());
    expect(origin.stats.served).toBe(1);
    expect(net.stack('R1').chunks.stats.cachedInTransit).toBe(1);
    const again = await fetcherOn(net, 'A').fetch(cid, net.stack('B').node.address());
    expect(again.equals(data)).toBe(true);
    expect(origin.stats.served).toBe(1);
    expect(net.stack('R1').chunks.stats.servedFromCache).toBe(1);
  });

  it('leaves chunks published NO_STORE out of router caches (VM memory stays private)', async () => {
    const net = await build();
    const data = randomBytes(30_000);
    const origin = net.stack('B').chunks;
    const cid = origin.publish(data, { noStore: true });
    expect((await fetcherOn(net, 'C').fetch(cid, net.stack('B').node.address())).equals(data)).toBe(true);
    expect(net.stack('R1').chunks.stats.cachedInTransit).toBe(0);
    expect(net.stack('R1').chunks.cache!.has(cidKey(cid.id))).toBe(false);
    expect((await fetcherOn(net, 'A').fetch(cid, net.stack('B').node.address())).equals(data)).toBe(true);
    expect(origin.stats.served).toBe(2);
    expect(net.stack('R1').chunks.stats.servedFromCache).toBe(0);
  });

  it('keeps many requests in flight and grows its window', async () => {
    const net = await build();
    const chunks = Array.from({ length: 300 }, () => randomBytes(8000));
    const cids = chunks.map((c) => net.stack('B').chunks.publish(c));
    const fetcher = fetcherOn(net, 'C');
    let peak = 0;
    const watch = setInterval(() => (peak = Math.max(peak, fetcher.outstanding.inFlight)), 1);
    const got = await Promise.all(cids.map((cid) => fetcher.fetch(cid, net.stack('B').node.address())));
    clearInterval(watch);
    expect(got.every((g, i) => g.equals(chunks[i]!))).toBe(true);
    expect(peak).toBeGreaterThan(16);
    expect(fetcher.outstanding.window).toBeGreaterThan(8);
  });
});

describe('CHUNK messages', () => {
  const header = (op: number): Buffer => {
    const body = Buffer.alloc(33);
    body[0] = op;
    return body;
  };

  it('reads the NO_STORE bit on DATA and rejects it anywhere else', () => {
    expect(decodeChunkMessage(header(ChunkOp.DATA | 0x80))).toMatchObject({ op: ChunkOp.DATA, noStore: true });
    expect(decodeChunkMessage(header(ChunkOp.DATA))).toMatchObject({ op: ChunkOp.DATA, noStore: false });
    expect(() => decodeChunkMessage(header(ChunkOp.REQUEST | 0x80))).toThrow(MalformedPacketError);
    expect(() => decodeChunkMessage(header(ChunkOp.NOT_FOUND | 0x80))).toThrow(MalformedPacketError);
  });
});
