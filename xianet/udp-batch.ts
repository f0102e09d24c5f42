/**
 * Batched UDP sends for UdpLink (issue 15): at MTU 1500 a node's CPU goes to one
 * node:dgram send (JS, libuv, one sendmsg) per 1472-byte XIP packet. A link queues
 * what it sends within one turn of the event loop and flushes it with the native
 * addon (native/udp-batch): one sendmmsg(2) for many messages, each message carrying
 * a run of packets to one neighbour with UDP GSO (a UDP_SEGMENT cmsg): the kernel cuts
 * it back into the packets, one datagram each, exactly as sent, none larger than the
 * largest packet of its run (so never larger than the link's MTU).
 *
 * A run (splitRuns) is consecutive packets to one neighbour of one size, optionally
 * ended by one shorter packet: the only shape GSO can carry, since it cuts at a fixed
 * size. At most 64 packets (the kernel's UDP_MAX_SEGMENTS) and 65507 bytes (an IPv4
 * datagram's payload) per run. A lone packet is a message without the cmsg.
 *
 * Without the addon (not built, not loadable, not Linux, or XMIG_UDP_BATCH=0) nothing
 * here is used and UdpLink sends each packet with node:dgram as before. When the socket
 * buffer is full (EAGAIN) the rest of the batch goes to node:dgram, which queues it in
 * libuv until the socket is writable: nothing is dropped; each such handover is counted
 * (`stats.batchFallbacks`), and while node:dgram still holds some, later batches queue
 * behind them there too (so a neighbour's packets keep their order). A neighbour the kernel refuses (EHOSTUNREACH after a move)
 * costs that message's packets, counted in `stats.sendErrors` as node:dgram's callback
 * counts them. If the kernel refuses GSO itself (EIO, EINVAL, EOPNOTSUPP: a device or
 * kernel without it) the link stops using GSO (sendmmsg of single packets still saves
 * the per-packet JS and libuv work) and resends that message through node:dgram.
 */
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Socket } from 'node:dgram';

/** The addon's interface (native/udp-batch/udp_batch.c). */
export interface UdpBatchAddon {
  sockaddr(host: string, port: number): Buffer | undefined;
  sendBatch(fd: number, addrs: Buffer[], segments: number[], iovCounts: number[], buffers: Buffer[], first: number, count: number): number;
  /** UDP_GRO on the socket: 0, or -errno. Absent in a build from before it (then no GRO). */
  enableGro?(fd: number): number;
  /** SO_RCVBUFFORCE and SO_SNDBUFFORCE to `bytes` (past rmem_max/wmem_max, with CAP_NET_ADMIN): 0, or -errno. Absent in older builds. */
  forceBuffers?(fd: number, bytes: number): number;
  /** mallopt(M_TRIM_THRESHOLD, bytes), process-wide (xianet/allocator.ts): 0, or -errno (-ENOSYS: not glibc). Absent in older builds. */
  keepFreedMemory?(bytes: number): number;
  /** F_SETPIPE_SZ to at least `bytes`, or F_GETPIPE_SZ with 0 (mover/pipe-capacity.ts): the capacity, or -errno. Absent in older builds. */
  pipeCapacity?(fd: number, bytes: number): number;
  constants: { EAGAIN: number; maxMessages: number; maxIovs: number };
}

/** GSO limits: the kernel's UDP_MAX_SEGMENTS, and an IPv4 datagram's largest payload. */
export const MAX_SEGMENTS = 64;
export const MAX_RUN_BYTES = 65507;

let loaded: { addon: UdpBatchAddon | undefined; reason: string } | undefined;

/** The addon, or why not: read once per process. XMIG_UDP_BATCH=0 turns it off. */
export function udpBatchAddon(): { addon: UdpBatchAddon | undefined; reason: string } {
  if (loaded) return loaded;
  if (process.env['XMIG_UDP_BATCH'] === '0') return (loaded = { addon: undefined, reason: 'XMIG_UDP_BATCH=0' });
  if (process.platform !== 'linux') return (loaded = { addon: undefined, reason: `not on ${process.platform}` });
  // xianet/ in the sources, dist/xianet/ in the package: the addon is under the package root.
  const here = dirname(fileURLToPath(import.meta.url));
  const candidates = [join(here, '..', 'native', 'udp-batch', 'build', 'udp_batch.node'), join(here, '..', '..', 'native', 'udp-batch', 'build', 'udp_batch.node')];
  const file = candidates.find((f) => existsSync(f));
  if (!file) return (loaded = { addon: undefined, reason: 'not built (native/udp-batch/build/udp_batch.node)' });
  try {
    const addon = createRequire(import.meta.url)(file) as UdpBatchAddon;
    if (typeof addon.sendBatch !== 'function' || typeof addon.sockaddr !== 'function') return (loaded = { addon: undefined, reason: `${file}: not the UDP batch addon` });
    return (loaded = { addon, reason: file });
  } catch (error) {
    return (loaded = { addon: undefined, reason: `${file}: ${(error as Error).message}` });
  }
}

