/**
 * STREAM on a node: binds SIDs, demultiplexes segments to connections by
 * connection ID (never by address: that is what lets a connection follow a
 * migrating peer), opens server connections on a handshake (bounded while half-open,
 * handed to the listener once confirmed: half-open-connections.ts), answers segments for
 * unknown connections with a RESET, and builds the XIP packets connections send,
 * reusing each connection's encoded header while its addresses stay the same.
 */
import { randomBytes } from 'node:crypto';
import { Dag } from '../../shared/dag.js';
import { BadRequestError, MalformedPacketError, XmigError } from '../../shared/errors.js';
import { Xid, XidType } from '../../shared/xid.js';
import {
  encodeXipHeaderInto,
  NextHeader,
  XIP_NODE_LENGTH,
  XipOffset,
  xipSrcDag,
} from '../../shared/xip-header.js';
import type { Arrival, XiaNode } from '../node.js';
import { TransportType } from '../transport-header.js';
import { HalfOpenConnections, type HalfOpenLimits } from './half-open-connections.js';
import { ResetCode, StreamConnection, StreamError, type StreamLower, type StreamOptions, type StreamPath } from './stream-connection.js';
import { XcmpType, XcmpUnreachableCode } from '../xcmp.js';
import { isHandshakeInit, readSegmentHeader, SegmentWriter, segmentWantsAnswer } from './stream-segment.js';

/** setTimeout's limit (2^31 - 1 ms); a larger delay would fire at once. */
const MAX_TIMER_MS = 2_147_483_647;

export interface ConnectOptions extends StreamOptions {
  /** Give up if the handshake does not complete in this long (default 10 s). */
  connectTimeoutMs?: number;
  signal?: AbortSignal;
}

export interface Listener {
  sid: Xid;
  close(): void;
}

/** A SID bound for STREAM: by a listener, and by the connections accepted on it. */
interface Binding {
  sid: Xid;
  listener: { onConnection: (c: StreamConnection) => void; options: StreamOptions } | undefined;
  connections: number;
  unbind: () => void;
}

interface Tombstone {
  peer: Dag;
  timer: NodeJS.Timeout;
  onGone: (() => void) | undefined;
}

export class StreamTransport {
  private readonly connections = new Map<string, StreamConnection>();
  private readonly tombstones = new Map<string, Tombstone>();
  private readonly bindings = new Map<string, Binding>();
  /** The last address other than its peer's that each connection heard from (a moved peer). */
  private readonly otherPaths = new WeakMap<StreamConnection, StreamPath>();
  /** `unknown`: segments for no connection, tombstone or handshake here; `softErrors`: XCMP net/host unreachable during a connect. */
  readonly stats = { accepted: 0, connected: 0, resetsSent: 0, malformed: 0, unknown: 0, softErrors: 0 };
  /** The last soft XCMP error each connecting connection was told (reported if its connect times out). */
  private readonly softErrors = new WeakMap<StreamConnection, string>();

  private readonly unlistenXcmp: () => void;
  private readonly halfOpen: HalfOpenConnections;
  /** Connections dropped before they were confirmed: gone at once, no tombstone to answer for them. */
  private readonly abandoned = new WeakSet<StreamConnection>();

  constructor(
    readonly node: XiaNode,
    private readonly defaults: StreamOptions = {},
    halfOpenLimits: Partial<HalfOpenLimits> = {},
  ) {
    this.unlistenXcmp = node.onXcmp((message) => this.onXcmpError(message.type, message.code, message.data));
    this.halfOpen = new HalfOpenConnections(halfOpenLimits, node.refusals, (connection) => {
      this.abandoned.add(connection);
      connection.abandon();
    });
  }

  /** Server connections waiting for their client's first acknowledgement. */
  get halfOpenCount(): number {
    return this.halfOpen.size;
  }

