/**
 * A node's CHUNK service: serves the chunks it publishes (its store) and, on a
 * router, the chunks it has cached. Each chunk it can serve is a CID route with
 * port -2 (local), as in xia-core, so an ordinary forwarding decision finds it:
 * a request whose CID edge is local is answered here instead of being forwarded.
 * A request names a byte range; the answer is that range cut into DATA datagrams
 * no larger than this node's MTU allows or the requester asked for. The service
 * keeps no state per request: pacing, loss recovery and retries are the fetcher's.
 *
 * A caching router also watches CHUNK data it forwards, reassembles each chunk,
 * verifies its CID, and caches it: a second request is answered without
 * reaching the origin.
 *
 * Bounded (shared/limits.ts): the store by bytes (`storeBytes`, a publish past it is
 * refused), reassemblies for the cache by count and bytes (a quarter of the cache:
 * forged fragments of chunks that never complete push out the oldest, never more),
 * every refusal counted in `refusals` (`xianet_chunk_refusals_total`).
 */
import { createHash } from 'node:crypto';
import { Dag } from '../../shared/dag.js';
import { MalformedPacketError, XmigError } from '../../shared/errors.js';
import { LruMap, Refusals } from '../../shared/limits.js';
import { Xid, XidType } from '../../shared/xid.js';
import { encodeXipHeaderInto, NextHeader, XipOffset, xipSrcDag } from '../../shared/xip-header.js';
import type { Arrival, XiaNode } from '../node.js';
import { Port } from '../route-table.js';
import { TransportType } from '../transport-header.js';
import { ByteRanges } from './byte-ranges.js';
import { ChunkCache } from './chunk-cache.js';
import {
  CHUNK_DATA_HEADER_LENGTH,
  ChunkOp,
  decodeChunkMessage,
  MAX_CHUNK_BYTES,
  writeChunkDataHeader,
} from './chunk-messages.js';

export interface ChunkServiceOptions {
  /** Routers: bytes of cache for chunks passing through (0 = no cache). */
  cacheBytes?: number;
  /** Most chunks being reassembled at once for the cache (default 64). */
  maxAssemblies?: number;
  /** Most bytes of those reassemblies together (default a quarter of the cache). */
  assemblyBytes?: number;
  /** Most bytes of published chunks (default 1 GiB). */
  storeBytes?: number;
}

/** The store is full: a publisher must drop chunks (or wait for the receiver) before publishing more. */
export class ChunkStoreFullError extends XmigError {
  constructor(message: string) {
    super('ERR_CHUNK', message);
  }
}

interface Assembly {
  total: number;
  data: Buffer;
  have: ByteRanges;
  received: number;
}

export function cidKey(id: Buffer): string {
  return id.toString('latin1');
}

interface Published {
  data: Buffer;
  /** Routers on the way are asked not to cache it. */
  noStore: boolean;
}

export class ChunkService {
  private readonly store = new Map<string, Published>();
  private storeBytes = 0;
  private readonly storeLimit: number;
  readonly cache: ChunkCache | undefined;
  private readonly assemblies: LruMap<string, Assembly>;
  private unbind: (() => void) | undefined;
  readonly stats = { requests: 0, served: 0, servedFromCache: 0, notFound: 0, fragmentsSent: 0, cachedInTransit: 0, transitCorrupt: 0 };
  readonly refusals = new Refusals([
    ['chunk-store', 'budget'],
    ['chunk-reassembly', 'budget'],
    ['chunk-reassembly', 'cap'],
  ]);

  constructor(
    private readonly node: XiaNode,
    options: ChunkServiceOptions = {},
  ) {
    this.storeLimit = options.storeBytes ?? 1024 * 1024 * 1024;
    const cacheBytes = options.cacheBytes ?? 0;
    this.assemblies = new LruMap<string, Assembly>({
      maxEntries: options.maxAssemblies ?? 64,
      maxBytes: options.assemblyBytes ?? Math.max(1, Math.floor(cacheBytes / 4)),
      sizeOf: (assembly) => assembly.total,
      onEvict: () => this.refusals.refuse('chunk-reassembly', this.assemblies.size >= this.assemblies.maxEntries ? 'cap' : 'budget'),
    });
    if (node.registry) this.refusals.register(node.registry, 'xianet_chunk_refusals_total', 'CHUNK state refused or shed for its bounds, by resource and reason', { node: node.name });
    if (options.cacheBytes && options.cacheBytes > 0) {
      this.cache = new ChunkCache(options.cacheBytes);
      this.cache.onEvict = (key) => {
        if (!this.store.has(key)) this.node.routes.remove(XidType.CID, Xid.of(XidType.CID, Buffer.from(key, 'latin1')));
      };
    }
  }