/** A run of packets: [start, end) of the queue, and the GSO segment size (0: one packet, no GSO). */
export interface Run {
  start: number;
  end: number;
  segment: number;
}

/**
 * Cuts a queue of packet sizes (to one neighbour, in order) into runs GSO can carry:
 * equal sizes, the last one possibly shorter, at most `maxSegments` packets and
 * `maxBytes` bytes. Every packet is in exactly one run, in order.
 */
export function splitRuns(sizes: readonly number[], maxSegments = MAX_SEGMENTS, maxBytes = MAX_RUN_BYTES, gso = true): Run[] {
  const runs: Run[] = [];
  let i = 0;
  while (i < sizes.length) {
    const start = i;
    const segment = sizes[i]!;
    let bytes = segment;
    i++;
    if (gso) {
      while (i < sizes.length && sizes[i] === segment && i - start < maxSegments && bytes + segment <= maxBytes) {
        bytes += segment;
        i++;
      }
      // One shorter packet may end the run (GSO's last segment is what is left).
      if (i < sizes.length && sizes[i]! < segment && sizes[i]! > 0 && i - start < maxSegments && bytes + sizes[i]! <= maxBytes) i++;
    }
    runs.push({ start, end: i, segment: i - start > 1 ? segment : 0 });
  }
  return runs;
}

interface Queued {
  data: Buffer | Buffer[];
  size: number;
  /** A run queued whole (enqueueRun): `data` is packets of this length back to back, the last possibly shorter. */
  stride?: number;
}

/** How many packets a queued item holds. */
function packetsOf(q: Queued): number {
  return q.stride ? Math.ceil(q.size / q.stride) : 1;
}

/** A run's packets, one item each. */
function cut(run: Queued): Queued[] {
  const data = run.data as Buffer;
  const items: Queued[] = [];
  for (let at = 0; at < data.length; at += run.stride!) {
    const packet = data.subarray(at, Math.min(data.length, at + run.stride!));
    items.push({ data: packet, size: packet.length });
  }
  return items;
}

interface Destination {
  address: Buffer;
  port: number;
  host: string;
  queue: Queued[];
}

export interface UdpBatchStats {
  sendErrors: number;
  /** Datagrams handed to node:dgram because the socket buffer was full (EAGAIN). */
  batchFallbacks: number;
  /** Datagrams sent by the addon, and the sendmmsg calls that sent them. */
  batchedDatagrams: number;
  batchCalls: number;
}

/** Which turn the queue is flushed in: after the current I/O phase (default) or at the next microtask checkpoint. */
export type FlushMode = 'immediate' | 'microtask';

export class UdpBatcher {
  private readonly destinations = new Map<string, Destination>();
  private readonly pending: Destination[] = [];
  private scheduled = false;
  private gso = true;
  private readonly fd: number;

  constructor(
    private readonly addon: UdpBatchAddon,
    private readonly socket: Socket,
    private readonly stats: UdpBatchStats,
    private readonly onSent: (error: Error | null) => void,
    private readonly flushMode: FlushMode = process.env['XMIG_UDP_BATCH_FLUSH'] === 'microtask' ? 'microtask' : 'immediate',
  ) {
    this.fd = socketFd(socket);
  }

  /** Queues one packet for `host:port`; false if the address is not numeric (the caller sends it with node:dgram). */
  enqueue(data: Buffer | Buffer[], size: number, port: number, host: string): boolean {
    return this.queue({ data, size }, port, host);
  }

  /**
   * Queues packets of `stride` bytes back to back in `run` (the last may be shorter) as
   * GSO messages of their own, cut to GSO's limits; false as enqueue().
   */
  enqueueRun(run: Buffer, stride: number, port: number, host: string): boolean {
    const most = Math.max(1, Math.min(MAX_SEGMENTS, Math.floor(MAX_RUN_BYTES / stride))) * stride;
    for (let at = 0; at < run.length; at += most) {
      const data = at === 0 && run.length <= most ? run : run.subarray(at, Math.min(run.length, at + most));
      // Only the first can be refused (a name, not an address): the rest go where it went.
      if (!this.queue({ data, size: data.length, stride }, port, host)) return false;
    }
    return true;
  }

  private queue(item: Queued, port: number, host: string): boolean {
    const key = `${host}|${port}`;
    let destination = this.destinations.get(key);
    if (!destination) {
      const address = this.addon.sockaddr(host, port);
      if (!address) return false;
      if (this.destinations.size >= 4096) this.destinations.clear();
      destination = { address, port, host, queue: [] };
      this.destinations.set(key, destination);
    }
    if (destination.queue.length === 0) this.pending.push(destination);
    destination.queue.push(item);
    if (!this.scheduled) {
      this.scheduled = true;
      if (this.flushMode === 'microtask') queueMicrotask(this.flush);
      else setImmediate(this.flush);
    }
    return true;
  }

