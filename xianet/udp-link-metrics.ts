/**
 * How a node's UDP links send, on /metrics — the figures that say whether the batched
 * send path (udp-batch.ts) is in use and holding up on a real host:
 *
 *  - `xianet_udp_link_batching{node,link}`: 1 while the link's unicast sends go through the
 *    addon's sendmmsg batches, 0 on node:dgram (no addon, XMIG_UDP_BATCH=0, no fd)
 *  - `xianet_udp_link_packets_sent_total{node,link,path}`: XIP packets handed to the kernel,
 *    by path: `batch` (in sendmmsg/GSO batches), `dgram` (node:dgram, one by one), and
 *    `fallback` (batched, but the socket buffer was full: node:dgram queued them)
 *  - `xianet_udp_link_send_calls_total{node,link}`: sendmmsg calls (packets per call =
 *    batch packets / calls)
 *  - `xianet_udp_link_send_errors_total{node,link}`: packets the kernel refused
 *  - `xianet_udp_link_too_big_total{node,link}`: packets over the link MTU, not sent
 *  - `xianet_udp_link_gro{node,link}`: 1 while the socket has UDP_GRO (runs received whole)
 *  - `xianet_udp_link_gro_datagrams_total{node,link}` / `_gro_packets_total`: datagrams
 *    received that held several XIP packets, and the packets they held
 */
import { Counter, Gauge, type Registry } from 'prom-client';
import type { UdpLink } from './udp-link.js';

export type UdpLinkStats = UdpLink['stats'];

/** What a link exports: its name, whether it batches, and its send counters. */
export interface SendingLink {
  readonly name: string;
  readonly batching: boolean;
  readonly gro: boolean;
  readonly stats: UdpLinkStats;
  readonly bufferBytes?: { receive: number; send: number };
}

export function registerUdpLinkMetrics(registry: Registry, node: string, links: readonly SendingLink[]): void {
  if (links.length === 0) return;
  const perLink = (name: string, help: string, value: (stats: UdpLinkStats) => number): void => {
    new Counter({
      name,
      help,
      labelNames: ['node', 'link'] as const,
      registers: [registry],
      collect() {
        this.reset();
        for (const link of links) this.inc({ node, link: link.name }, value(link.stats));
      },
    });
  };
  const flag = (name: string, help: string, on: (link: SendingLink) => boolean): void => {
    new Gauge({
      name,
      help,
      labelNames: ['node', 'link'] as const,
      registers: [registry],
      collect() {
        this.reset();
        for (const link of links) this.set({ node, link: link.name }, on(link) ? 1 : 0);
      },
    });
  };
  flag('xianet_udp_link_batching', "1 while the link's unicast sends go through sendmmsg batches (the udp-batch addon), 0 on node:dgram", (l) => l.batching);
  new Counter({
    name: 'xianet_udp_link_packets_sent_total',
    help: 'XIP packets handed to the kernel, by path: batch (sendmmsg), dgram (node:dgram), fallback (batched, socket buffer full)',
    labelNames: ['node', 'link', 'path'] as const,
    registers: [registry],
    collect() {
      this.reset();
      for (const link of links) {
        this.inc({ node, link: link.name, path: 'batch' }, link.stats.batchedDatagrams);
        this.inc({ node, link: link.name, path: 'dgram' }, link.stats.dgramPackets);
        this.inc({ node, link: link.name, path: 'fallback' }, link.stats.batchFallbacks);
      }
    },
  });
  perLink('xianet_udp_link_send_calls_total', 'sendmmsg calls of the batched send path', (s) => s.batchCalls);
  perLink('xianet_udp_link_send_errors_total', 'XIP packets the kernel refused to send', (s) => s.sendErrors);
  new Gauge({
    name: 'xianet_udp_link_socket_buffer_bytes',
    help: 'The link socket buffers as the kernel reports them (twice the size set), by direction',
    labelNames: ['node', 'link', 'direction'] as const,
    registers: [registry],
    collect() {
      this.reset();
      for (const link of links) {
        if (!link.bufferBytes) continue;
        this.set({ node, link: link.name, direction: 'receive' }, link.bufferBytes.receive);
        this.set({ node, link: link.name, direction: 'send' }, link.bufferBytes.send);
      }
    },
  });
  flag('xianet_udp_link_gro', '1 while the link socket has UDP_GRO (runs of packets received as one datagram), 0 without', (l) => l.gro);
  perLink('xianet_udp_link_gro_datagrams_total', 'datagrams received that held several XIP packets (UDP_GRO)', (s) => s.groDatagrams);
  perLink('xianet_udp_link_gro_packets_total', 'XIP packets received in such datagrams', (s) => s.groPackets);
  perLink('xianet_udp_link_gro_runs_total', 'such datagrams whose packets were alike but for the payload length, routed once as a run', (s) => s.groRuns);
  perLink('xianet_udp_link_runs_sent_total', 'runs sent on as they arrived, one GSO message each', (s) => s.runsSent);
  perLink('xianet_udp_link_too_big_total', 'XIP packets larger than the link MTU, not sent', (s) => s.tooBig);
}