  /**
   * An XCMP error quoting one of our STREAM packets, for a connection still being set up.
   * As RFC 1122 (4.2.3.9) has TCP treat ICMP: "port unreachable" and "protocol unreachable"
   * are hard (nobody serves that SID there: refused at once); "net" and "host unreachable"
   * are soft (a route that lapsed while a starved host missed its refresh, or that a move
   * has not yet rewritten): the handshake goes on being retransmitted until the connect
   * deadline, and the last soft error is what that deadline reports.
   */
  private onXcmpError(type: number, code: number, quoted: Buffer): void {
    if (type !== XcmpType.UNREACHABLE || quoted.length < XipOffset.NODES) return;
    const at = XipOffset.NODES + (quoted[XipOffset.DST_NODES]! + quoted[XipOffset.SRC_NODES]!) * XIP_NODE_LENGTH;
    if (quoted[XipOffset.NEXT_HEADER] !== NextHeader.TRANSPORT || quoted[at] !== TransportType.STREAM || quoted.length < at + 10) return;
    const connection = this.connections.get(quoted.toString('latin1', at + 2, at + 10));
    if (!connection || connection.state.established) return;
    const message = `${connection.remote} is unreachable (XCMP code ${code})`;
    if (code === XcmpUnreachableCode.PORT || code === XcmpUnreachableCode.PROTOCOL) {
      connection.destroy(new StreamError('refused', message));
      return;
    }
    this.stats.softErrors++;
    this.softErrors.set(connection, message);
  }

  get connectionCount(): number {
    return this.connections.size;
  }

  /** Accepts connections to `sid`; returns a handle that stops listening. */
  listen(sid: Xid, onConnection: (connection: StreamConnection) => void, options: StreamOptions = {}): Listener {
    // Like SO_REUSEADDR: a SID whose listener has gone but whose connections live on
    // (or linger after closing) may be listened on again at once.
    const lingering = this.bindings.get(sid.key);
    const binding: Binding = lingering && !lingering.listener ? lingering : { sid, listener: undefined, connections: 0, unbind: () => undefined };
    const mine = { onConnection, options };
    binding.listener = mine;
    if (binding !== lingering) {
      binding.unbind = this.node.bind(sid, (packet, arrival) => this.onPacket(packet, arrival, sid, binding.listener));
      this.bindings.set(sid.key, binding);
    }
    return {
      sid,
      // Stops accepting; connections already accepted on the SID live on (as with TCP).
      close: () => {
        if (binding.listener === mine) binding.listener = undefined;
        this.releaseBinding(binding);
      },
    };
  }

  private releaseBinding(binding: Binding): void {
    if (binding.listener || binding.connections > 0) return;
    binding.unbind();
    if (this.bindings.get(binding.sid.key) === binding) this.bindings.delete(binding.sid.key);
  }

  /** Opens a connection to `dst` from a fresh SID; resolves once the peer accepted. */
  connect(dst: Dag, options: ConnectOptions = {}): Promise<StreamConnection> {
    // What the API schema checks, checked again for in-process callers: a bad address
    // here used to surface as a RangeError in a microtask, taking the daemon with it.
    if (!(dst instanceof Dag)) return Promise.reject(new BadRequestError('dst', 'connect: the destination is not a DAG'));
    const timeout = options.connectTimeoutMs;
    if (timeout !== undefined && !(Number.isInteger(timeout) && timeout >= 1 && timeout <= MAX_TIMER_MS)) {
      return Promise.reject(new BadRequestError('connectTimeoutMs', `connect: connectTimeoutMs must be an integer in 1..${MAX_TIMER_MS}`));
    }
    const sid = Xid.of(XidType.SID, randomBytes(20));
    const unbind = this.node.bind(sid, (packet, arrival) => this.onPacket(packet, arrival, sid, undefined));
    const connection = this.create('client', randomBytes(8), sid, { dag: dst, key: Buffer.alloc(0) }, undefined, { ...options }, unbind);
    return new Promise<StreamConnection>((resolve, reject) => {
      const timeoutMs = options.connectTimeoutMs ?? 10_000;
      const fail = (error: Error): void => {
        cleanup();
        connection.destroy();
        reject(error);
      };
      const timer = setTimeout(() => {
        const soft = this.softErrors.get(connection);
        fail(new StreamError('timeout', `no answer from ${dst} within ${timeoutMs} ms${soft ? `; last error: ${soft}` : ''}`));
      }, timeoutMs);
      const onAbort = (): void => fail(new XmigError('ERR_CONNECTION', 'connect aborted'));
      const onError = (error: Error): void => fail(error);
      const onEstablished = (): void => {
        cleanup();
        this.stats.connected++;
        resolve(connection);
      };
      const cleanup = (): void => {
        clearTimeout(timer);
        options.signal?.removeEventListener('abort', onAbort);
        connection.off('error', onError);
        connection.off('established', onEstablished);
      };
      options.signal?.addEventListener('abort', onAbort, { once: true });
      connection.once('error', onError);
      connection.once('established', onEstablished);
    });
  }

