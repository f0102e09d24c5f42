import { randomBytes } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { MalformedPacketError, XmigError } from '../../shared/errors.js';
import { Xid, XidType } from '../../shared/xid.js';
import { InProcessNetwork, INTER_AD } from '../topology.js';
import { Dag } from '../../shared/dag.js';
import { Identity } from '../../shared/identity.js';
import { MemoryLink, MemorySegment } from '../memory-link.js';
import { XiaNode } from '../node.js';
import { ChunkCache } from './chunk-cache.js';
import { ChunkFetcher } from './chunk-fetcher.js';
import { ChunkOp, decodeChunkMessage } from './chunk-messages.js';
import { cidKey } from './chunk-service.js';
import { TransportType } from '../transport-header.js';
import { encodeXipHeaderInto, NextHeader, xipHeaderLengthOf } from '../../shared/xip-header.js';
import { activeResources, leftBehind } from '../../shared/startable.js';
import { ChunkService, ChunkStoreFullError } from './chunk-service.js';
import { writeChunkDataHeader, CHUNK_DATA_HEADER_LENGTH } from './chunk-messages.js';

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

  it('gives up at its deadline, not after a count of attempts, when the chunk does not exist', async () => {
    const net = await build();
    const missing = Xid.hashOf(XidType.CID, Buffer.from('nobody has this'));
    const fetcher = fetcherOn(net, 'C');
    const error = await fetcher.fetch(missing, net.stack('B').node.address(), { timeoutMs: 1500 }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(XmigError);
    expect((error as XmigError).code).toBe('ERR_TIMEOUT');
    // Asked again and again meanwhile (each request timed out), then given up by time.
    expect(fetcher.stats.requests).toBeGreaterThan(1);
    expect(fetcher.stats.rtos).toBeGreaterThan(0);
    expect(fetcher.outstanding).toMatchObject({ inFlight: 0, fetches: 0, inflightBytes: 0 });
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
    // Both from the origin (at least: a request retransmitted on a loaded machine is served again).
    expect(origin.stats.served).toBeGreaterThanOrEqual(2);
    expect(net.stack('R1').chunks.stats.servedFromCache).toBe(0);
  });

  it('keeps requests in flight, and measures the path', async () => {
    const net = await build();
    const chunks = Array.from({ length: 300 }, () => randomBytes(8000));
    const cids = chunks.map((c) => net.stack('B').chunks.publish(c));
    const fetcher = fetcherOn(net, 'C');
    let peak = 0;
    const watch = setInterval(() => (peak = Math.max(peak, fetcher.outstanding.inFlight)), 1);
    const got = await Promise.all(cids.map((cid) => fetcher.fetch(cid, net.stack('B').node.address())));
    clearInterval(watch);
    expect(got.every((g, i) => g.equals(chunks[i]!))).toBe(true);
    expect(peak).toBeGreaterThan(1);
    expect(fetcher.congestion.btlBw).toBeGreaterThan(0);
    expect(fetcher.congestion.rtProp).toBeLessThan(1000);
    expect(fetcher.outstanding).toMatchObject({ inFlight: 0, inflightBytes: 0, fetches: 0 });
  });
});

