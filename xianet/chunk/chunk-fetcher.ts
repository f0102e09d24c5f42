/**
 * Receiver-driven chunk retrieval. Requests go to the content DAG (the CID as
 * intent, its publisher as fallback), so any cache on the way may answer. Every
 * chunk is verified against its CID on arrival; a corrupt one is fetched again.
 *
 * The transport, all driven from here (a server or cache stays stateless: it cuts
 * each request's range into MTU-sized DATA datagrams and forgets it):
 *  - A chunk is asked for in byte ranges of a few datagrams each
 *    (`fragmentsPerRequest`, 16 by default), so a server's answer to one request is a
 *    short burst, and the fetcher's requests are paced: `pacingRate` bytes per ms,
 *    a token bucket refilled continuously, never more than the window in flight.
 *  - Congestion control is BBR v1's model (chunk-congestion.ts says why not AIMD):
 *    delivery-rate samples per completed request, as BBR takes them per ACK.
 *  - Loss recovery asks again for exactly the bytes that did not arrive, never a
 *    whole chunk for one lost datagram. A request is lost (RACK, RFC 8985) when a
 *    request sent after it has delivered and a reordering window (min RTT / 4) has
 *    passed since it should have, or when data behind a hole in its own range
 *    arrived that long ago; or when the retransmission timeout (chunk-rto.ts:
 *    RFC 6298, backed off on each expiry) passes with nothing from it.
 *  - A range lost twice is asked for in two requests at once from then on
 *    (`redundantFromAttempt`): at a loss rate p per datagram a chunk of n datagrams
 *    otherwise waits for about log(n)/log(1/p) rounds of recovery, one round trip each,
 *    and the reader writes in order, so the chunk's last datagram sets the pace of the
 *    whole migration on a lossy long path. Measured (two links of 5 % loss and 50 ms,
 *    16 chunks of 1 MiB asked ahead): 11.5 -> 14.7 MB/s for 2.4 % duplicate bytes;
 *    asking twice from the first loss on gave 16.6 MB/s for 13 %. Without loss it
 *    costs nothing.
 *  - A fetch gives up at its deadline (`timeoutMs`), or when nothing of it has
 *    arrived for `stallTimeoutMs` while it was being asked for — a time, never a
 *    count of attempts — and at once when its AbortSignal fires or the fetcher stops.
 *    Nothing of a cancelled fetch stays: its requests leave the window, late answers
 *    are dropped.
 */
import { createHash, randomBytes } from 'node:crypto';
import { Counter, Gauge, type Registry } from 'prom-client';
import type { Dag } from '../../shared/dag.js';
import { XmigError } from '../../shared/errors.js';
import { Xid, XidType } from '../../shared/xid.js';
import { encodeXipHeaderInto, NextHeader } from '../../shared/xip-header.js';
import type { Arrival, XiaNode } from '../node.js';
import { TransportType } from '../transport-header.js';
import { ByteRanges } from './byte-ranges.js';
import { contentDag } from './chunk-service.js';
import { BbrController } from './chunk-congestion.js';
import { CHUNK_DATA_HEADER_LENGTH, ChunkOp, decodeChunkMessage, encodeChunkRequest, MAX_CHUNK_BYTES } from './chunk-messages.js';
import { RtoEstimator, type RtoOptions } from './chunk-rto.js';

export interface FetchOptions {
  signal?: AbortSignal;
  /** The chunk's length, if the caller knows it (the mover's OFFER says): all its requests can be planned at once. */
  length?: number;
  /** Give up this many ms from now. */
  timeoutMs?: number;
  /**
   * Memory to assemble the chunk in (at least its length): each datagram is copied in as
   * it arrives and dies young, instead of being held until the chunk is whole, and the
   * fetch resolves with one view of it. Lent until the promise settles, then the caller's
   * again (to fill once more: memory used again costs no page faults and no
   * garbage collection). A fetch of the same CID already running goes on as it was.
   */
  into?: Buffer;
}

export interface ChunkFetcherOptions {
  /** A fetch fails when nothing of it arrives for this long while it is asked for (default 30 s). */
  stallTimeoutMs?: number;
  rto?: RtoOptions;
  /** DATA datagrams per request at most (default 16): the longest burst one request brings. */
  fragmentsPerRequest?: number;
  /** Bytes per request at most (default 256 KiB: on loopback's 64 KiB datagrams, 4 of them). */
  maxRequestBytes?: number;
  /** The window never exceeds this many bytes (default 64 MiB). */
  maxWindowBytes?: number;
  /**
   * A range lost this many times is asked for in two requests at once (default 2; 0:
   * never). Costs about the loss rate squared in duplicate bytes.
   */
  redundantFromAttempt?: number;
}

interface Waiter {
  resolve: (pieces: Buffer[]) => void;
  reject: (error: Error) => void;
  signal: AbortSignal | undefined;
  onAbort: (() => void) | undefined;
  into: Buffer | undefined;
}