  /** Every connection probes now (this node is back on the network after a move or pause); returns how many. */
  probeAll(): number {
    for (const connection of this.connections.values()) connection.probeNow();
    return this.connections.size;
  }

  /** Destroys every connection (the node is going away). */
  close(): void {
    this.unlistenXcmp();
    this.halfOpen.clear();
    for (const connection of this.connections.values()) connection.destroy();
    for (const tombstone of this.tombstones.values()) {
      clearTimeout(tombstone.timer);
      tombstone.onGone?.();
    }
    this.tombstones.clear();
  }

  private create(
    role: 'client' | 'server',
    connectionId: Buffer,
    localSid: Xid,
    peer: StreamPath,
    peerMaxData: number | undefined,
    options: StreamOptions,
    onGone?: () => void,
  ): StreamConnection {
    const lower = this.lowerFor(localSid, onGone);
    const connection = new StreamConnection(lower, {
      role,
      connectionId,
      localSid,
      peer,
      peerMaxData,
      options: { ...this.defaults, ...options },
    });
    this.connections.set(connectionId.toString('latin1'), connection);
    return connection;
  }

  /** The per-connection view of the node: header building with a cache of the last header. */
  private lowerFor(localSid: Xid, onGone: (() => void) | undefined): StreamLower {
    const node = this.node;
    let cached: { peer: Dag; ad: Xid | undefined; header: Buffer } | undefined;
    const header = (peer: Dag): Buffer => {
      if (cached && cached.peer === peer && cached.ad === node.ad) return cached.header;
      const fields = { dst: peer, src: node.serviceAddress(localSid), nextHeader: NextHeader.TRANSPORT };
      const length = encodeXipHeaderInto(undefined, fields, 0);
      const bytes = Buffer.allocUnsafe(length);
      encodeXipHeaderInto(bytes, fields, 0);
      cached = { peer, ad: node.ad, header: bytes };
      return bytes;
    };
    return {
      headerRoom: (peer) => header(peer).length,
      transmit: (writer: SegmentWriter, peer: Dag) => {
        const bytes = header(peer);
        bytes.copy(writer.buffer, 0);
        writer.buffer.writeUInt16BE(writer.length - bytes.length, XipOffset.PAYLOAD_LENGTH);
        node.originate(writer.buffer.subarray(0, writer.length));
      },
      get maxSegment() {
        // The path MTU we know of is our own links'; leave room for DAGs of up to 6 nodes each.
        return node.mtu - (XipOffset.NODES + 12 * XIP_NODE_LENGTH) - 1;
      },
      release: (connection) => this.release(connection, onGone),
      unconfirmedData: () => node.refusals.refuse('stream-handshake-data', 'forbidden'),
    };
  }

  private release(connection: StreamConnection, onGone: (() => void) | undefined): void {
    const key = connection.connectionId.toString('latin1');
    if (this.connections.get(key) !== connection) return;
    this.connections.delete(key);
    this.halfOpen.remove(connection);
    if (this.abandoned.has(connection)) {
      // Never confirmed: a later packet of it is answered with a RESET, not a tombstone's ACK.
      onGone?.();
      return;
    }
    // Linger briefly (the client's SID still bound), to acknowledge a peer that did
    // not hear our last ACK of its FIN.
    const timer = setTimeout(() => {
      this.tombstones.delete(key);
      onGone?.();
    }, 3000);
    timer.unref();
    this.tombstones.set(key, { peer: connection.remote, timer, onGone });
  }

