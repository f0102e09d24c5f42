/**
 * `xmig node`: one machine's XIA stack as a daemon, built from its config file:
 * UDP interfaces, keys, static routes, the Click-compatible control port, the
 * application API socket and /metrics. start() brings it all up in order and
 * stop() takes it all down, leaving no socket or timer behind.
 */
import type { Registry } from 'prom-client';
import { errorMessage } from '../shared/errors.js';
import { Identity } from '../shared/identity.js';
import { createLogger, type Logger } from '../shared/logger.js';
import { udpBatchAddon } from './udp-batch.js';
import { DEFAULT_KEEP_FREED_MEMORY_BYTES, describeAllocator, keepFreedMemory, type AllocatorSetting } from './allocator.js';
import { createRegistry, startMetricsServer, type MetricsServer } from '../shared/metrics.js';
import { Dag } from '../shared/dag.js';
import { Xid, parseXidTypeName } from '../shared/xid.js';
import { ApiServer } from './api/api-server.js';
import { LocalNodeApi } from './api/local-api.js';
import { ClickControlPort } from './click-control-port.js';
import { DEFAULT_SOCKET_BUFFER_BYTES, type NodeConfig } from './node-config.js';
import type { RouteOrigin } from './route-table.js';
import { XiaStack } from './stack.js';
import { UdpLink } from './udp-link.js';
import { registerImpairmentMetrics } from './link-impairment.js';
import { registerUdpLinkMetrics } from './udp-link-metrics.js';

export interface NodeDaemonComponents {
  logger?: Logger;
  registry?: Registry;
}

export class NodeDaemon {
  readonly stack: XiaStack;
  readonly api: LocalNodeApi;
  readonly logger: Logger;
  readonly registry: Registry;
  private apiServer: ApiServer | undefined;
  private controlPort: ClickControlPort | undefined;
  private metricsServer: MetricsServer | undefined;
  private readonly links: UdpLink[] = [];
  /** What the allocator keeps of freed memory, as start() set it (xianet/allocator.ts). */
  allocator: AllocatorSetting | undefined;

  constructor(
    readonly config: NodeConfig,
    components: NodeDaemonComponents = {},
  ) {
    this.logger = components.logger ?? createLogger({ component: 'node', level: config.logLevel });
    this.registry = components.registry ?? createRegistry({ processMetrics: true, defaultLabels: { node: config.name } });
    const identity = Identity.loadOrCreate(config.keyFile);
    const adIdentity = config.adKeyFile ? Identity.loadOrCreate(config.adKeyFile) : undefined;
    this.stack = new XiaStack(
      {
        name: config.name,
        role: config.role,
        identity,
        adIdentity,
        beaconIntervalMs: config.beaconIntervalMs,
        helloIntervalMs: config.helloIntervalMs,
        xroute: { registeredHostMs: config.registeredHostMs },
        nameServer: config.nameServer ? Dag.parse(config.nameServer) : undefined,
        trustedAds: config.trustedAds.map((text) => Xid.parse(text)),
        join: { acceptUnsigned: config.acceptUnsignedBeacons },
      },
      { logger: this.logger, registry: this.registry },
    );
    for (const iface of config.interfaces) {
      const link = new UdpLink({
        name: iface.name,
        bindAddress: iface.bind,
        port: iface.port,
        peers: iface.peers,
        multicastGroup: iface.multicastGroup,
        multicastInterface: iface.multicastInterface,
        mtu: iface.mtu,
        impairment: iface.impairment,
        socketBufferBytes: iface.socketBufferBytes ?? DEFAULT_SOCKET_BUFFER_BYTES,
      });
      this.links.push(link);
      this.stack.addInterface(link, { hostFacing: iface.hostFacing });
    }
    this.api = new LocalNodeApi(this.stack);
    registerImpairmentMetrics(this.registry, config.name, this.links);
    registerUdpLinkMetrics(this.registry, config.name, this.links);
  }

  get node() {
    return this.stack.node;
  }

  /** The control port's address (a socket path, or "127.0.0.1:7777" on TCP), once started. */
  get controlAddress(): string | undefined {
    return this.controlPort?.address;
  }

  get metricsUrl(): string | undefined {
    return this.metricsServer?.url;
  }

  private installStaticRoutes(): void {
    for (const route of this.config.routes) {
      const type = parseXidTypeName(route.type)!;
      this.node.routes.set(type, {
        xid: route.xid === '-' ? undefined : Xid.parse(route.xid),
        port: route.port,
        nextHop: route.nextHop ? Xid.parse(route.nextHop) : undefined,
        flags: route.flags,
        origin: 'static' satisfies RouteOrigin,
      });
    }
  }

  async start(): Promise<void> {
    const allocator = keepFreedMemory(this.config.keepFreedMemoryBytes ?? DEFAULT_KEEP_FREED_MEMORY_BYTES);
    this.allocator = allocator;
    try {
      await this.stack.start();
      this.installStaticRoutes();
      if (this.config.controlPort) {
        const { limits, ...listen } = this.config.controlPort;
        this.controlPort = new ClickControlPort(this.node, listen, { limits, logger: this.logger, registry: this.registry });
        await this.controlPort.start();
      }
      if (this.config.apiSocket) {
        this.apiServer = new ApiServer(this.api, this.config.apiSocket, { logger: this.logger, refusals: this.node.refusals });
        await this.apiServer.start();
      }
      if (this.config.metrics) this.metricsServer = await startMetricsServer(this.registry, this.config.metrics);
    } catch (error) {
      this.logger.error('node.start-failed', { reason: errorMessage(error) });
      await this.stop();
      throw error;
    }
    this.logger.info('node.ready', {
      role: this.config.role,
      hid: this.node.hid.toString(),
      ad: this.node.ad?.toString(),
      interfaces: this.links.map((l) => `${l.name}=${l.address}`),
      /** Largest XIP packet per interface, and which are impaired. */
      mtus: this.links.map((l) => l.mtu),
      impaired: this.links.filter((l) => l.impairment).map((l) => l.name),
      /** How the links send: batched by the native addon (udp-batch.ts), or node:dgram per packet and why. */
      udpBatch: udpBatchState(),
      /** What glibc keeps of freed memory (xianet/allocator.ts). */
      allocator: describeAllocator(allocator),
      /** Socket buffers as the kernel has them (receive/send, twice the size set), and why smaller than asked. */
      socketBuffers: this.links.map((l) => `${l.name}=${l.bufferBytes.receive}/${l.bufferBytes.send}${l.bufferBytes.limited ? ` (${l.bufferBytes.limited})` : ''}`),
      control: this.controlAddress,
      api: this.config.apiSocket,
      metrics: this.metricsUrl,
    });
  }

  async stop(): Promise<void> {
    await this.metricsServer?.close();
    await this.apiServer?.stop();
    await this.controlPort?.stop();
    await this.api.close();
    await this.stack.stop();
    this.metricsServer = undefined;
    this.apiServer = undefined;
    this.controlPort = undefined;
  }
}

function udpBatchState(): string {
  const { addon, reason } = udpBatchAddon();
  return addon ? 'sendmmsg+gso' : `node:dgram (${reason})`;
}
