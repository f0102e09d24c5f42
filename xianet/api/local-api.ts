/** The application API served in-process, straight on a node's stack. */
import { randomBytes } from 'node:crypto';
import type { Dag } from '../../shared/dag.js';
import { BadRequestError, XmigError } from '../../shared/errors.js';
import { Xid, XidType } from '../../shared/xid.js';
import { xipHeaderLength, xipSrcDag } from '../../shared/xip-header.js';
import type { XiaNode } from '../node.js';
import { TRANSPORT_HEADER_LENGTH } from '../transport-header.js';
import { ChunkFetcher, registerFetcherMetrics } from '../chunk/chunk-fetcher.js';
import { datagramData } from '../datagram.js';
import type { Gateway } from '../host-join.js';
import type { ReceivedBeacon } from '../xhcp.js';
import type { XiaStack } from '../stack.js';
import { ping, type PingOptions, type PingSummary } from '../xping.js';
import type {
  BeaconEvent,
  ConnectOptions,
  StreamConnection,
  StreamServer,
  Datagram,
  DatagramSocket,
  FetchChunkOptions,
  GatewayEvent,
  NodeApi,
  NodeEventName,
  NodeEvents,
  NodeInfo,
} from './node-api.js';

/** A datagram must fit one packet on the node's smallest link (datagrams are never fragmented). */
function checkDatagramSize(node: XiaNode, dst: Dag, src: Dag, bytes: number): void {
  const max = node.mtu - xipHeaderLength(dst.length, src.length) - TRANSPORT_HEADER_LENGTH;
  if (bytes > max) throw new BadRequestError('body', `a datagram of ${bytes} bytes does not fit one packet on ${node.name}'s smallest link: at most ${max} toward this DAG`);
}

export function randomSid(): Xid {
  return Xid.of(XidType.SID, randomBytes(20));
}

export class LocalNodeApi implements NodeApi {
  private readonly cleanups = new Set<() => void>();

  constructor(readonly stack: XiaStack) {
    const registry = stack.node.registry;
    if (registry) registerFetcherMetrics(registry, stack.node.name, () => this.fetcher);
  }

  async info(): Promise<NodeInfo> {
    const node = this.stack.node;
    return {
      name: node.name,
      role: node.role,
      hid: node.hid,
      ad: node.ad,
      address: node.address(),
      nameServer: this.stack.join?.gateway?.nameServer ?? this.stack.beacons?.nameServer,
      interfaces: node.interfaceList.map((i) => ({ port: i.port, name: i.link.name, address: i.link.address, hostFacing: i.hostFacing })),
    };
  }

  async on<E extends NodeEventName>(event: E, listener: (payload: NodeEvents[E]) => void): Promise<() => void> {
    const join = this.stack.join;
    if (!join) throw new XmigError('ERR_STATE', `${this.stack.node.name} is a router: it sends beacons, it does not follow them`);
    const emit = listener as (payload: unknown) => void;
    let off: () => void;
    switch (event) {
      case 'beacon':
      case 'beacon-stray': {
        const name = event === 'beacon' ? 'beacon' : 'stray';
        const handler = ({ beacon, port }: { beacon: ReceivedBeacon; port: number }): void =>
          emit({
            ad: beacon.ad,
            gatewayHid: beacon.gatewayHid,
            seq: beacon.seq,
            linkId: beacon.linkId,
            port,
            nameServer: beacon.nameServer,
            authenticated: beacon.authenticated,
            heardAt: Date.now(),
          } satisfies BeaconEvent);
        join.on(name, handler);
        off = () => join.off(name, handler);
        break;
      }
      case 'gateway': {
        const handler = (change: { previous: Gateway | undefined; current: Gateway; kind: GatewayEvent['kind'] }): void =>
          emit({
            kind: change.kind,
            ad: change.current.ad,
            gatewayHid: change.current.hid,
            port: change.current.port,
            linkId: change.current.linkId,
            previousAd: change.previous?.ad,
            previousGatewayHid: change.previous?.hid,
            previousPort: change.previous?.port,
            previousLinkId: change.previous?.linkId,
            nameServer: change.current.nameServer,
            heardAt: Date.now(),
          } satisfies GatewayEvent);
        join.on('gateway', handler);
        off = () => join.off('gateway', handler);
        break;
      }
      case 'registered': {
        const handler = (r: { gateway: Gateway; seq: number; ms: number }): void =>
          emit({ gatewayHid: r.gateway.hid, seq: r.seq, ms: r.ms });
        join.on('registered', handler);
        off = () => join.off('registered', handler);
        break;
      }
      case 'beacon-rejected': {
        const handler = (r: { reason: string; ad?: Xid }): void => emit({ reason: r.reason, ad: r.ad });
        join.on('rejected', handler);
        off = () => join.off('rejected', handler);
        break;
      }
      default:
        throw new XmigError('ERR_STATE', `no such node event "${String(event)}"`);
    }
    this.cleanups.add(off);
    return () => {
      off();
      this.cleanups.delete(off);
    };
  }

