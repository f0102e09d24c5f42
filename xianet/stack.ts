/**
 * The XIA stack of one machine, assembled: a node plus the control protocols its
 * role runs (neighbour discovery everywhere; beacons on routers; XHCP join on
 * hosts). The daemon and the in-process testbed build the same thing.
 */
import type { Registry } from 'prom-client';
import type { Clock } from '../shared/clock.js';
import type { Dag } from '../shared/dag.js';
import type { Identity } from '../shared/identity.js';
import type { Logger } from '../shared/logger.js';
import { XidType, type Xid } from '../shared/xid.js';
import { BeaconService, registerBeaconMetrics } from './beacon-service.js';
import { ChunkService } from './chunk/chunk-service.js';
import { StreamTransport } from './xstream/stream-transport.js';
import type { StreamOptions } from './xstream/stream-connection.js';
import { HostJoin, type HostJoinOptions } from './host-join.js';
import type { Link } from './link.js';
import { XiaNode, type NodeRole } from './node.js';
import { XrouteService, type XrouteServiceOptions } from './xroute-service.js';

export interface StackOptions {
  name: string;
  role: NodeRole;
  identity: Identity;
  /** Routers: the AD's key (AD = SHA-1 of its public key). */
  adIdentity?: Identity;
  beaconIntervalMs?: number;
  helloIntervalMs?: number;
  nameServer?: Dag;
  /** Hosts: ADs whose beacons they believe (empty: any self-signed AD). */
  trustedAds?: Xid[];
  join?: Omit<HostJoinOptions, 'trustedAds' | 'beaconIntervalMs'>;
  /** Neighbour and registration state (the hello period is helloIntervalMs above). */
  xroute?: Omit<XrouteServiceOptions, 'helloIntervalMs'>;
  /** Bytes of chunk cache (default: 64 MiB on routers, none on hosts). */
  chunkCacheBytes?: number;
  /** Defaults for STREAM connections of this node. */
  stream?: StreamOptions;
}

export interface StackComponents {
  logger?: Logger;
  registry?: Registry;
  clock?: Clock;
}

export class XiaStack {
  readonly node: XiaNode;
  readonly xroute: XrouteService;
  readonly beacons: BeaconService | undefined;
  readonly join: HostJoin | undefined;
  readonly chunks: ChunkService;
  readonly streams: StreamTransport;
  private running = false;

  constructor(options: StackOptions, components: StackComponents = {}) {
    if (options.role === 'router' && !options.adIdentity) throw new Error(`router ${options.name} needs an AD key`);
    this.node = new XiaNode(
      { name: options.name, role: options.role, identity: options.identity, ad: options.adIdentity?.xid(XidType.AD) },
      components,
    );
    this.xroute = new XrouteService(this.node, { ...options.xroute, helloIntervalMs: options.helloIntervalMs });
    this.streams = new StreamTransport(this.node, options.stream);
    this.chunks = new ChunkService(this.node, {
      cacheBytes: options.chunkCacheBytes ?? (options.role === 'router' ? 64 * 1024 * 1024 : 0),
    });
    if (options.role === 'router') {
      this.beacons = new BeaconService(this.node, {
        adIdentity: options.adIdentity,
        beaconIntervalMs: options.beaconIntervalMs,
        nameServer: options.nameServer,
      });
      if (components.registry) registerBeaconMetrics(components.registry, options.name, this.beacons);
    } else {
      this.join = new HostJoin(this.node, this.xroute, {
        ...options.join,
        trustedAds: options.trustedAds,
        beaconIntervalMs: options.beaconIntervalMs,
      });
      // Registered with a gateway after a move or a pause: connections stop backing off.
      this.join.on('registered', ({ renewal }) => {
        if (!renewal) this.streams.probeAll();
      });
    }
  }

  addInterface(link: Link, options: { hostFacing?: boolean } = {}): number {
    return this.node.addInterface(link, options);
  }

  async start(): Promise<void> {
    if (this.running) return;
    this.running = true;
    await this.node.start();
    await this.xroute.start();
    this.chunks.start();
    await this.beacons?.start();
    await this.join?.start();
  }

  async stop(): Promise<void> {
    if (!this.running) return;
    this.running = false;
    this.streams.close();
    await this.join?.stop();
    await this.beacons?.stop();
    this.chunks.stop();
    await this.xroute.stop();
    await this.node.stop();
  }
}
