/**
 * How chunks get from sender to receiver, behind one pair of interfaces:
 *  - XIA: the sender publishes chunks in its node's chunk store; the receiver's
 *    node fetches them with the CHUNK transport (receiver-driven, windowed, every
 *    chunk verified against its CID on arrival, cached by routers on the way);
 *  - TCP: the same REQUEST / DATA exchange travels on the control connection, and
 *    the receiver verifies each chunk's SHA-1 itself.
 */
import { createHash } from 'node:crypto';
import { setMaxListeners } from 'node:events';
import type { Dag } from '../shared/dag.js';
import { XmigError } from '../shared/errors.js';
import { Xid, XidType } from '../shared/xid.js';
import type { NodeApi } from '../xianet/api/node-api.js';
import type { ControlChannel } from './control-channel.js';
import { byteLength, MessageType } from './control-messages.js';
import { DEFAULT_CHUNK_BYTES } from './chunk-pool.js';
import { ChunkMemory } from '../xianet/chunk/chunk-memory.js';

export interface ChunkPublisher {
  /** Makes the chunks available to the receiver; returns their CIDs (20-byte SHA-1 each). */
  publish(chunks: Buffer[]): Promise<Buffer[]>;
  /**
   * The receiver has them: free them. Returns the chunk buffers nobody holds any longer
   * (they may be filled again), if the publisher knows.
   */
  drop(cids: Buffer[]): Promise<Buffer[] | void>;
  /** TCP mode: answer a REQUEST that came on the control channel. */
  serve?(cids: Buffer[], channel: ControlChannel): Promise<void>;
  /** The migration is over (failed): free whatever is still published. */
  release?(): Promise<void>;
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
  /** The migration is over: every fetch still running stops (and rejects). */
  cancel?(): void;
  /**
   * The caller is done with what a fetch gave it (written, and out of any cache): its
   * memory may be filled again. Each result at most once; a retriever that lends no
   * memory has no such method.
   */
  release?(data: ChunkBytes): void;
  readonly stats: { fetched: number; corrupt: number; bytes: number };
}

export function sha1(data: Buffer | ChunkBytes): Buffer {
  const hash = createHash('sha1');
  for (const piece of Buffer.isBuffer(data) ? [data] : data) hash.update(piece);
  return hash.digest();
}

export class XiaPublisher implements ChunkPublisher {
  /**
   * Published and not dropped, with how many offered chunks have that CID: the same
   * bytes may come again in a later round (a page pattern QEMU sends twice), and
   * dropping the first must not take away what the later one still needs.
   */
  private readonly live = new Map<string, { cid: Xid; uses: number; buffers: Buffer[] }>();

  constructor(private readonly api: NodeApi) {}

  async publish(chunks: Buffer[]): Promise<Buffer[]> {
    // The node hashes what it stores: one SHA-1 per chunk, not two. A VM's memory is
    // private and fetched once: routers on the way must not keep copies of it.
    const cids = await this.api.publishChunks(chunks, { noStore: true });
    cids.forEach((cid, i) => {
      const entry = this.live.get(cid.key);
      if (entry) {
        entry.uses++;
        entry.buffers.push(chunks[i]!);
      } else this.live.set(cid.key, { cid, uses: 1, buffers: [chunks[i]!] });
    });
    return cids.map((cid) => cid.id);
  }

  async drop(cids: Buffer[]): Promise<Buffer[]> {
    const gone: Xid[] = [];
    const freed: Buffer[] = [];
    for (const id of cids) {
      const cid = Xid.of(XidType.CID, id);
      const entry = this.live.get(cid.key);
      if (!entry || --entry.uses > 0) continue;
      this.live.delete(cid.key);
      gone.push(cid);
      freed.push(...entry.buffers);
    }
    // Unpublished first: a node on this side (LocalNodeApi) holds the first buffer until then.
    if (gone.length > 0) await this.api.unpublishChunks(gone);
    return freed;
  }

  async release(): Promise<void> {
    const left = [...this.live.values()].map((entry) => entry.cid);
    this.live.clear();
    if (left.length > 0) await this.api.unpublishChunks(left);
  }
}

/**
 * Bytes of chunks the receiver has asked its node for and not yet got, at most. The
 * node's API disconnects a client with more than `writeHardBytes` (96 MiB) of replies
 * queued toward it, and a migration offered a path-sized window (up to 256 MiB) used to
 * ask for all of it at once: when a long path delivered a burst of chunks (a lost
 * datagram recovered lets a run of them complete), their replies were queued faster than
 * recv read them and node B dropped it ("node API socket closed", at 0 % loss and 50 ms
 * per link, 3 runs in 16). 64 MiB is what the node's fetcher may have in flight anyway
 * (its window's cap), so asking for more at once gained nothing.
 */
export const RETRIEVER_BYTES_IN_FLIGHT = 64 * 1024 * 1024;

