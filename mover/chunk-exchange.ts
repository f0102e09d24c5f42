/**
 * How chunks get from sender to receiver, behind one pair of interfaces:
 *  - XIA: the sender publishes chunks in its node's chunk store; the receiver's
 *    node fetches them with the CHUNK transport (receiver-driven, windowed, every
 *    chunk verified against its CID on arrival, cached by routers on the way);
 *  - TCP: the same REQUEST / DATA exchange travels on the control connection, and
 *    the receiver verifies each chunk's SHA-1 itself.
 */
import { createHash } from 'node:crypto';
import type { Dag } from '../shared/dag.js';
import { XmigError } from '../shared/errors.js';
import { Xid, XidType } from '../shared/xid.js';
import type { NodeApi } from '../xianet/api/node-api.js';
import type { ControlChannel } from './control-channel.js';
import { byteLength, MessageType } from './control-messages.js';

export interface ChunkPublisher {
  /** Makes the chunks available to the receiver; returns their CIDs (20-byte SHA-1 each). */
  publish(chunks: Buffer[]): Promise<Buffer[]>;
  /** The receiver has them: free them. */
  drop(cids: Buffer[]): Promise<void>;
  /** TCP mode: answer a REQUEST that came on the control channel. */
  serve?(cids: Buffer[], channel: ControlChannel): Promise<void>;
}

/** A chunk's bytes as the pieces they arrived in, in order (one piece, or a socket read each). */
export type ChunkBytes = Buffer[];

export interface ChunkRetriever {
  /** Bytes whose SHA-1 is `cid`. */
  fetch(cid: Buffer, length: number): Promise<ChunkBytes>;
  /** TCP mode: a DATA message arrived. */
  deliver?(cid: Buffer, data: ChunkBytes): void;
  /** TCP mode: requests now go on this channel (a reconnection). */
  attach?(channel: ControlChannel): void;
  readonly stats: { fetched: number; corrupt: number; bytes: number };
}

export function sha1(data: Buffer | ChunkBytes): Buffer {
  const hash = createHash('sha1');
  for (const piece of Buffer.isBuffer(data) ? [data] : data) hash.update(piece);
  return hash.digest();
}

export class XiaPublisher implements ChunkPublisher {
  constructor(private readonly api: NodeApi) {}

  async publish(chunks: Buffer[]): Promise<Buffer[]> {
    // The node hashes what it stores: one SHA-1 per chunk, not two. A VM's memory is
    // private and fetched once: routers on the way must not keep copies of it.
    return (await this.api.publishChunks(chunks, { noStore: true })).map((cid) => cid.id);
  }

  async drop(cids: Buffer[]): Promise<void> {
    await this.api.unpublishChunks(cids.map((id) => Xid.of(XidType.CID, id)));
  }
}

export class XiaRetriever implements ChunkRetriever {
  readonly stats = { fetched: 0, corrupt: 0, bytes: 0 };

  constructor(
    private readonly api: NodeApi,
    private readonly source: Dag,
  ) {}

  async fetch(cid: Buffer, length: number): Promise<ChunkBytes> {
    // The node's CHUNK fetcher verifies, asks again for what is lost, and paces its window;
    // the length (from the OFFER) lets it plan every request of the chunk at once.
    const data = await this.api.fetchChunk(Xid.of(XidType.CID, cid), this.source, { length });
    this.stats.fetched++;
    this.stats.bytes += data.length;
    return [data];
  }
}

export class TcpPublisher implements ChunkPublisher {
  private readonly store = new Map<string, Buffer>();

  async publish(chunks: Buffer[]): Promise<Buffer[]> {
    return chunks.map((chunk) => {
      const cid = sha1(chunk);
      this.store.set(cid.toString('latin1'), chunk);
      return cid;
    });
  }

  async drop(cids: Buffer[]): Promise<void> {
    for (const cid of cids) this.store.delete(cid.toString('latin1'));
  }

  async serve(cids: Buffer[], channel: ControlChannel): Promise<void> {
    for (const cid of cids) {
      const data = this.store.get(cid.toString('latin1'));
      if (!data) {
        await channel.send({ type: MessageType.ERROR, message: `no chunk ${cid.toString('hex')}` });
        continue;
      }
      await channel.send({ type: MessageType.DATA, cid: Buffer.from(cid), data: [data] });
    }
  }
}

interface Wanted {
  resolve: (data: ChunkBytes) => void;
  reject: (error: Error) => void;
  attempts: number;
}

export class TcpRetriever implements ChunkRetriever {
  readonly stats = { fetched: 0, corrupt: 0, bytes: 0 };
  private channel: ControlChannel | undefined;
  private readonly wanted = new Map<string, Wanted[]>();
  private batch: Buffer[] = [];
  private scheduled = false;

  attach(channel: ControlChannel): void {
    this.channel = channel;
    // Everything still wanted is asked for again on the new connection.
    this.batch = [...this.wanted.keys()].map((key) => Buffer.from(key, 'latin1'));
    this.flushSoon();
  }

  fetch(cid: Buffer): Promise<ChunkBytes> {
    const key = cid.toString('latin1');
    return new Promise<ChunkBytes>((resolve, reject) => {
      const list = this.wanted.get(key);
      if (list) {
        list.push({ resolve, reject, attempts: 0 });
        return;
      }
      this.wanted.set(key, [{ resolve, reject, attempts: 0 }]);
      this.batch.push(Buffer.from(cid));
      this.flushSoon();
    });
  }

  private flushSoon(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    queueMicrotask(() => {
      this.scheduled = false;
      const cids = this.batch.splice(0);
      if (cids.length === 0 || !this.channel || this.channel.closed) return;
      this.channel.send({ type: MessageType.REQUEST, cids }).catch(() => undefined);
    });
  }

  deliver(cid: Buffer, data: ChunkBytes): void {
    const key = cid.toString('latin1');
    const waiting = this.wanted.get(key);
    if (!waiting) return;
    if (!sha1(data).equals(cid)) {
      this.stats.corrupt++;
      const first = waiting[0]!;
      if (++first.attempts > 5) {
        this.wanted.delete(key);
        for (const w of waiting) w.reject(new XmigError('ERR_CHUNK', `chunk ${cid.toString('hex')} corrupt ${first.attempts} times`));
        return;
      }
      this.batch.push(Buffer.from(cid));
      this.flushSoon();
      return;
    }
    this.wanted.delete(key);
    this.stats.fetched++;
    this.stats.bytes += byteLength(data);
    // Views of what the socket read (Node gives every read a buffer of its own): no copy.
    for (const w of waiting) w.resolve(data);
  }
}
