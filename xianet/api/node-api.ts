/**
 * What applications on a machine can ask of its XIA node (xia-core's Xsocket API,
 * reshaped for Node.js). The same interface is served in-process (LocalNodeApi,
 * for the testbed and tests) and over a Unix socket (NodeClient, for daemons such
 * as the agent, the router plugin and the mover), so an application does not
 * care which it has.
 */
import type { Duplex } from 'node:stream';
import type { Dag } from '../../shared/dag.js';
import type { Xid } from '../../shared/xid.js';
import type { PingOptions, PingSummary } from '../xping.js';

export interface NodeInfo {
  name: string;
  role: 'router' | 'host';
  hid: Xid;
  ad: Xid | undefined;
  /** The node's own DAG (AD → HID, HID fallback). */
  address: Dag;
  /** The name server's DAG, as the gateway's beacons announce it. */
  nameServer: Dag | undefined;
  /** The node's interfaces. */
  interfaces: Array<{ port: number; name: string; address: string | undefined; hostFacing: boolean }>;
}

export interface BeaconEvent {
  ad: Xid;
  gatewayHid: Xid;
  seq: number;
  linkId: string | undefined;
  port: number;
  nameServer: Dag | undefined;
  authenticated: boolean;
  /** Wall-clock ms when the node heard it. */
  heardAt: number;
}

export interface GatewayEvent {
  kind: 'initial' | 'inter-ad' | 'intra-ad';
  ad: Xid;
  gatewayHid: Xid;
  port: number;
  linkId: string | undefined;
  previousAd: Xid | undefined;
  previousGatewayHid: Xid | undefined;
  previousPort: number | undefined;
  previousLinkId: string | undefined;
  nameServer: Dag | undefined;
  heardAt: number;
}

export interface RegisteredEvent {
  gatewayHid: Xid;
  seq: number;
  ms: number;
}

export interface RejectedBeaconEvent {
  reason: string;
  ad: Xid | undefined;
}

export interface NodeEvents {
  beacon: BeaconEvent;
  gateway: GatewayEvent;
  registered: RegisteredEvent;
  'beacon-rejected': RejectedBeaconEvent;
  'beacon-stray': BeaconEvent;
}
export type NodeEventName = keyof NodeEvents;

export interface Datagram {
  data: Buffer;
  /** The sender's DAG (its source address). */
  from: Dag;
  /** The node's interface it arrived on (-1: sent by this node to itself). */
  port: number;
}

export interface DatagramSocket {
  readonly sid: Xid;
  /** The DAG others send to: this node's address with the SID appended. */
  address(): Promise<Dag>;
  send(dst: Dag, data: Uint8Array): Promise<void>;
  /**
   * Sends to the whole segment behind one interface, bypassing the route tables
   * (one hop, like xia-core's daemons do to BHID): for neighbour protocols.
   */
  sendOnLink(port: number, dst: Dag, data: Uint8Array): Promise<void>;
  onMessage(listener: (datagram: Datagram) => void): void;
  close(): Promise<void>;
}

/** A STREAM connection: a Duplex of bytes, plus who is at the other end. */
export interface StreamConnection extends Duplex {
  readonly remote: Dag;
  readonly localSid: Xid;
}

export interface StreamServer {
  readonly sid: Xid;
  address(): Promise<Dag>;
  onConnection(listener: (connection: StreamConnection) => void): void;
  close(): Promise<void>;
}

export interface ConnectOptions {
  /** Keep sending to `dst` even if the peer's address changes (default false: follow the peer). */
  pinPeerAddress?: boolean;
  /** Give up after this long without hearing from the peer (default 30 s). */
  outageTimeoutMs?: number;
  /** Give up if the peer does not answer the handshake in this long (default 10 s). */
  connectTimeoutMs?: number;
  signal?: AbortSignal;
}

export interface FetchChunkOptions {
  signal?: AbortSignal;
  length?: number;
  timeoutMs?: number;
  /** Memory to assemble the chunk in (ChunkFetcher's FetchOptions.into): in-process only (LocalNodeApi); a remote node ignores it. */
  into?: Buffer;
}

export interface NodeApi {
  info(): Promise<NodeInfo>;
  /** Subscribe to node events; returns the unsubscribe function. */
  on<E extends NodeEventName>(event: E, listener: (payload: NodeEvents[E]) => void): Promise<() => void>;
  /** Ask the routers for a beacon now (after a resume, say). */
  solicitBeacon(): Promise<void>;
  /** HELLO on every interface now, so neighbours learn where this node is. */
  announce(): Promise<void>;
  ping(dst: Dag, options?: Omit<PingOptions, 'onResult'> & { onResult?: PingOptions['onResult'] }): Promise<PingSummary>;
  bindDatagram(sid?: Xid): Promise<DatagramSocket>;
  /** Accepts STREAM connections on `sid` (a fresh SID if none). */
  listen(sid?: Xid): Promise<StreamServer>;
  /** Opens a STREAM connection to `dst`. */
  connect(dst: Dag, options?: ConnectOptions): Promise<StreamConnection>;
  /**
   * Puts chunks in this node's store (served to anyone who asks) and returns their
   * CIDs. `noStore`: routers on the way must not cache them (private, fetched once).
   */
  publishChunks(chunks: Buffer[], options?: { noStore?: boolean }): Promise<Xid[]>;
  /** Removes chunks from the store. */
  unpublishChunks(cids: Xid[]): Promise<void>;
  /**
   * Fetches a chunk published by the host at `source`; resolves with bytes that hash to
   * `cid`. `length` (if known) lets all its requests be planned at once; `timeoutMs` is
   * a deadline; `signal` cancels it (a client that goes away cancels all of its fetches).
   */
  fetchChunk(cid: Xid, source: Dag, options?: FetchChunkOptions): Promise<Buffer>;
  /**
   * The same, as the pieces the chunk arrived in (in order), for a caller that writes
   * them out as they are: in-process only (LocalNodeApi), where no copy is needed.
   */
  fetchChunkPieces?(cid: Xid, source: Dag, options?: FetchChunkOptions): Promise<Buffer[]>;
  close(): Promise<void>;
}