export class XiaRetriever implements ChunkRetriever {
  readonly stats = { fetched: 0, corrupt: 0, bytes: 0 };
  private readonly cancelled = new AbortController();
  /** Bytes asked for and not yet here, and the fetches waiting for room, in the order asked (that is the order written). */
  private inFlight = 0;
  private readonly waiting: Array<{ length: number; go: () => void }> = [];
  /** In the node (the API is in-process): memory the node's fetcher assembles chunks in, used again and again. */
  readonly memory: ChunkMemory | undefined;
  readonly release: ((data: ChunkBytes) => void) | undefined;

  constructor(
    private readonly api: NodeApi,
    private readonly source: Dag,
    private readonly maxBytesInFlight = RETRIEVER_BYTES_IN_FLIGHT,
  ) {
    // One signal for every fetch of the migration (hundreds at once): no listener warning.
    setMaxListeners(0, this.cancelled.signal);
    if (api.fetchChunkPieces) {
      const memory = new ChunkMemory(DEFAULT_CHUNK_BYTES);
      this.memory = memory;
      this.release = (data) => {
        const slot = data.length === 1 ? memory.slotOf(data[0]!) : undefined;
        if (slot) memory.giveBack(slot);
      };
    }
  }

  cancel(): void {
    this.cancelled.abort();
    // Each goes on to find the retrieval cancelled (and gives its room back as it ends).
    for (const w of this.waiting.splice(0)) {
      this.inFlight += w.length;
      w.go();
    }
  }

  async fetch(cid: Buffer, length: number): Promise<ChunkBytes> {
    await this.room(length);
    try {
      if (this.cancelled.signal.aborted) throw new XmigError('ERR_CHUNK', 'chunk retrieval cancelled');
      // The node's CHUNK fetcher verifies, asks again for what is lost, and paces its window;
      // the length (from the OFFER) lets it plan every request of the chunk at once.
      const xid = Xid.of(XidType.CID, cid);
      let data: ChunkBytes;
      if (this.api.fetchChunkPieces && this.memory) {
        // In the node (--via-node): assembled in memory of ours, which the caller gives back (release).
        const into = this.memory.lend(length);
        try {
          data = await this.api.fetchChunkPieces(xid, this.source, { length, signal: this.cancelled.signal, into });
        } catch (error) {
          this.memory.giveBack(into);
          throw error;
        }
        // Another fetch of the same CID was running: it brought its own bytes, and ours went unused.
        if (!ChunkMemory.holds(into, data)) this.memory.giveBack(into);
      } else data = [await this.api.fetchChunk(xid, this.source, { length, signal: this.cancelled.signal })];
      this.stats.fetched++;
      this.stats.bytes += byteLength(data);
      return data;
    } finally {
      this.inFlight -= length;
      this.admit();
    }
  }

  /** Waits until `length` more bytes fit (a chunk alone always does), behind every fetch asked before. */
  private room(length: number): Promise<void> {
    if (this.waiting.length === 0 && this.fits(length)) {
      this.inFlight += length;
      return Promise.resolve();
    }
    return new Promise((resolve) => this.waiting.push({ length, go: resolve }));
  }

  private fits(length: number): boolean {
    return this.inFlight === 0 || this.inFlight + length <= this.maxBytesInFlight;
  }

  private admit(): void {
    while (this.waiting.length > 0 && this.fits(this.waiting[0]!.length)) {
      const next = this.waiting.shift()!;
      this.inFlight += next.length;
      next.go();
    }
  }
}

export class TcpPublisher implements ChunkPublisher {
  /** By CID: the bytes, and how many offered chunks have them (as XiaPublisher counts). */
  private readonly store = new Map<string, { data: Buffer; uses: number; buffers: Buffer[] }>();

  async publish(chunks: Buffer[]): Promise<Buffer[]> {
    return chunks.map((chunk) => {
      const cid = sha1(chunk);
      const key = cid.toString('latin1');
      const entry = this.store.get(key);
      if (entry) {
        entry.uses++;
        entry.buffers.push(chunk);
      } else this.store.set(key, { data: chunk, uses: 1, buffers: [chunk] });
      return cid;
    });
  }

  async drop(cids: Buffer[]): Promise<Buffer[]> {
    const freed: Buffer[] = [];
    for (const cid of cids) {
      const key = cid.toString('latin1');
      const entry = this.store.get(key);
      if (entry && --entry.uses <= 0) {
        this.store.delete(key);
        freed.push(...entry.buffers);
      }
    }
    return freed;
  }

  async release(): Promise<void> {
    this.store.clear();
  }

  async serve(cids: Buffer[], channel: ControlChannel): Promise<void> {
    for (const cid of cids) {
      const data = this.store.get(cid.toString('latin1'))?.data;
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

  /** Every chunk still wanted is for nobody now: its fetch rejects (a DATA that comes later is dropped). */
  cancel(): void {
    const waiting = [...this.wanted.values()].flat();
    this.wanted.clear();
    this.batch.length = 0;
    const error = new XmigError('ERR_CHUNK', 'chunk retrieval cancelled');
    for (const w of waiting) w.reject(error);
  }
}