  private onPacket(
    packet: Buffer,
    arrival: Arrival,
    sid: Xid,
    listener: { onConnection: (c: StreamConnection) => void; options: StreamOptions } | undefined,
  ): void {
    const at = arrival.payloadOffset;
    if (arrival.payloadLength < 1 || packet[at] !== TransportType.STREAM) return;
    const segment = packet.subarray(at + 1, at + arrival.payloadLength);
    let header;
    try {
      header = readSegmentHeader(segment);
    } catch {
      this.stats.malformed++;
      this.node.counters.dropped.malformed++;
      return;
    }
    const key = header.connectionId.toString('latin1');
    const srcAt = XipOffset.NODES + packet[XipOffset.DST_NODES]! * XIP_NODE_LENGTH;
    const srcKey = packet.subarray(srcAt, srcAt + packet[XipOffset.SRC_NODES]! * XIP_NODE_LENGTH);
    const connection = this.connections.get(key);
    if (connection) {
      if (!connection.localSid.equals(sid)) return;
      if (connection.awaitingConfirmation) this.halfOpen.heard(connection);
      connection.receive(segment, header.packetNumber, header.framesAt, this.pathOf(connection, packet, srcKey) ?? connection.peerPath);
      return;
    }
    const tombstone = this.tombstones.get(key);
    if (tombstone) {
      // Never answer an answer (see segmentWantsAnswer).
      if (segmentWantsAnswer(segment, header.framesAt)) {
        this.sendControl(header.connectionId, tombstone.peer, sid, (w) => w.ack([[header.packetNumber, header.packetNumber + 1]]));
      }
      return;
    }
    if (listener && isHandshakeInit(segment)) {
      const source = this.sourceDag(packet);
      if (!source) return;
      const host = sourceHost(source);
      if (!this.halfOpen.admit(host)) return;
      const binding = this.bindings.get(sid.key)!;
      binding.connections++;
      const created = this.create('server', Buffer.from(header.connectionId), sid, { dag: source, key: Buffer.from(srcKey) }, undefined, listener.options, () => {
        binding.connections--;
        this.releaseBinding(binding);
      });
      // Nobody holds it yet: its failure (a RESET, an outage) must not be an unhandled 'error'.
      created.on('error', ignore);
      created.once('confirmed', () => this.confirmed(created, binding, listener));
      this.halfOpen.add(created, host);
      created.receive(segment, header.packetNumber, header.framesAt, created.peerPath);
      return;
    }
    this.stats.unknown++;
    if (!segmentWantsAnswer(segment, header.framesAt)) return;
    const source = this.sourceDag(packet);
    if (!source) return;
    this.stats.resetsSent++;
    this.sendControl(header.connectionId, source, sid, (w) => w.reset(ResetCode.UNKNOWN_CONNECTION));
  }

  /** A half-open connection's client acknowledged our accept: the listener gets it now. */
  private confirmed(connection: StreamConnection, binding: Binding, listener: NonNullable<Binding['listener']>): void {
    if (!this.halfOpen.remove(connection) || connection.destroyed) return;
    if (binding.listener !== listener) {
      // Nobody listens any more: the client gets a RESET.
      connection.destroy();
      return;
    }
    connection.off('error', ignore);
    this.stats.accepted++;
    listener.onConnection(connection);
  }

  /** Where this packet came from, decoding the source DAG only when its bytes are new. */
  private pathOf(connection: StreamConnection, packet: Buffer, srcKey: Buffer): StreamPath | undefined {
    const current = connection.peerPath;
    if (srcKey.equals(current.key)) return current;
    const seen = this.otherPaths.get(connection);
    if (seen && srcKey.equals(seen.key)) return seen;
    const dag = this.sourceDag(packet);
    if (!dag) return undefined;
    if (current.key.length === 0 && dag.equals(current.dag)) {
      // A client's first answer: the address it dialled, now with its bytes known.
      current.key = Buffer.from(srcKey);
      return current;
    }
    const path = { dag, key: Buffer.from(srcKey) };
    this.otherPaths.set(connection, path);
    return path;
  }

  private sourceDag(packet: Buffer): Dag | undefined {
    try {
      return xipSrcDag(packet);
    } catch (error) {
      if (error instanceof MalformedPacketError) return undefined;
      throw error;
    }
  }

  /** A one-off packet for a connection this node has no state for (RESET, or a tombstone's ACK). */
  private sendControl(connectionId: Buffer, peer: Dag, sid: Xid, write: (writer: SegmentWriter) => void): void {
    const fields = { dst: peer, src: this.node.serviceAddress(sid), nextHeader: NextHeader.TRANSPORT };
    const room = encodeXipHeaderInto(undefined, fields, 0);
    const writer = new SegmentWriter(32, room, connectionId, 0);
    write(writer);
    encodeXipHeaderInto(writer.buffer, fields, writer.length - room);
    this.node.originate(writer.buffer.subarray(0, writer.length));
  }
}

/** The host a source DAG names (its HID), what half-open connections are counted by. */
function sourceHost(source: Dag): string {
  return source.find(XidType.HID)?.key ?? source.toString();
}

function ignore(): void {}
