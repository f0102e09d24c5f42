/**
 * What a node counts and how /metrics shows it. The forwarding path increments plain
 * numbers (no prom-client call per packet); the families read them when scraped.
 *
 *  - `xianet_packets_total{node,event}`: received, forwarded, delivered, originated, xcmpSent
 *  - `xianet_packets_dropped_total{node,reason}`: by DropReason
 *  - `xianet_routes{node,type}`: route table sizes
 *  - `xianet_refusals_total{node,resource,reason}`: everything the node's own surfaces
 *    (application API, STREAM handshakes, xping, XCMP errors) refused for a bound
 */
import { Counter, Gauge, type Registry } from 'prom-client';
import { Refusals, type RefusalReason } from '../shared/limits.js';
import { Xid } from '../shared/xid.js';
import type { RouteTables } from './route-table.js';

export const DropReason = {
  MALFORMED: 'malformed',
  HOP_LIMIT: 'hop-limit',
  UNREACHABLE: 'unreachable',
  NO_NEIGHBOR: 'no-neighbor',
  TOO_BIG: 'too-big',
  DISCARD: 'discard',
  NO_LISTENER: 'no-listener',
  INTERFACE_DOWN: 'interface-down',
  LOOP: 'loop',
  /** A packet that made a part of this node throw (a bug: the fuzz tests keep this at 0). */
  INTERNAL: 'internal',
} as const;
export type DropReasonName = (typeof DropReason)[keyof typeof DropReason];

export interface NodeCounters {
  received: number;
  forwarded: number;
  delivered: number;
  originated: number;
  xcmpSent: number;
  dropped: Record<DropReasonName, number>;
}

export function createNodeCounters(): NodeCounters {
  return {
    received: 0,
    forwarded: 0,
    delivered: 0,
    originated: 0,
    xcmpSent: 0,
    dropped: Object.fromEntries(Object.values(DropReason).map((r) => [r, 0])) as Record<DropReasonName, number>,
  };
}

/**
 * The resource/reason pairs the node's surfaces refuse, declared up front so every
 * series of `xianet_refusals_total` exists at 0 from the start.
 */
export const NODE_REFUSALS: ReadonlyArray<readonly [string, RefusalReason]> = [
  ['api-connection', 'cap'],
  ['api-frame', 'cap'],
  ['api-frame', 'malformed'],
  ['api-frame', 'timeout'],
  ['api-frame', 'budget'],
  ['api-request', 'malformed'],
  ['api-request', 'cap'],
  ['api-write', 'budget'],
  ['api-event', 'budget'],
  ['api-event', 'cap'],
  ['api-reply', 'cap'],
  ['api-stream-token', 'cap'],
  ['api-stream-token', 'timeout'],
  ['api-stream-token', 'forbidden'],
  ['stream-handshake', 'cap'],
  ['stream-handshake', 'timeout'],
  ['stream-handshake-source', 'cap'],
  ['ping', 'malformed'],
  ['xcmp-error', 'rate'],
];

export function createNodeRefusals(): Refusals {
  return new Refusals(NODE_REFUSALS);
}

export function registerNodeMetrics(registry: Registry, name: string, counters: NodeCounters, routes: RouteTables, refusals: Refusals): void {
  const labels = { node: name };
  new Counter({
    name: 'xianet_packets_total',
    help: 'XIP packets by what happened to them',
    labelNames: ['node', 'event'] as const,
    registers: [registry],
    collect() {
      this.reset();
      for (const event of ['received', 'forwarded', 'delivered', 'originated', 'xcmpSent'] as const) {
        this.inc({ ...labels, event }, counters[event]);
      }
    },
  });
  new Counter({
    name: 'xianet_packets_dropped_total',
    help: 'XIP packets dropped, by reason',
    labelNames: ['node', 'reason'] as const,
    registers: [registry],
    collect() {
      this.reset();
      for (const [reason, value] of Object.entries(counters.dropped)) this.inc({ ...labels, reason }, value);
    },
  });
  new Gauge({
    name: 'xianet_routes',
    help: 'Route table entries by principal type',
    labelNames: ['node', 'type'] as const,
    registers: [registry],
    collect() {
      this.reset();
      for (const type of routes.types()) {
        this.set({ ...labels, type: Xid.of(type, Buffer.alloc(20)).typeName }, routes.table(type).size);
      }
    },
  });
  refusals.register(registry, 'xianet_refusals_total', 'Requests, connections and packets the node refused for a bound, by resource and reason', labels);
}