  start(): void {
    this.unbind = this.node.bindType(XidType.CID, (packet, arrival) => this.onRequest(packet, arrival));
    if (this.cache) this.node.setTransitChunkTap((packet, at) => this.onTransit(packet, at));
  }

  stop(): void {
    this.unbind?.();
    this.unbind = undefined;
    if (this.cache) this.node.setTransitChunkTap(undefined);
  }

  /**
   * Publishes a chunk; returns its CID. The chunk stays until unpublished.
   * `noStore`: routers must not cache it (private, fetched once: a VM's memory).
   */
  publish(data: Buffer, options: { noStore?: boolean } = {}): Xid {
    if (data.length > MAX_CHUNK_BYTES) throw new XmigError('ERR_CHUNK', `chunk of ${data.length} bytes exceeds ${MAX_CHUNK_BYTES}`);
    const cid = Xid.hashOf(XidType.CID, data);
    const key = cidKey(cid.id);
    if (!this.store.has(key)) {
      if (this.storeBytes + data.length > this.storeLimit) {
        this.refusals.refuse('chunk-store', 'budget');
        throw new ChunkStoreFullError(`chunk store full: ${this.storeBytes} of ${this.storeLimit} bytes published`);
      }
      this.store.set(key, { data, noStore: options.noStore ?? false });
      this.storeBytes += data.length;
      this.node.routes.set(XidType.CID, { xid: cid, port: Port.LOCAL, nextHop: undefined, flags: 0, origin: 'local' });
    }
    return cid;
  }

  unpublish(cid: Xid): boolean {
    const key = cidKey(cid.id);
    const published = this.store.get(key);
    if (!published) return false;
    this.store.delete(key);
    this.storeBytes -= published.data.length;
    if (!this.cache?.has(key)) this.node.routes.remove(XidType.CID, cid);
    return true;
  }

  get published(): { chunks: number; bytes: number; limit: number } {
    return { chunks: this.store.size, bytes: this.storeBytes, limit: this.storeLimit };
  }

  /** Can `bytes` more be published now? */
  hasRoomFor(bytes: number): boolean {
    return this.storeBytes + bytes <= this.storeLimit;
  }

  /** Chunks being reassembled for the cache, and their bytes. */
  get reassembling(): { chunks: number; bytes: number } {
    return { chunks: this.assemblies.size, bytes: this.assemblies.bytes };
  }

  /** The DAG under which this node serves `cid`: CID intent, falling back to this host. */
  contentAddress(cid: Xid): Dag {
    return contentDag(this.node.address(), cid);
  }

  private onRequest(packet: Buffer, arrival: Arrival): void {
    const at = arrival.payloadOffset;
    if (arrival.payloadLength < 1 || packet[at] !== TransportType.CHUNK) return;
    let message;
    try {
      message = decodeChunkMessage(packet.subarray(at + 1, at + arrival.payloadLength));
    } catch {
      this.node.counters.dropped.malformed++;
      return;
    }
    if (message.op !== ChunkOp.REQUEST) return;
    this.stats.requests++;
    const key = cidKey(message.cid);
    const own = this.store.get(key);
    const data = own?.data ?? this.cache?.get(key);
    let requester: Dag;
    try {
      requester = xipSrcDag(packet);
    } catch (error) {
      if (error instanceof MalformedPacketError) return;
      throw error;
    }
    const cid = Xid.of(XidType.CID, message.cid);
    if (!data) {
      this.stats.notFound++;
      this.sendFragment(requester, cid, message.requestId, 0, Buffer.alloc(0), 0, ChunkOp.NOT_FOUND);
      return;
    }
    this.stats.served++;
    if (!own) this.stats.servedFromCache++;
    const offset = Math.min(message.offset, data.length);
    const end = message.length === 0 ? data.length : Math.min(data.length, offset + message.length);
    this.sendChunk(requester, cid, message.requestId, data, offset, end, own?.noStore ?? false, message.maxFragment ?? 0);
  }