interface Fetch {
  /** Asking order: served in it (the reader writes chunks in order). */
  seq: number;
  prev: Fetch | undefined;
  next: Fetch | undefined;
  cid: Xid;
  key: string;
  dst: Dag;
  /** Length announced by the caller (-1: unknown), and the chunk's own once DATA says (-1 until then). */
  expected: number;
  total: number;
  /**
   * Without a caller's memory to assemble in: the fragments that brought new bytes, as
   * they arrived (views of their datagrams: nothing is copied into a fresh chunk-sized
   * buffer, whose new memory costs more than the copy itself). Put in order, overlaps
   * cut, when the chunk is whole.
   */
  pieces: Array<{ at: number; data: Buffer }>;
  /** With one (`into`, chosen when the length is known): the datagrams are copied in here, and whose it is. */
  assembly: Buffer | undefined;
  lender: Waiter | undefined;
  have: ByteRanges;
  received: number;
  /** First byte never asked for. */
  nextOffset: number;
  /** Ranges to ask for again (lost), in order, with how many times each was asked for already. */
  retry: Array<[number, number, number]>;
  queuedForRetry: boolean;
  /** Every request sent for it, by id (late answers still count). */
  requests: Map<number, Request>;
  waiters: Waiter[];
  deadlineAt: number;
  lastProgressAt: number;
  started: boolean;
  /** After NOT_FOUND: ask again no earlier than this. */
  holdUntil: number;
  /** Payload bytes per DATA datagram we ask for, and bytes per request. */
  room: number;
  requestBytes: number;
  finished: boolean;
}

const OUT = 0;
const LOST = 1;
const DONE = 2;

interface Request {
  id: number;
  fetch: Fetch;
  offset: number;
  end: number;
  sentAt: number;
  /** How many times its range had been asked for before (0: never). */
  attempt: number;
  state: number;
  /** Bytes of it neither back under its own id nor declared lost: what it adds to the bytes in flight. */
  pending: number;
  /** The end of the furthest byte back under its own id, and when data behind a hole arrived. */
  highest: number;
  holeSeenAt: number;
  // BBR rate-sample state, as of sending (draft-cheng-iccrg-delivery-rate-estimation).
  priorDelivered: number;
  priorDeliveredTime: number;
  firstSentTime: number;
  appLimited: boolean;
}

export interface FetcherStats {
  /** Fetches asked for, verified, given up (deadline or stall), aborted. */
  fetches: number;
  verified: number;
  failed: number;
  aborted: number;
  corrupt: number;
  notFound: number;
  /** Requests sent, of them for ranges asked again, and declared lost (RACK or timeout). */
  requests: number;
  retransmitted: number;
  /** Second requests for a range lost repeatedly. */
  redundant: number;
  lost: number;
  rtos: number;
  fragments: number;
  /** Bytes that arrived for the first time, and again. */
  bytesArrived: number;
  duplicateBytes: number;
  /** Bytes of verified chunks. */
  bytes: number;
}

export class ChunkFetcher {
  readonly sid: Xid;
  private unbind: (() => void) | undefined;
  private offAd: (() => void) | undefined;
  private srcDag: Dag | undefined;
  private nextRequestId = 1;
  /** Fetches by CID key, and as a list in the order asked for (served in that order). */
  private readonly fetches = new Map<string, Fetch>();
  private tail: Fetch | undefined;
  private nextSeq = 0;
  /** Every request of a live fetch, by id. */
  private readonly byId = new Map<number, Request>();
  /** Requests in flight, in sending order. */
  private readonly inWindow = new Map<number, Request>();
  /** Outstanding requests with data past a hole. */
  private readonly holed = new Set<Request>();
  private readonly retryQueue: Fetch[] = [];
  /** First fetch that may still have bytes never asked for. */
  private planCursor: Fetch | undefined;
  private inflight = 0;
  readonly rtt: RtoEstimator;
  readonly congestion: BbrController;
  // Delivery-rate estimation state (C.* in the draft).
  private delivered = 0;
  private sampledDelivered = 0;
  private deliveredTime = 0;
  private firstSentTime = 0;
  private appLimitedUntil = 0;
  // RACK: the most recently sent request that has delivered, and its RTT.
  private rackSentAt = -Infinity;
  private rackRtt = 0;
  // Pacing.
  private tokens = 0;
  private tokensAt = 0;
  private pacingTimer: NodeJS.Timeout | undefined;
  private lossTimer: NodeJS.Timeout | undefined;
  private lossTimerAt = Infinity;
  private sweepTimer: NodeJS.Timeout | undefined;
  private lossCheckScheduled = false;
  private readonly stallTimeoutMs: number;
  private readonly fragmentsPerRequest: number;
  private readonly maxRequestBytes: number;
  private readonly redundantFrom: number;
  /** Most bytes of requests sent back to back when pacing allows (two requests' worth). */
  private readonly burstBytes: number;
  readonly stats: FetcherStats = {
    fetches: 0,
    verified: 0,
    failed: 0,
    aborted: 0,
    corrupt: 0,
    notFound: 0,
    requests: 0,
    retransmitted: 0,
    redundant: 0,
    lost: 0,
    rtos: 0,
    fragments: 0,
    bytesArrived: 0,
    duplicateBytes: 0,
    bytes: 0,
  };