describe('CHUNK transport: loss, outages, cancellation', () => {
  it('recovers lost and reordered datagrams by asking for the missing ranges only', async () => {
    const net = await build(1500);
    const data = randomBytes(1 << 20);
    const origin = net.stack('B').chunks;
    const cid = origin.publish(data);
    net.segment('seg-C').impairments = { lossRate: 0.05, reorderRate: 0.05 };
    const fetcher = fetcherOn(net, 'C');
    const got = await fetcher.fetch(cid, net.stack('B').node.address(), { length: data.length });
    expect(got.equals(data)).toBe(true);
    const room = 1500 - (8 + 6 * 28) - CHUNK_DATA_HEADER_LENGTH;
    const minimum = Math.ceil(data.length / room);
    // About 5 % of the datagrams (and requests) were lost: about that much more was sent, not whole chunks again.
    expect(origin.stats.fragmentsSent).toBeGreaterThan(minimum);
    expect(origin.stats.fragmentsSent).toBeLessThan(1.3 * minimum);
    expect(fetcher.stats.lost).toBeGreaterThan(0);
    expect(fetcher.stats.retransmitted).toBeGreaterThan(0);
  });

  it('asks twice for a range lost twice, so a third loss costs no round trip', async () => {
    const served = async (redundantFromAttempt: number | undefined): Promise<{ sends: number; redundant: number }> => {
      const net = await build(1500);
      const data = randomBytes(64 * 1024);
      const cid = net.stack('B').chunks.publish(data);
      const fetcher = new ChunkFetcher(net.stack('C').node, { redundantFromAttempt });
      fetcher.start();
      fetchers.push(fetcher);
      // The DATA datagram that starts at byte 0 is lost the first two times it crosses.
      let sends = 0;
      net.segment('seg-C').impairments = {
        drop: (packet) => {
          const at = xipHeaderLengthOf(packet);
          if (packet[at] !== TransportType.CHUNK || packet[at + 1] !== ChunkOp.DATA) return false;
          const message = decodeChunkMessage(packet.subarray(at + 1));
          if (message.op !== ChunkOp.DATA || message.offset !== 0) return false;
          return ++sends <= 2;
        },
      };
      const got = await fetcher.fetch(cid, net.stack('B').node.address(), { length: data.length });
      expect(got.equals(data)).toBe(true);
      await network!.stop();
      network = undefined;
      return { sends, redundant: fetcher.stats.redundant };
    };
    // Lost, lost, then asked for in two requests: both answers cross (a loaded machine's
    // spurious timeout may add more, never fewer).
    const twice = await served(undefined);
    expect(twice.redundant).toBeGreaterThanOrEqual(1);
    expect(twice.sends).toBeGreaterThanOrEqual(4);
    const once = await served(0);
    expect(once.redundant).toBe(0);
    expect(once.sends).toBeGreaterThanOrEqual(3);
  });

  // One request of six datagrams d0..d5. d3 and d5 are lost; d4 comes 100 ms late, behind a
  // second hole. Answers to requests asked again come 300 ms late (until then nothing sent
  // later comes back: no RACK). Before the second hole, d1 either comes 50 ms late (after its
  // hole was declared lost) or is lost while d2 comes twice: either way the request's bytes
  // were once counted back twice, and d5 must still be asked for again.
  it.each([
    ['a late datagram of it came after its hole was declared lost', { hold: { 1: 50 }, drop: [], twice: [] }],
    ['a datagram of it came twice', { hold: {}, drop: [1], twice: [2] }],
  ])('asks again for the rest of a range when %s', async (_, script: { hold: Record<number, number>; drop: number[]; twice: number[] }) => {
    const net = await build(1500);
    const origin = net.stack('B').chunks;
    const source = net.stack('B').node.address();
    const chunkOf = (packet: Buffer): ReturnType<typeof decodeChunkMessage> | undefined => {
      const at = xipHeaderLengthOf(packet);
      return packet[at] === TransportType.CHUNK ? decodeChunkMessage(packet.subarray(at + 1)) : undefined;
    };
    // The fragment payload this path carries, as the fetcher asks for it.
    let room = 0;
    net.segment('seg-C').impairments = {
      drop: (packet) => {
        const message = chunkOf(packet);
        if (message?.op === ChunkOp.REQUEST) room = message.maxFragment ?? 0;
        return false;
      },
    };
    await fetcherOn(net, 'C').fetch(origin.publish(randomBytes(100)), source);
    expect(room).toBeGreaterThan(1000);
    const data = randomBytes(6 * room);
    const cid = origin.publish(data);
    let first: number | undefined;
    const AGAIN = -1;
    const index = (packet: Buffer): number | undefined => {
      const message = chunkOf(packet);
      if (message?.op !== ChunkOp.DATA || !message.cid.equals(cid.id)) return undefined;
      first ??= message.requestId;
      return message.requestId === first ? message.offset / room : AGAIN;
    };
    const hold: Record<number, number> = { ...script.hold, 4: 100, [AGAIN]: 300 };
    net.segment('seg-C').impairments = {
      drop: (packet) => [3, 5, ...script.drop].includes(index(packet) ?? -2),
      holdMs: (packet) => hold[index(packet) ?? -2],
      duplicate: (packet) => script.twice.includes(index(packet) ?? -2),
    };
    const fetcher = new ChunkFetcher(net.stack('C').node, { stallTimeoutMs: 4000 });
    fetcher.start();
    fetchers.push(fetcher);
    const got = await fetcher.fetch(cid, source, { length: data.length });
    expect(got.equals(data)).toBe(true);
    expect(fetcher.outstanding).toMatchObject({ inFlight: 0, inflightBytes: 0 });
  });

  it('rides out an outage of the path and goes on where it was', async () => {
    const net = await build(1500);
    const data = randomBytes(512 * 1024);
    const cid = net.stack('B').chunks.publish(data);
    const fetcher = fetcherOn(net, 'C');
    let forwarded = 0;
    // The path goes down after 100 DATA datagrams, for 800 ms.
    net.segment('seg-C').impairments = {
      drop: (packet) => {
        const at = xipHeaderLengthOf(packet);
        if (packet[at] === TransportType.CHUNK && packet[at + 1] === ChunkOp.DATA && ++forwarded === 100) {
          setTimeout(() => (net.segment('seg-C').impairments = {}), 800);
        }
        return forwarded >= 100;
      },
    };
    const got = await fetcher.fetch(cid, net.stack('B').node.address(), { length: data.length });
    expect(got.equals(data)).toBe(true);
    expect(fetcher.stats.rtos).toBeGreaterThan(0);
    // Whatever had arrived before the outage was not asked for again.
    expect(net.stack('B').chunks.stats.fragmentsSent).toBeLessThan(1.5 * Math.ceil(data.length / 1300));
  });

  it('leaves no timer behind once stopped, with fetches in flight', async () => {
    const segment = new MemorySegment('alone');
    const node = new XiaNode({ name: 'lone', role: 'host', identity: Identity.generate() });
    node.addInterface(new MemoryLink('lone/0', { mtu: 1500, segment }));
    await node.start();
    const before = activeResources();
    const fetcher = new ChunkFetcher(node);
    fetcher.start();
    const nowhere = Dag.chain(Xid.of(XidType.HID, randomBytes(20)));
    const fetches = [1, 2, 3].map(() => fetcher.fetch(Xid.of(XidType.CID, randomBytes(20)), nowhere, { length: 100_000 }).catch((e: unknown) => e));
    await new Promise((r) => setTimeout(r, 50));
    fetcher.stop();
    for (const result of await Promise.all(fetches)) expect(result).toMatchObject({ code: 'ERR_CHUNK' });
    expect(leftBehind(before, activeResources())).toEqual({});
    await node.stop();
  });

  it('cancels a fetch at once when its signal fires: nothing of it stays in flight', async () => {
    const net = await build(1500);
    const cid = net.stack('B').chunks.publish(randomBytes(1 << 20));
    net.segment('seg-C').impairments = { down: true };
    const fetcher = new ChunkFetcher(net.stack('C').node);
    fetcher.start();
    const controller = new AbortController();
    const other = new AbortController();
    const fetching = fetcher.fetch(cid, net.stack('B').node.address(), { signal: controller.signal });
    const sharing = fetcher.fetch(cid, net.stack('B').node.address(), { signal: other.signal });
    await expect.poll(() => fetcher.outstanding.inFlight).toBeGreaterThan(0);
    controller.abort();
    await expect(fetching).rejects.toMatchObject({ code: 'ERR_CHUNK' });
    // The other caller still wants it: still being asked for.
    expect(fetcher.outstanding.fetches).toBe(1);
    other.abort();
    await expect(sharing).rejects.toMatchObject({ code: 'ERR_CHUNK' });
    expect(fetcher.outstanding).toMatchObject({ inFlight: 0, inflightBytes: 0, fetches: 0 });
    expect(fetcher.stats.aborted).toBe(1);
    fetcher.stop();
  });

  it('gives up on a chunk that stops arriving after its stall timeout', async () => {
    const net = await build(1500);
    const cid = net.stack('B').chunks.publish(randomBytes(256 * 1024));
    net.segment('seg-C').impairments = { down: true };
    const fetcher = new ChunkFetcher(net.stack('C').node, { stallTimeoutMs: 700 });
    fetcher.start();
    fetchers.push(fetcher);
    await expect(fetcher.fetch(cid, net.stack('B').node.address())).rejects.toMatchObject({ code: 'ERR_TIMEOUT' });
    expect(fetcher.stats.failed).toBe(1);
  });
});