  /** Sends everything queued. */
  readonly flush = (): void => {
    this.scheduled = false;
    const destinations = this.pending.splice(0);
    if (destinations.length === 0) return;
    if (this.socket.getSendQueueCount() > 0) {
      // node:dgram still holds datagrams from an earlier EAGAIN: these go behind them, in order.
      for (const destination of destinations) {
        const packets = destination.queue;
        destination.queue = [];
        this.handOver({ destination, packets });
      }
      return;
    }
    const addrs: Buffer[] = [];
    const segments: number[] = [];
    const iovCounts: number[] = [];
    const buffers: Buffer[] = [];
    /** Per message: its destination and packets, to hand to node:dgram if need be. */
    const owners: Array<{ destination: Destination; packets: Queued[] }> = [];
    for (const destination of destinations) {
      const queue = destination.queue;
      destination.queue = [];
      for (const { packets, segment } of this.messagesOf(queue)) {
        let iovs = 0;
        for (const p of packets) {
          if (Array.isArray(p.data)) {
            for (const b of p.data) buffers.push(b);
            iovs += p.data.length;
          } else {
            buffers.push(p.data);
            iovs++;
          }
        }
        addrs.push(destination.address);
        segments.push(segment);
        iovCounts.push(iovs);
        owners.push({ destination, packets });
      }
    }
    const { maxMessages, maxIovs, EAGAIN } = this.addon.constants;
    let first = 0;
    while (first < owners.length) {
      let count = 0;
      let iovs = 0;
      while (first + count < owners.length && count < maxMessages && iovs + iovCounts[first + count]! <= maxIovs) iovs += iovCounts[first + count++]!;
      let sent: number;
      try {
        sent = this.addon.sendBatch(this.fd, addrs, segments, iovCounts, buffers, first, count);
      } catch {
        sent = -EAGAIN; // a closed socket, say: let node:dgram decide
      }
      if (sent > 0) {
        this.stats.batchCalls++;
        for (let m = first; m < first + sent; m++) for (const p of owners[m]!.packets) this.stats.batchedDatagrams += packetsOf(p);
        first += sent;
        continue;
      }
      const errno = -sent;
      if (errno === EAGAIN) {
        // The socket buffer is full: node:dgram queues the rest in libuv until it is writable.
        for (let m = first; m < owners.length; m++) this.handOver(owners[m]!);
        return;
      }
      if (segments[first]! > 0 && (errno === 5 /* EIO */ || errno === 22 /* EINVAL */ || errno === 95 /* EOPNOTSUPP */)) {
        // No GSO here: single datagrams from now on; this message through node:dgram.
        this.gso = false;
        this.handOver(owners[first]!);
      } else {
        for (const p of owners[first]!.packets) this.stats.sendErrors += packetsOf(p);
      }
      first++;
    }
  };

  private handOver(message: { destination: Destination; packets: Queued[] }): void {
    for (const item of message.packets) {
      for (const p of item.stride ? cut(item) : [item]) {
        this.stats.batchFallbacks++;
        this.socket.send(p.data, message.destination.port, message.destination.host, this.onSent);
      }
    }
  }

  /**
   * A destination's queue as messages: packets queued one by one cut into GSO runs
   * (splitRuns), a run queued whole as one message of its own (or, without GSO, a message
   * per packet), in queue order.
   */
  private messagesOf(queue: Queued[]): Array<{ packets: Queued[]; segment: number }> {
    const messages: Array<{ packets: Queued[]; segment: number }> = [];
    let from = 0;
    const singles = (end: number): void => {
      if (end <= from) return;
      const part = from === 0 && end === queue.length ? queue : queue.slice(from, end);
      for (const run of splitRuns(part.map((q) => q.size), MAX_SEGMENTS, MAX_RUN_BYTES, this.gso)) {
        messages.push({ packets: part.slice(run.start, run.end), segment: run.segment });
      }
    };
    for (let i = 0; i < queue.length; i++) {
      const item = queue[i]!;
      if (item.stride === undefined) continue;
      singles(i);
      from = i + 1;
      if (this.gso) messages.push({ packets: [item], segment: item.size > item.stride ? item.stride : 0 });
      else for (const p of cut(item)) messages.push({ packets: [p], segment: 0 });
    }
    singles(queue.length);
    return messages;
  }

  /** Drops what is queued (the link is stopping). */
  clear(): void {
    for (const d of this.pending.splice(0)) d.queue = [];
  }
}

/** The socket's file descriptor, without the deprecated `socket._handle` getter (DEP0112). */
export function socketFd(socket: Socket): number {
  const state = Object.getOwnPropertySymbols(socket).find((s) => s.description === 'state symbol');
  const handle = state ? (socket as unknown as Record<symbol, { handle?: { fd?: number } }>)[state]?.handle : undefined;
  const fd = handle?.fd;
  if (typeof fd !== 'number' || fd < 0) throw new Error('udp-batch: no file descriptor on this socket');
  return fd;
}