  constructor(
    private readonly node: XiaNode,
    options: ChunkFetcherOptions = {},
  ) {
    this.sid = Xid.of(XidType.SID, randomBytes(20));
    this.stallTimeoutMs = options.stallTimeoutMs ?? 30_000;
    this.fragmentsPerRequest = options.fragmentsPerRequest ?? 16;
    this.maxRequestBytes = options.maxRequestBytes ?? 256 * 1024;
    this.redundantFrom = options.redundantFromAttempt === 0 ? Infinity : (options.redundantFromAttempt ?? 2);
    this.rtt = new RtoEstimator(options.rto);
    // Window bounds in requests' worth, at this node's MTU.
    const request = Math.min(this.maxRequestBytes, this.fragmentsPerRequest * Math.max(512, node.mtu - 250));
    this.burstBytes = 2 * request;
    this.congestion = new BbrController({
      minCwndBytes: 4 * request,
      initialCwndBytes: Math.max(10 * request, 256 * 1024),
      maxCwndBytes: options.maxWindowBytes ?? 64 * 1024 * 1024,
    });
  }

  start(): void {
    if (this.unbind) return;
    this.unbind = this.node.bind(this.sid, (packet, arrival) => this.onResponse(packet, arrival));
    this.offAd = this.node.onAdChange(() => (this.srcDag = undefined));
  }

  stop(): void {
    this.unbind?.();
    this.unbind = undefined;
    this.offAd?.();
    this.offAd = undefined;
    const error = new XmigError('ERR_CHUNK', 'chunk fetcher stopped');
    for (const fetch of [...this.fetches.values()]) this.fail(fetch, error);
    this.clearTimers();
  }

  /** What is in flight: requests, their bytes, the window and the queue of fetches. */
  get outstanding(): { inFlight: number; inflightBytes: number; window: number; fetches: number; pacingBytesPerMs: number } {
    return {
      inFlight: this.inWindow.size,
      inflightBytes: this.inflight,
      window: Math.round(this.congestion.cwnd),
      fetches: this.fetches.size,
      pacingBytesPerMs: this.congestion.pacingRate,
    };
  }

  /**
   * Fetches the chunk `cid` published by the host at `source` (its DAG, or a content
   * DAG already). Resolves with verified bytes. Fetches of the same CID at once share
   * the transfer.
   */
  fetch(cid: Xid, source: Dag, options: FetchOptions = {}): Promise<Buffer> {
    return this.fetchPieces(cid, source, options).then((pieces) => (pieces.length === 1 ? pieces[0]! : Buffer.concat(pieces)));
  }

  /**
   * As fetch(), but resolves with the chunk as the pieces it arrived in, in order (views
   * of the datagrams): for a caller that writes them out as they are, with no copy.
   */
  fetchPieces(cid: Xid, source: Dag, options: FetchOptions = {}): Promise<Buffer[]> {
    if (!this.unbind) return Promise.reject(new XmigError('ERR_CHUNK', 'chunk fetcher not started'));
    if (options.signal?.aborted) return Promise.reject(new XmigError('ERR_CHUNK', `fetch of ${cid.short} aborted`));
    if (options.length !== undefined && !(Number.isInteger(options.length) && options.length >= 0 && options.length <= MAX_CHUNK_BYTES)) {
      return Promise.reject(new XmigError('ERR_CHUNK', `chunk length ${options.length} is not 0..${MAX_CHUNK_BYTES}`));
    }
    const now = this.node.clock.monotonic();
    const key = cid.key;
    let fetch = this.fetches.get(key);
    if (!fetch) {
      const dst = source.sink.equals(cid) ? source : contentDag(source, cid);
      const room = this.roomFor(dst);
      fetch = {
        seq: this.nextSeq++,
        prev: this.tail,
        next: undefined,
        cid,
        key,
        dst,
        expected: options.length ?? -1,
        total: -1,
        pieces: [],
        assembly: undefined,
        lender: undefined,
        have: new ByteRanges(),
        received: 0,
        nextOffset: 0,
        retry: [],
        queuedForRetry: false,
        requests: new Map(),
        waiters: [],
        deadlineAt: Infinity,
        lastProgressAt: now,
        started: false,
        holdUntil: 0,
        room,
        requestBytes: Math.max(room, Math.floor(Math.min(this.maxRequestBytes, this.fragmentsPerRequest * room) / room) * room),
        finished: false,
      };
      this.fetches.set(key, fetch);
      if (this.tail) this.tail.next = fetch;
      this.tail = fetch;
      this.stats.fetches++;
      this.planCursor ??= fetch;
    }
    if (options.timeoutMs !== undefined) fetch.deadlineAt = Math.min(fetch.deadlineAt, now + options.timeoutMs);
    const target = fetch;
    const promise = new Promise<Buffer[]>((resolve, reject) => {
      const waiter: Waiter = { resolve, reject, signal: options.signal, onAbort: undefined, into: options.into };
      if (options.signal) {
        waiter.onAbort = () => this.abandon(target, waiter);
        options.signal.addEventListener('abort', waiter.onAbort, { once: true });
      }
      target.waiters.push(waiter);
    });
    this.armSweep();
    this.pump();
    return promise;
  }

  // ---- planning and sending ----------------------------------------------------------