describe("CHUNK transport: assembling in the caller's memory", () => {
  it('copies every datagram into the memory it was lent, through loss and reordering, and resolves with a view of it', async () => {
    const net = await build(1500);
    const data = randomBytes(300_000);
    const cid = net.stack('B').chunks.publish(data);
    net.segment('seg-C').impairments = { lossRate: 0.05, reorderRate: 0.05, duplicateRate: 0.02 };
    const into = Buffer.alloc(1 << 20);
    const got = await fetcherOn(net, 'C').fetchPieces(cid, net.stack('B').node.address(), { length: data.length, into });
    expect(got).toHaveLength(1);
    expect(got[0]!.buffer).toBe(into.buffer);
    expect(got[0]!.equals(data)).toBe(true);
  });

  it('keeps to the datagrams themselves when the memory lent is too short', async () => {
    const net = await build(1500);
    const data = randomBytes(100_000);
    const cid = net.stack('B').chunks.publish(data);
    const into = Buffer.alloc(1000, 7);
    const got = await fetcherOn(net, 'C').fetch(cid, net.stack('B').node.address(), { into });
    expect(got.equals(data)).toBe(true);
    expect(into.every((b) => b === 7)).toBe(true);
  });

  it('gives a second caller of the same fetch a copy of its own, and stops writing the memory of a lender that gave up', async () => {
    const net = await build(1500);
    const data = randomBytes(512 * 1024);
    const cid = net.stack('B').chunks.publish(data);
    const fetcher = fetcherOn(net, 'C');
    const source = net.stack('B').node.address();
    // Slow enough that the lender can leave halfway: 20 Mbit/s.
    net.segment('seg-C').impairments = { rateMbps: 20 };
    const into = Buffer.alloc(data.length);
    const lender = new AbortController();
    const lent = fetcher.fetchPieces(cid, source, { length: data.length, into, signal: lender.signal });
    const other = fetcher.fetchPieces(cid, source, { length: data.length });
    await expect.poll(() => fetcher.stats.bytesArrived, { timeout: 10_000 }).toBeGreaterThan(64 * 1024);
    lender.abort();
    await expect(lent).rejects.toMatchObject({ code: 'ERR_CHUNK' });
    // The lender's memory is its own again: filled with something else, it stays so.
    into.fill(0xee);
    const got = await other;
    expect(Buffer.concat(got).equals(data)).toBe(true);
    expect(got.every((piece) => piece.buffer !== into.buffer)).toBe(true);
    expect(into.every((b) => b === 0xee)).toBe(true);
    // Both at once, the lender staying: it gets its memory back full, the other a copy.
    const again = net.stack('B').chunks.publish(randomBytes(64 * 1024));
    const mine = Buffer.alloc(64 * 1024);
    const [a, b] = await Promise.all([fetcher.fetchPieces(again, source, { into: mine }), fetcher.fetchPieces(again, source)]);
    expect(a[0]!.buffer).toBe(mine.buffer);
    expect(b[0]!.buffer).not.toBe(mine.buffer);
    expect(Buffer.concat(b).equals(a[0]!)).toBe(true);
  });
});

