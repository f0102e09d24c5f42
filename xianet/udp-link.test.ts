import { afterEach, describe, expect, it } from 'vitest';
import { xipOfSize } from '../test/support/xip-arbitraries.js';
import { readFileSync } from 'node:fs';
import { udpBatchAddon } from './udp-batch.js';
import { parseSocketAddress, UdpLink } from './udp-link.js';

const links: UdpLink[] = [];
afterEach(async () => {
  for (const l of links.splice(0)) await l.stop();
});

async function link(bindAddress: string, peers: string[] = []): Promise<UdpLink> {
  const l = new UdpLink({ name: bindAddress, bindAddress, port: 0, peers });
  links.push(l);
  await l.start();
  return l;
}

describe('UdpLink', () => {
  it.each(['127.0.0.1', '::1'])('carries one packet per datagram over %s, unicast and to its peers', async (host) => {
    const a = await link(host);
    const b = await link(host);
    const c = await link(host);
    const got: Array<[string, string, string]> = [];
    for (const [name, l] of [['b', b], ['c', c]] as const) l.onReceive((p, from) => got.push([name, p.toString(), from]));
    a.send(Buffer.from('one'), b.address!);
    a.setPeers([b.address!, c.address!]);
    a.broadcast(Buffer.from('all'));
    await expect.poll(() => got.length).toBe(3);
    expect(got.map(([n, p]) => `${n}:${p}`).sort()).toEqual(['b:all', 'b:one', 'c:all']);
    expect(got.every(([, , from]) => from === a.address)).toBe(true);
  });

  it('sends a header and a separate tail as one datagram, and reaches a peer given by name', async () => {
    const a = await link('127.0.0.1');
    const b = await link('127.0.0.1');
    const got: string[] = [];
    b.onReceive((p) => got.push(p.toString()));
    a.send(Buffer.from('head|'), b.address!, Buffer.from('tail'));
    a.send(Buffer.from('by name'), `localhost:${b.port!}`);
    // The name is looked up first (getaddrinfo, on libuv's thread pool): no fixed wait fits a loaded machine.
    await expect.poll(() => got.length).toBe(2);
    expect(got.sort()).toEqual(['by name', 'head|tail']);
  });

  it('gets socket buffers past net.core.rmem_max where it may (CAP_NET_ADMIN), and says so where not', async (context) => {
    const limit = Number(readFileSync('/proc/sys/net/core/rmem_max', 'utf8'));
    const bytes = Math.max(limit, Math.min(limit * 4, 64 << 20));
    const l = new UdpLink({ name: 'big', bindAddress: '127.0.0.1', port: 0, socketBufferBytes: bytes });
    links.push(l);
    await l.start();
    if (process.getuid?.() !== 0 || !udpBatchAddon().addon) {
      // Without the privilege (or the addon) the kernel's limit stands, and the link says why.
      expect(l.bufferBytes.receive).toBeLessThanOrEqual(2 * limit);
      expect(l.bufferBytes.limited).toBeTruthy();
      context.skip('SKIPPED: not root, or the UDP addon is not built: only the fallback was checked');
    }
    // The kernel reports twice the size set; before the addon forced it, this was 2 x rmem_max.
    expect(l.bufferBytes.receive).toBeGreaterThanOrEqual(2 * bytes);
    expect(l.bufferBytes.send).toBeGreaterThanOrEqual(2 * bytes);
    expect(l.bufferBytes.limited).toBeUndefined();
  });

  it('parses IPv4, IPv6 and scoped link-local socket addresses', () => {
    expect(parseSocketAddress('10.0.0.1:7000')).toEqual({ host: '10.0.0.1', port: 7000 });
    expect(parseSocketAddress('[fe80::1%veth0]:7000')).toEqual({ host: 'fe80::1%veth0', port: 7000 });
    expect(() => parseSocketAddress('nonsense')).toThrow(/not a socket address/);
  });
});