  /** Payload bytes per DATA datagram that fit our MTU for answers from `dst`. */
  private roomFor(dst: Dag): number {
    const header = encodeXipHeaderInto(undefined, { dst: this.src(), src: dst }, 0);
    return Math.max(64, this.node.mtu - header - CHUNK_DATA_HEADER_LENGTH);
  }

  private src(): Dag {
    this.srcDag ??= this.node.serviceAddress(this.sid);
    return this.srcDag;
  }

  /** The next range to ask for: lost ranges first (oldest fetch first), then bytes never asked for. */
  private nextRange(now: number): { fetch: Fetch; offset: number; end: number; attempt: number } | undefined {
    while (this.retryQueue.length > 0) {
      const fetch = this.retryQueue[0]!;
      if (fetch.finished || fetch.retry.length === 0) {
        fetch.queuedForRetry = false;
        this.retryQueue.shift();
        continue;
      }
      if (fetch.holdUntil > now) break;
      const range = fetch.retry[0]!;
      const end = Math.min(range[1], range[0] + fetch.requestBytes);
      const offset = range[0];
      if (end >= range[1]) fetch.retry.shift();
      else range[0] = end;
      return { fetch, offset, end, attempt: range[2] };
    }
    for (let fetch = this.planCursor; fetch; fetch = fetch.next) {
      if (fetch.finished || fetch.holdUntil > now) continue;
      const limit = fetch.total >= 0 ? fetch.total : fetch.expected >= 0 ? fetch.expected : fetch.nextOffset === 0 ? fetch.requestBytes : -1;
      if (limit < 0 || fetch.nextOffset >= limit) {
        // Nothing more to plan here; only move the cursor past fetches fully planned.
        if (fetch === this.planCursor && limit >= 0 && (fetch.total >= 0 || fetch.expected >= 0)) this.planCursor = fetch.next;
        if (limit === 0 && fetch.nextOffset === 0) {
          // An empty chunk still needs one request, to learn it is empty.
          fetch.nextOffset = 1;
          return { fetch, offset: 0, end: 0, attempt: 0 };
        }
        continue;
      }
      const offset = fetch.nextOffset;
      const end = Math.min(limit, offset + fetch.requestBytes);
      fetch.nextOffset = end;
      return { fetch, offset, end, attempt: 0 };
    }
    return undefined;
  }

  private pump(): void {
    if (!this.unbind) return;
    const now = this.node.clock.monotonic();
    const rate = this.congestion.pacingRate;
    const burst = Math.max(this.burstBytes, rate * 2);
    this.tokens = Math.min(burst, this.tokens + (now - this.tokensAt) * rate);
    this.tokensAt = now;
    while (this.inflight < this.congestion.cwnd) {
      if (this.tokens <= 0) {
        this.armPacing(Math.max(1, Math.ceil(-this.tokens / rate)));
        return;
      }
      const next = this.nextRange(now);
      if (!next) {
        // Nothing more to ask for with room in the window: samples from now on tell of us, not the path.
        this.appLimitedUntil = Math.max(1, this.delivered + this.inflight);
        return;
      }
      this.send(next.fetch, next.offset, next.end, next.attempt, now);
      this.tokens -= Math.max(1, next.end - next.offset);
      if (next.attempt >= this.redundantFrom) {
        // Lost at least twice already: asked for twice (see the header), so one more loss costs no round trip.
        this.send(next.fetch, next.offset, next.end, next.attempt, now);
        this.tokens -= Math.max(1, next.end - next.offset);
        this.stats.redundant++;
      }
    }
  }

  private send(fetch: Fetch, offset: number, end: number, attempt: number, now: number): void {
    const id = this.nextRequestId;
    this.nextRequestId = this.nextRequestId >= 0xffffffff ? 1 : this.nextRequestId + 1;
    if (!fetch.started) {
      fetch.started = true;
      fetch.lastProgressAt = now;
    }
    if (this.inWindow.size === 0 && this.deliveredTime === 0) {
      this.deliveredTime = now;
      this.firstSentTime = now;
    }
    const request: Request = {
      id,
      fetch,
      offset,
      end,
      sentAt: now,
      attempt,
      state: OUT,
      pending: end - offset,
      highest: offset,
      holeSeenAt: 0,
      priorDelivered: this.delivered,
      priorDeliveredTime: this.deliveredTime,
      firstSentTime: this.firstSentTime,
      appLimited: this.appLimitedUntil !== 0,
    };
    fetch.requests.set(id, request);
    this.byId.set(id, request);
    this.inWindow.set(id, request);
    this.inflight += end - offset;
    this.stats.requests++;
    if (attempt > 0) this.stats.retransmitted++;
    const length = end - offset;
    // length 0 would mean "to the end": an empty range asks for the first byte (the answer says the total).
    this.node.sendPacket(fetch.dst, encodeChunkRequest({ requestId: id, cid: fetch.cid.id, offset, length: length === 0 ? 1 : length, maxFragment: fetch.room }), {
      src: this.src(),
      nextHeader: NextHeader.TRANSPORT,
    });
    this.armLossTimer(now);
  }

  // ---- answers -------------------------------------------------------------------------