describe('CHUNK service bounds', () => {
  it('refuses to publish past its store budget, and counts it', async () => {
    const net = await build();
    const service = new ChunkService(net.stack('A').node, { storeBytes: 1000 });
    service.publish(randomBytes(600));
    expect(() => service.publish(randomBytes(600))).toThrow(ChunkStoreFullError);
    expect(service.refusals.count('chunk-store', 'budget')).toBe(1);
    expect(service.published).toMatchObject({ chunks: 1, bytes: 600 });
  });

  it('holds reassemblies of forged fragments within its budget, and counts what it sheds', async () => {
    const net = await build();
    const router = net.stack('R1').chunks;
    const a = net.stack('A').node;
    const budget = 64 * 1024 * 1024 / 4;
    // 100 chunks of 1 MiB that never complete, one fragment each: 100 MiB if nothing bounded them.
    for (let i = 0; i < 100; i++) {
      const fields = { dst: net.stack('C').node.address(), src: a.address(), nextHeader: NextHeader.TRANSPORT };
      const piece = randomBytes(1000);
      const header = encodeXipHeaderInto(undefined, fields, CHUNK_DATA_HEADER_LENGTH + piece.length);
      const packet = Buffer.alloc(header + CHUNK_DATA_HEADER_LENGTH + piece.length);
      encodeXipHeaderInto(packet, fields, CHUNK_DATA_HEADER_LENGTH + piece.length);
      writeChunkDataHeader(packet, header, { requestId: i, cid: randomBytes(20), total: 1 << 20, offset: 0 });
      piece.copy(packet, header + CHUNK_DATA_HEADER_LENGTH);
      a.originate(packet);
    }
    await expect.poll(() => router.refusals.count('chunk-reassembly')).toBeGreaterThan(0);
    expect(router.reassembling.bytes).toBeLessThanOrEqual(budget);
    expect(router.reassembling.chunks).toBeGreaterThan(0);
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