describe('UdpLink MTU and impairment', () => {
  it('sizes its datagrams from the interface: 64 KiB on loopback, less when configured or impaired', async () => {
    const lo = new UdpLink({ name: 'lo', bindAddress: '127.0.0.1', port: 0 });
    const eth = new UdpLink({ name: 'eth', bindAddress: '127.0.0.1', port: 0, mtu: 1500 });
    const small = new UdpLink({ name: 'small', bindAddress: '127.0.0.1', port: 0, mtu: 1500, impairment: { mtu: 1400 } });
    const v6 = new UdpLink({ name: 'v6', bindAddress: '::1', port: 0, mtu: 1500 });
    links.push(lo, eth, small, v6);
    for (const l of [lo, eth, small, v6]) await l.start();
    expect(lo.mtu).toBe(65507);
    expect(lo.ipMtu).toEqual({ bytes: 65536, source: 'interface' });
    expect(eth.mtu).toBe(1472);
    expect(small.mtu).toBe(1372);
    expect(small.ipMtu.source).toBe('impairment');
    expect(v6.mtu).toBe(1452);
  });

  it('never sends a datagram larger than its MTU, and counts what it refused', async () => {
    const a = new UdpLink({ name: 'a', bindAddress: '127.0.0.1', port: 0, mtu: 1500 });
    const b = new UdpLink({ name: 'b', bindAddress: '127.0.0.1', port: 0 });
    links.push(a, b);
    await a.start();
    await b.start();
    const got: number[] = [];
    b.onReceive((p) => got.push(p.length));
    a.send(Buffer.alloc(1000), b.address!, Buffer.alloc(472));
    a.send(Buffer.alloc(1000), b.address!, Buffer.alloc(473));
    a.setPeers([b.address!]);
    a.broadcast(Buffer.alloc(1473));
    await expect.poll(() => got.length).toBe(1);
    await new Promise((r) => setTimeout(r, 100)); // and nothing more comes
    expect(got).toEqual([1472]);
    expect(a.stats.tooBig).toBe(2);
  });

  it('takes a GSO run in whole with UDP_GRO and hands on its packets one by one, in order; without GRO the kernel cuts it', async () => {
    const a = new UdpLink({ name: 'a', bindAddress: '127.0.0.1', port: 0, mtu: 1500 });
    const gro = new UdpLink({ name: 'gro', bindAddress: '127.0.0.1', port: 0 });
    const cut = new UdpLink({ name: 'cut', bindAddress: '127.0.0.1', port: 0, gro: false });
    links.push(a, gro, cut);
    for (const l of [a, gro, cut]) await l.start();
    if (!a.batching || !gro.gro) console.error(`SKIPPED in part: no UDP batch addon or no UDP_GRO here (${gro.groUnavailable ?? 'addon not built'}): only the per-packet path is checked`);
    expect(cut.gro).toBe(false);
    const packets = Array.from({ length: 64 }, (_, i) => xipOfSize(i === 63 ? 700 : 1400, i));
    for (const target of [gro, cut]) {
      const got: Buffer[] = [];
      const all = new Promise<void>((resolve) => target.onReceive((p) => got.push(Buffer.from(p)) === packets.length && resolve()));
      for (const p of packets) a.send(p, target.address!);
      await all;
      expect(got.map((p) => p.toString('hex'))).toEqual(packets.map((p) => p.toString('hex')));
    }
    if (gro.gro) expect(gro.stats.groPackets).toBeGreaterThan(gro.stats.groDatagrams);
    expect(cut.stats.groPackets).toBe(0);
    // Not XIP (lengths that do not add up): handed on whole, for the node to count as malformed.
    if (gro.gro) {
      const blobs: Buffer[] = [];
      const one = new Promise<void>((resolve) => gro.onReceive((p) => (blobs.push(Buffer.from(p)), resolve())));
      for (let i = 0; i < 4; i++) a.send(Buffer.alloc(500, i), gro.address!);
      await one;
      await new Promise((r) => setTimeout(r, 50));
      expect(blobs.reduce((n, b) => n + b.length, 0)).toBe(2000);
      expect(blobs.length).toBeLessThan(4);
    }
  });

  it('applies its impairment to what it sends, counted', async () => {
    const a = new UdpLink({ name: 'a', bindAddress: '127.0.0.1', port: 0, impairment: { lossRate: 0.5, delayMs: 5, seed: 3 } });
    const b = new UdpLink({ name: 'b', bindAddress: '127.0.0.1', port: 0 });
    links.push(a, b);
    await a.start();
    await b.start();
    let got = 0;
    b.onReceive(() => got++);
    for (let i = 0; i < 200; i++) a.send(xipOfSize(100), b.address!);
    const counters = a.impairment!.counters;
    await new Promise<void>((resolve) => {
      const check = (): void => (got === counters.sent && a.impairment!.held === 0 ? resolve() : void setTimeout(check, 10));
      check();
    });
    expect(counters.offered).toBe(200);
    expect(counters.lost).toBeGreaterThan(60);
    expect(got).toBe(200 - counters.lost);
  });
});