  private onResponse(packet: Buffer, arrival: Arrival): void {
    const at = arrival.payloadOffset;
    if (arrival.payloadLength < 1 || packet[at] !== TransportType.CHUNK) return;
    let message;
    try {
      message = decodeChunkMessage(packet.subarray(at + 1, at + arrival.payloadLength));
    } catch {
      this.node.counters.dropped.malformed++;
      return;
    }
    if (message.op === ChunkOp.REQUEST) return;
    const request = this.byId.get(message.requestId);
    if (!request) return;
    const fetch = request.fetch;
    if (fetch.finished || !fetch.cid.id.equals(message.cid)) return;
    const now = this.node.clock.monotonic();
    if (message.op === ChunkOp.NOT_FOUND) {
      this.stats.notFound++;
      // Not (yet, or any longer) at the source: ask again after a timeout, until the deadline.
      this.settle(request, LOST);
      fetch.holdUntil = now + this.rtt.rto;
      this.requeue(fetch, request.offset, request.end, request.attempt);
      this.pump();
      return;
    }
    if (fetch.total < 0) {
      fetch.total = message.total;
      if (fetch.nextOffset > fetch.total) fetch.nextOffset = fetch.total;
      this.clipToTotal(fetch);
      if (!fetch.assembly) this.lend(fetch);
    } else if (fetch.total !== message.total) {
      this.node.counters.dropped.malformed++;
      return;
    }
    this.stats.fragments++;
    const start = message.offset;
    const length = message.data.length;
    const fresh = fetch.have.add(start, start + length);
    if (fresh > 0) {
      // Overlaps are rare (a range asked for twice): the whole fragment is kept; bytes are bytes.
      if (fetch.assembly) message.data.copy(fetch.assembly, start);
      else if (message.data.length > 0) fetch.pieces.push({ at: start, data: message.data });
      fetch.received += fresh;
      this.stats.bytesArrived += fresh;
      fetch.lastProgressAt = now;
      this.delivered += fresh;
      this.deliveredTime = now;
      this.firstSentTime = request.sentAt;
      if (this.appLimitedUntil !== 0 && this.delivered > this.appLimitedUntil) this.appLimitedUntil = 0;
    }
    this.stats.duplicateBytes += length - fresh;
    if (request.sentAt > this.rackSentAt) {
      this.rackSentAt = request.sentAt;
      this.rackRtt = now - request.sentAt;
    }
    if (request.state === OUT) {
      // Only bytes new here and still in its range count: a datagram that came twice, or late
      // for a hole already declared lost (before `offset`), is not counted back again.
      const inRange = Math.max(0, Math.min(start + length, request.end) - Math.max(start, request.offset));
      const back = Math.min(request.pending, fresh, inRange);
      request.pending -= back;
      this.inflight -= back;
      if (start + length > request.highest) request.highest = start + length;
      const end = Math.min(request.end, fetch.total);
      if (request.pending <= 0 || fetch.have.covers(request.offset, end)) this.complete(request, now);
      else if (request.holeSeenAt === 0 && start > request.offset && fetch.have.gapBefore(request.offset, start)) {
        request.holeSeenAt = now;
        this.holed.add(request);
      }
      if (this.inWindow.size > 0) this.scheduleLossCheck();
    }
    if (fetch.received >= fetch.total) this.finishIfWhole(fetch);
    this.pump();
  }

  /**
   * The chunk turned out shorter than asked for (its length was not known): its
   * requests stop counting bytes that do not exist, in the window and in pacing.
   */
  private clipToTotal(fetch: Fetch): void {
    for (const request of fetch.requests.values()) {
      if (request.state !== OUT || request.end <= fetch.total) continue;
      const removed = Math.min(request.pending, request.end - Math.max(fetch.total, request.offset));
      request.end = Math.max(fetch.total, request.offset);
      request.pending -= removed;
      this.inflight -= removed;
      this.tokens += removed;
    }
    fetch.retry = fetch.retry.filter((range) => range[0] < fetch.total || (range[0] === 0 && fetch.total === 0)).map(([s, e, a]) => [s, Math.min(e, fetch.total), a] as [number, number, number]);
  }

  /** A request whose range is all here: a delivery-rate and an RTT sample. */
  private complete(request: Request, now: number): void {
    this.settle(request, DONE);
    const fetch = request.fetch;
    // Counted out (pending 0) only by fresh bytes of its range, but should any of it be missing, that is asked again.
    const end = Math.min(request.end, fetch.total);
    if (!fetch.have.covers(request.offset, end)) this.requeue(fetch, request.offset, end, request.attempt);
    const rtt = now - request.sentAt;
    this.rtt.sample(rtt);
    const sendElapsed = request.sentAt - request.firstSentTime;
    const ackElapsed = this.deliveredTime - request.priorDeliveredTime;
    const interval = Math.max(sendElapsed, ackElapsed);
    const delivered = this.delivered - request.priorDelivered;
    // Everything delivered since the last sample (this request's bytes and any others'): what the window grows by.
    const newlyDelivered = this.delivered - this.sampledDelivered;
    this.sampledDelivered = this.delivered;
    this.congestion.onSample({
      now,
      deliveryRate: interval > 0 ? delivered / interval : 0,
      rtt,
      priorDelivered: request.priorDelivered,
      delivered: this.delivered,
      newlyDelivered,
      appLimited: request.appLimited,
      inflight: this.inflight,
    });
  }