  async solicitBeacon(): Promise<void> {
    this.stack.join?.invalidate();
    this.stack.join?.solicit();
  }

  async announce(): Promise<void> {
    this.stack.xroute.sendHellos();
  }

  ping(dst: Dag, options: PingOptions = {}): Promise<PingSummary> {
    return ping(this.stack.node, dst, options);
  }

  async bindDatagram(sid: Xid = randomSid()): Promise<DatagramSocket> {
    const node = this.stack.node;
    const listeners = new Set<(d: Datagram) => void>();
    const unbind = node.bind(sid, (packet, arrival) => {
      const data = datagramData(packet, arrival);
      if (!data) return;
      let from: Dag;
      try {
        from = xipSrcDag(packet);
      } catch {
        return;
      }
      for (const listener of listeners) listener({ data, from, port: arrival.port });
    });
    const cleanup = (): void => unbind();
    this.cleanups.add(cleanup);
    return {
      sid,
      address: async () => node.serviceAddress(sid),
      send: async (dst, data) => {
        const src = node.serviceAddress(sid);
        checkDatagramSize(node, dst, src, data.length);
        node.sendDatagram(dst, data, { src });
      },
      sendOnLink: async (port, dst, data) => {
        checkDatagramSize(node, dst, node.serviceAddress(sid), data.length);
        if (!node.sendDatagramOnPort(port, 'broadcast', dst, data, node.serviceAddress(sid))) {
          throw new XmigError('ERR_UNREACHABLE', `${node.name} has no interface ${port} on a segment`);
        }
      },
      onMessage: (listener) => void listeners.add(listener),
      close: async () => {
        cleanup();
        this.cleanups.delete(cleanup);
        listeners.clear();
      },
    };
  }

  async listen(sid: Xid = randomSid()): Promise<StreamServer> {
    const node = this.stack.node;
    const listeners = new Set<(connection: StreamConnection) => void>();
    const listener = this.stack.streams.listen(sid, (connection) => {
      for (const l of listeners) l(connection);
    });
    const cleanup = (): void => listener.close();
    this.cleanups.add(cleanup);
    return {
      sid,
      address: async () => node.serviceAddress(sid),
      onConnection: (l) => void listeners.add(l),
      close: async () => {
        cleanup();
        this.cleanups.delete(cleanup);
      },
    };
  }

  async connect(dst: Dag, options: ConnectOptions = {}): Promise<StreamConnection> {
    return this.stack.streams.connect(dst, {
      followPeerAddress: !options.pinPeerAddress,
      outageTimeoutMs: options.outageTimeoutMs,
      connectTimeoutMs: options.connectTimeoutMs,
      signal: options.signal,
    });
  }

  private fetcher: ChunkFetcher | undefined;

  /** The node's chunk fetcher, once something has fetched (its window and stats). */
  get chunkFetcher(): ChunkFetcher | undefined {
    return this.fetcher;
  }

  async publishChunks(chunks: Buffer[], options: { noStore?: boolean } = {}): Promise<Xid[]> {
    return chunks.map((chunk) => this.stack.chunks.publish(chunk, options));
  }

  async unpublishChunks(cids: Xid[]): Promise<void> {
    for (const cid of cids) this.stack.chunks.unpublish(cid);
  }

  async fetchChunk(cid: Xid, source: Dag, options: FetchChunkOptions = {}): Promise<Buffer> {
    const pieces = await this.fetchChunkPieces(cid, source, options);
    return pieces.length === 1 ? pieces[0]! : Buffer.concat(pieces);
  }

  async fetchChunkPieces(cid: Xid, source: Dag, options: FetchChunkOptions = {}): Promise<Buffer[]> {
    if (!this.fetcher) {
      const fetcher = new ChunkFetcher(this.stack.node);
      fetcher.start();
      this.fetcher = fetcher;
      this.cleanups.add(() => {
        fetcher.stop();
        this.fetcher = undefined;
      });
    }
    return this.fetcher.fetchPieces(cid, source, options);
  }

  async close(): Promise<void> {
    for (const cleanup of this.cleanups) cleanup();
    this.cleanups.clear();
  }
}

