/**
 * A node's UDP links on /metrics: which path their packets took (the addon's batches or
 * node:dgram), the sendmmsg calls, packets over the MTU — counted as the links send, in
 * Prometheus' text format.
 */
import { Registry } from 'prom-client';
import { afterEach, describe, expect, it } from 'vitest';
import { udpBatchAddon } from './udp-batch.js';
import { registerUdpLinkMetrics } from './udp-link-metrics.js';
import { xipOfSize } from '../test/support/xip-arbitraries.js';
import { UdpLink } from './udp-link.js';

const links: UdpLink[] = [];
afterEach(async () => {
  for (const l of links.splice(0)) await l.stop();
});

async function started(name: string, options: { batch?: boolean; mtu?: number } = {}): Promise<UdpLink> {
  const link = new UdpLink({ name, bindAddress: '127.0.0.1', port: 0, ...options });
  links.push(link);
  await link.start();
  return link;
}

/** The value of one series in a scrape, by its labels. */
function series(text: string, name: string, labels: Record<string, string>): number | undefined {
  const want = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`)) continue;
    const inside = line.slice(name.length + 1, line.indexOf('}'));
    if (want.every((w) => inside.split(',').includes(w))) return Number(line.slice(line.indexOf('}') + 1));
  }
  return undefined;
}

describe('UDP link metrics', () => {
  it('count every packet sent by the path it took, the sendmmsg calls, and the ones over the MTU', async () => {
    const batched = udpBatchAddon().addon !== undefined;
    const a = await started('a', { mtu: 1500 });
    const plain = await started('plain', { batch: false });
    const b = await started('b');
    let received = 0;
    const all = new Promise<void>((resolve) => b.onReceive(() => ++received === 55 && resolve()));
    for (let i = 0; i < 50; i++) a.send(xipOfSize(1000, i), b.address!);
    for (let i = 0; i < 5; i++) plain.send(xipOfSize(100, i), b.address!);
    a.send(xipOfSize(3000), b.address!);
    await all;
    const registry = new Registry();
    registerUdpLinkMetrics(registry, 'n1', [a, plain, b]);
    const text = await registry.metrics();
    const sent = (link: string, path: string): number | undefined => series(text, 'xianet_udp_link_packets_sent_total', { node: 'n1', link, path });
    expect(series(text, 'xianet_udp_link_batching', { link: 'a' })).toBe(batched ? 1 : 0);
    expect(series(text, 'xianet_udp_link_batching', { link: 'plain' })).toBe(0);
    expect(sent('a', 'batch')! + sent('a', 'dgram')! + sent('a', 'fallback')!).toBe(50);
    expect(sent('a', 'batch')).toBe(batched ? 50 : 0);
    expect(sent('plain', 'dgram')).toBe(5);
    expect(sent('plain', 'batch')).toBe(0);
    // 50 packets of one size to one neighbour in one turn: a few sendmmsg calls, not 50.
    const calls = series(text, 'xianet_udp_link_send_calls_total', { link: 'a' })!;
    if (batched) expect(calls).toBeGreaterThan(0);
    if (batched) expect(calls).toBeLessThan(50);
    expect(series(text, 'xianet_udp_link_too_big_total', { link: 'a' })).toBe(1);
    expect(series(text, 'xianet_udp_link_send_errors_total', { link: 'a' })).toBe(0);
    // b's socket has UDP_GRO with the addon: a's run of 50 arrived as one datagram (or a few).
    expect(series(text, 'xianet_udp_link_gro', { link: 'b' })).toBe(b.gro ? 1 : 0);
    expect(b.gro).toBe(batched);
    const groPackets = series(text, 'xianet_udp_link_gro_packets_total', { link: 'b' })!;
    const groDatagrams = series(text, 'xianet_udp_link_gro_datagrams_total', { link: 'b' })!;
    if (b.gro) expect(groPackets).toBeGreaterThan(groDatagrams);
    else expect(groPackets).toBe(0);
    // The socket buffers as the kernel reports them, each way.
    expect(series(text, 'xianet_udp_link_socket_buffer_bytes', { link: 'b', direction: 'receive' })).toBe(b.bufferBytes.receive);
    expect(series(text, 'xianet_udp_link_socket_buffer_bytes', { link: 'b', direction: 'send' })).toBeGreaterThan(0);
  });
});