  /** Takes a request out of the window (done, lost, or its fetch gone). */
  private settle(request: Request, state: number): void {
    if (request.state !== OUT) return;
    request.state = state;
    this.inWindow.delete(request.id);
    this.holed.delete(request);
    this.inflight -= request.pending;
    request.pending = 0;
    if (this.inflight < 0) this.inflight = 0;
  }

  /** The bytes of [offset, end) not here (the total unknown: all of it, an empty range kept as is). */
  private missingOf(fetch: Fetch, offset: number, end: number): Array<[number, number]> {
    if (fetch.total < 0) return [[offset, end]];
    const limit = Math.min(end, fetch.total);
    return limit > offset ? fetch.have.missing(offset, limit) : [];
  }

  /** Queues what is still missing of [offset, end), asked for `attempt` times before the request that lost it, to be asked for again. */
  private requeue(fetch: Fetch, offset: number, end: number, attempt: number): void {
    this.queueRetry(fetch, this.missingOf(fetch, offset, end), attempt);
  }

  private queueRetry(fetch: Fetch, missing: Array<[number, number]>, attempt: number): void {
    if (missing.length === 0) return;
    for (const [s, e] of missing) fetch.retry.push([s, e, attempt + 1]);
    if (fetch.retry.length > missing.length) fetch.retry.sort((a, b) => a[0] - b[0]);
    if (!fetch.queuedForRetry) {
      fetch.queuedForRetry = true;
      this.retryQueue.push(fetch);
      // Oldest fetch first: the reader writes chunks in order.
      if (this.retryQueue.length > 1) this.retryQueue.sort((a, b) => a.seq - b.seq);
    }
  }

  private finishIfWhole(fetch: Fetch): void {
    if (fetch.finished || fetch.total < 0 || !fetch.have.covers(0, fetch.total)) return;
    const data = fetch.assembly ? [fetch.assembly.subarray(0, fetch.total)] : inOrder(fetch.pieces, fetch.total);
    const hash = createHash('sha1');
    for (const piece of data) hash.update(piece);
    if (!hash.digest().equals(fetch.cid.id)) {
      // Corrupt somewhere (a forged or damaged datagram): all of it again, until the deadline.
      this.stats.corrupt++;
      for (const request of fetch.requests.values()) {
        this.settle(request, DONE);
        this.byId.delete(request.id);
      }
      fetch.requests.clear();
      fetch.have.clear();
      fetch.received = 0;
      fetch.nextOffset = 0;
      fetch.retry.length = 0;
      fetch.total = -1;
      fetch.pieces = [];
      // Chosen again with the next length (a forged datagram may have said the wrong one).
      fetch.assembly = undefined;
      fetch.lender = undefined;
      if (this.planCursor === undefined || fetch.seq < this.planCursor.seq) this.planCursor = fetch;
      return;
    }
    this.stats.verified++;
    this.stats.bytes += fetch.total;
    this.end(fetch);
    for (const waiter of fetch.waiters) {
      if (waiter.onAbort) waiter.signal?.removeEventListener('abort', waiter.onAbort);
      // The lender will fill its memory again: anyone else gets a copy of its own.
      waiter.resolve(fetch.lender && waiter !== fetch.lender ? [Buffer.from(data[0]!)] : data);
    }
  }

  /** The first waiter whose memory holds the chunk assembles it there (the length is now known). */
  private lend(fetch: Fetch): void {
    const lender = fetch.waiters.find((w) => w.into !== undefined && w.into.length >= fetch.total);
    if (!lender) return;
    fetch.assembly = lender.into;
    fetch.lender = lender;
  }

  // ---- losses and timeouts ---------------------------------------------------------

  private scheduleLossCheck(): void {
    if (this.lossCheckScheduled) return;
    this.lossCheckScheduled = true;
    setImmediate(() => {
      this.lossCheckScheduled = false;
      if (this.unbind) this.detectLosses(false);
    });
  }

  /** RACK over the window, then (on the timer) the retransmission timeout. */
  private detectLosses(onTimer: boolean): void {
    const now = this.node.clock.monotonic();
    const reorderWindow = Math.max(1, (Number.isFinite(this.rtt.minRtt) ? this.rtt.minRtt : 0) / 4);
    const rto = this.rtt.rto;
    let lost = 0;
    let timedOut = false;
    let nextCheck = Infinity;
    for (const request of this.inWindow.values()) {
      if (request.sentAt >= this.rackSentAt) {
        // Nothing sent later has come back: only the timeout can tell.
        if (onTimer && now >= request.sentAt + rto) {
          timedOut = true;
          this.declareLost(request);
          lost++;
          continue;
        }
        nextCheck = Math.min(nextCheck, request.sentAt + rto);
        break;
      }
      const due = request.sentAt + this.rackRtt + reorderWindow;
      if (now >= due || (onTimer && now >= request.sentAt + rto)) {
        if (now < due) timedOut = true;
        this.declareLost(request);
        lost++;
      } else nextCheck = Math.min(nextCheck, due);
    }
    for (const request of this.holed) {
      const due = request.holeSeenAt + reorderWindow;
      if (now >= due) {
        this.holesLost(request);
        lost++;
      } else nextCheck = Math.min(nextCheck, due);
    }
    if (timedOut) {
      this.stats.rtos++;
      this.rtt.expired();
      this.congestion.onRto();
    }
    if (lost > 0) this.pump();
    if (this.inWindow.size > 0) this.setLossTimer(Number.isFinite(nextCheck) ? nextCheck : now + rto, now);
  }