  private sendChunk(requester: Dag, cid: Xid, requestId: number, data: Buffer, offset: number, end: number, noStore: boolean, maxFragment: number): void {
    const src = this.contentAddress(cid);
    const headerLength = encodeXipHeaderInto(undefined, { dst: requester, src }, 0);
    // Our MTU bounds what we send; the requester may know a smaller one on its side.
    let room = this.node.mtu - headerLength - CHUNK_DATA_HEADER_LENGTH;
    if (maxFragment > 0) room = Math.min(room, maxFragment);
    if (room <= 0) return;
    if (end === offset) {
      this.sendFragment(requester, cid, requestId, data.length, Buffer.alloc(0), offset, ChunkOp.DATA, src, noStore);
      return;
    }
    if (end - offset <= room) {
      this.sendFragment(requester, cid, requestId, data.length, data.subarray(offset, end), offset, ChunkOp.DATA, src, noStore);
      return;
    }
    // The fragments' XIP headers are alike but for the last one's payload length: written
    // once and copied, the fragments routed once (node.originateAlike) — per fragment only
    // a copy and the chunk header.
    const fields = { dst: requester, src, nextHeader: NextHeader.TRANSPORT };
    const template = Buffer.allocUnsafe(headerLength);
    encodeXipHeaderInto(template, fields, CHUNK_DATA_HEADER_LENGTH + room);
    const packets: Buffer[] = [];
    const pieces: Buffer[] = [];
    for (let from = offset; from < end; from += room) {
      const piece = data.subarray(from, Math.min(end, from + room));
      const packet = Buffer.allocUnsafe(headerLength + CHUNK_DATA_HEADER_LENGTH);
      template.copy(packet);
      if (piece.length !== room) packet.writeUInt16BE(CHUNK_DATA_HEADER_LENGTH + piece.length, XipOffset.PAYLOAD_LENGTH);
      writeChunkDataHeader(packet, headerLength, { requestId, cid: cid.id, total: data.length, offset: from, noStore }, ChunkOp.DATA);
      packets.push(packet);
      pieces.push(piece);
    }
    this.stats.fragmentsSent += packets.length;
    this.node.originateAlike(packets, pieces);
  }

  private sendFragment(requester: Dag, cid: Xid, requestId: number, total: number, piece: Buffer, offset: number, op: number, src = this.contentAddress(cid), noStore = false): void {
    const payloadLength = CHUNK_DATA_HEADER_LENGTH + piece.length;
    const fields = { dst: requester, src, nextHeader: NextHeader.TRANSPORT };
    const headerLength = encodeXipHeaderInto(undefined, fields, payloadLength);
    // The headers only: the piece is a view of the stored chunk and goes out behind them as is.
    const packet = Buffer.allocUnsafe(headerLength + CHUNK_DATA_HEADER_LENGTH);
    encodeXipHeaderInto(packet, fields, payloadLength);
    writeChunkDataHeader(packet, headerLength, { requestId, cid: cid.id, total, offset, noStore }, op);
    this.stats.fragmentsSent++;
    this.node.originate(packet, piece.length > 0 ? piece : undefined);
  }

  /** A CHUNK packet being forwarded: collect DATA fragments; cache a chunk once whole and verified. */
  private onTransit(packet: Buffer, payloadOffset: number): void {
    const cache = this.cache!;
    // One byte decides, before any parsing: NO_STORE data (op byte 0x82) is not ours to keep.
    if (packet[payloadOffset + 1] !== ChunkOp.DATA) return;
    let message;
    try {
      message = decodeChunkMessage(packet.subarray(payloadOffset + 1, payloadOffset + packet.readUInt16BE(2)));
    } catch {
      return;
    }
    if (message.op !== ChunkOp.DATA || message.total > cache.capacityBytes / 8) return;
    const key = cidKey(message.cid);
    if (cache.has(key) || this.store.has(key)) return;
    let assembly = this.assemblies.get(key);
    if (!assembly || assembly.total !== message.total) {
      assembly = { total: message.total, data: Buffer.allocUnsafe(message.total), have: new ByteRanges(), received: 0 };
      // Bounded by count and bytes: the oldest unfinished ones (forged fragments never finish) go first.
      if (!this.assemblies.set(key, assembly)) {
        this.refusals.refuse('chunk-reassembly', 'budget');
        return;
      }
    }
    const fresh = assembly.have.add(message.offset, message.offset + message.data.length);
    if (fresh === 0) return;
    message.data.copy(assembly.data, message.offset);
    assembly.received += fresh;
    if (assembly.received < assembly.total) return;
    this.assemblies.delete(key);
    const digest = createHash('sha1').update(assembly.data).digest();
    if (!digest.equals(message.cid)) {
      this.stats.transitCorrupt++;
      return;
    }
    if (cache.put(key, assembly.data)) {
      this.stats.cachedInTransit++;
      this.node.routes.set(XidType.CID, {
        xid: Xid.of(XidType.CID, message.cid),
        port: Port.LOCAL,
        nextHop: undefined,
        flags: 0,
        origin: 'local',
      });
    }
  }
}

/** `RE ( AD HID ) CID`: the chunk itself as intent, the host that has it as fallback (xia-core's content DAG). */
export function contentDag(host: Dag, cid: Xid): Dag {
  const ad = host.find(XidType.AD);
  const hid = host.find(XidType.HID);
  if (!hid) return Dag.chain(cid);
  const nodes = ad ? [ad, hid, cid] : [hid, cid];
  const edges = ad ? [[1], [2], []] : [[1], []];
  return Dag.create(nodes, edges, [nodes.length - 1, 0]);
}