  private declareLost(request: Request): void {
    this.stats.lost++;
    this.settle(request, LOST);
    this.requeue(request.fetch, request.offset, request.end, request.attempt);
  }

  /**
   * Data behind holes in a request's range came a reordering window ago: the holes are
   * lost, and only they are asked again; the rest of the range is still on its way.
   */
  private holesLost(request: Request): void {
    this.holed.delete(request);
    request.holeSeenAt = 0;
    const missing = this.missingOf(request.fetch, request.offset, request.highest);
    let bytes = 0;
    for (const [s, e] of missing) bytes += e - s;
    const gone = Math.min(request.pending, bytes);
    request.pending -= gone;
    this.inflight -= gone;
    request.offset = request.highest;
    this.stats.lost++;
    this.queueRetry(request.fetch, missing, request.attempt);
    if (request.pending <= 0 && request.state === OUT) {
      this.settle(request, LOST);
      // As in complete(): whatever of the rest has not come is asked again, never left to the stall timeout.
      this.requeue(request.fetch, request.highest, request.end, request.attempt);
    }
  }

  private armLossTimer(now: number): void {
    const oldest = this.inWindow.values().next().value;
    if (!oldest) return;
    this.setLossTimer(oldest.sentAt + this.rtt.rto, now);
  }

  private setLossTimer(at: number, now: number): void {
    if (this.lossTimer && this.lossTimerAt <= at) return;
    if (this.lossTimer) clearTimeout(this.lossTimer);
    this.lossTimerAt = at;
    this.lossTimer = setTimeout(() => {
      this.lossTimer = undefined;
      this.lossTimerAt = Infinity;
      this.detectLosses(true);
    }, Math.max(1, Math.ceil(at - now)));
  }

  private armPacing(ms: number): void {
    if (this.pacingTimer) return;
    this.pacingTimer = setTimeout(() => {
      this.pacingTimer = undefined;
      this.pump();
    }, ms);
  }

  /** Deadlines, stalls and NOT_FOUND holds, checked every 100 ms while there are fetches. */
  private armSweep(): void {
    if (this.sweepTimer) return;
    this.sweepTimer = setInterval(() => this.sweep(), 100);
  }

  private sweep(): void {
    const now = this.node.clock.monotonic();
    for (const fetch of [...this.fetches.values()]) {
      if (now >= fetch.deadlineAt) this.fail(fetch, new XmigError('ERR_TIMEOUT', `chunk ${fetch.cid.short} not fetched by its deadline (${fetch.received} of ${fetch.total < 0 ? '?' : fetch.total} bytes)`));
      else if (fetch.started && now - fetch.lastProgressAt >= this.stallTimeoutMs) {
        this.fail(fetch, new XmigError('ERR_TIMEOUT', `chunk ${fetch.cid.short}: nothing arrived for ${this.stallTimeoutMs} ms (${fetch.received} of ${fetch.total < 0 ? '?' : fetch.total} bytes)`));
      }
    }
    if (this.fetches.size === 0) {
      clearInterval(this.sweepTimer);
      this.sweepTimer = undefined;
      return;
    }
    this.pump();
  }

  // ---- the end of a fetch ----------------------------------------------------------

  /** One caller gave up (its signal): the fetch goes on for the others, or stops if none is left. */
  private abandon(fetch: Fetch, waiter: Waiter): void {
    const index = fetch.waiters.indexOf(waiter);
    if (index < 0) return;
    fetch.waiters.splice(index, 1);
    if (waiter === fetch.lender && fetch.waiters.length > 0) {
      // Its memory goes back with it: what has come so far moves to a buffer of the fetch's own.
      fetch.assembly = Buffer.from(fetch.assembly!.subarray(0, fetch.total));
      fetch.lender = undefined;
    }
    waiter.reject(new XmigError('ERR_CHUNK', `fetch of ${fetch.cid.short} aborted`));
    if (fetch.waiters.length === 0 && !fetch.finished) {
      this.stats.aborted++;
      this.end(fetch);
    }
  }

  private fail(fetch: Fetch, error: Error): void {
    if (fetch.finished) return;
    this.stats.failed++;
    this.end(fetch);
    for (const waiter of fetch.waiters) {
      if (waiter.onAbort) waiter.signal?.removeEventListener('abort', waiter.onAbort);
      waiter.reject(error);
    }
  }

  /** Removes a fetch and everything it has in flight. */
  private end(fetch: Fetch): void {
    fetch.finished = true;
    if (this.planCursor === fetch) this.planCursor = fetch.next;
    if (fetch.prev) fetch.prev.next = fetch.next;
    if (fetch.next) fetch.next.prev = fetch.prev;
    else this.tail = fetch.prev;
    for (const request of fetch.requests.values()) {
      this.settle(request, DONE);
      this.byId.delete(request.id);
    }
    fetch.requests.clear();
    fetch.retry.length = 0;
    this.fetches.delete(fetch.key);
    if (this.fetches.size === 0) {
      this.planCursor = undefined;
      this.retryQueue.length = 0;
      this.clearTimers();
    }
    this.pump();
  }

  private clearTimers(): void {
    if (this.pacingTimer) clearTimeout(this.pacingTimer);
    if (this.lossTimer) clearTimeout(this.lossTimer);
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    this.pacingTimer = undefined;
    this.lossTimer = undefined;
    this.lossTimerAt = Infinity;
    this.sweepTimer = undefined;
  }
}

/**
 * The fetcher's figures on /metrics, read from whichever fetcher `current()` returns
 * (the node's is made on first use): its window, what is in flight, its model of
 * the path, and what it asked for and lost.
 */
export function registerFetcherMetrics(registry: Registry, node: string, current: () => ChunkFetcher | undefined): void {
  if (registry.getSingleMetric('xianet_chunk_fetch_window_bytes')) return;
  const labels = { node };
  const gauge = (name: string, help: string, read: (f: ChunkFetcher) => number): void => {
    new Gauge({
      name,
      help,
      labelNames: ['node'],
      registers: [registry],
      collect() {
        const fetcher = current();
        const value = fetcher ? read(fetcher) : 0;
        this.set(labels, Number.isFinite(value) ? value : 0);
      },
    });
  };
  gauge('xianet_chunk_fetch_window_bytes', 'Bytes the CHUNK fetcher may have in flight (its congestion window)', (f) => f.congestion.cwnd);
  gauge('xianet_chunk_fetch_inflight_bytes', 'Bytes asked for and not yet arrived nor given up as lost', (f) => f.outstanding.inflightBytes);
  gauge('xianet_chunk_fetches', 'Chunk fetches in progress (queued or in flight)', (f) => f.outstanding.fetches);
  gauge('xianet_chunk_fetch_bandwidth_bytes_per_second', 'The fetcher\'s estimate of the bottleneck bandwidth (BBR)', (f) => f.congestion.btlBw * 1000);
  gauge('xianet_chunk_fetch_min_rtt_seconds', 'The fetcher\'s estimate of the round-trip propagation time (BBR)', (f) => f.congestion.rtProp / 1000);
  gauge('xianet_chunk_fetch_rto_seconds', 'The current retransmission timeout (RFC 6298, back-off included)', (f) => f.rtt.rto / 1000);
  const counter = (name: string, help: string, label: string, values: Record<string, (f: ChunkFetcher) => number>): void => {
    new Counter({
      name,
      help,
      labelNames: ['node', label],
      registers: [registry],
      collect() {
        this.reset();
        const fetcher = current();
        for (const [value, read] of Object.entries(values)) this.inc({ ...labels, [label]: value }, fetcher ? read(fetcher) : 0);
      },
    });
  };
  counter('xianet_chunk_fetches_total', 'Chunk fetches by how they ended', 'outcome', {
    verified: (f) => f.stats.verified,
    failed: (f) => f.stats.failed,
    aborted: (f) => f.stats.aborted,
  });
  counter('xianet_chunk_fetch_requests_total', 'CHUNK requests sent: for new bytes, for bytes lost before, and second copies for bytes lost twice', 'kind', {
    new: (f) => f.stats.requests - f.stats.retransmitted,
    retransmit: (f) => f.stats.retransmitted - f.stats.redundant,
    redundant: (f) => f.stats.redundant,
  });
  counter('xianet_chunk_fetch_losses_total', 'Requests (or holes in them) given up as lost, and retransmission timeouts', 'how', {
    lost: (f) => f.stats.lost,
    timeout: (f) => f.stats.rtos,
  });
  counter('xianet_chunk_fetch_bytes_total', 'Chunk bytes that arrived: new, or again (duplicates)', 'kind', {
    new: (f) => f.stats.bytesArrived,
    duplicate: (f) => f.stats.duplicateBytes,
  });
}

/**
 * Past this many pieces a chunk is joined into one buffer: hashing and writing a
 * thousand 1.4 KB views (MTU 1500) costs more per byte than one copy.
 */
const MAX_PIECES = 64;

/**
 * `pieces` (fragments at their offsets, maybe overlapping) as views that cover
 * 0..total once each, in order; joined into one if there are many. Empty if they do
 * not cover it (then the hash fails and the chunk is fetched again).
 */
function inOrder(pieces: Array<{ at: number; data: Buffer }>, total: number): Buffer[] {
  const sorted = pieces.length > 1 && pieces.some((p, i) => i > 0 && p.at < pieces[i - 1]!.at) ? [...pieces].sort((a, b) => a.at - b.at) : pieces;
  const out: Buffer[] = [];
  let cursor = 0;
  for (const { at, data } of sorted) {
    const end = Math.min(at + data.length, total);
    if (end <= cursor) continue;
    if (at > cursor) return [];
    out.push(data.subarray(cursor - at, end - at));
    cursor = end;
  }
  if (cursor < total) return [];
  return out.length > MAX_PIECES ? [Buffer.concat(out, total)] : out;
}
