/**
 * Receiver-driven chunk retrieval. Requests go to the content DAG (the CID as
 * intent, its publisher as fallback), so any cache on the way may answer. Every
 * chunk is verified against its CID on arrival; a corrupt or missing one is asked
 * for again. Many requests are in flight at once: the window grows like TCP's
 * (slow start, then one more per window of completions) and halves on a timeout,
 * so it settles at what the path carries.
 */
import { createHash, randomBytes } from 'node:crypto';
import type { Dag } from '../../shared/dag.js';
import { XmigError } from '../../shared/errors.js';
import { Xid, XidType } from '../../shared/xid.js';
import { NextHeader } from '../../shared/xip-header.js';
import type { Arrival, XiaNode } from '../node.js';
import { TransportType } from '../transport-header.js';
import { contentDag } from './chunk-service.js';
import { ChunkOp, decodeChunkMessage, encodeChunkRequest } from './chunk-messages.js';

export interface FetchOptions {
  signal?: AbortSignal;
  /** Attempts before giving up on a chunk (default 10). */
  attempts?: number;
}

export interface ChunkFetcherOptions {
  initialWindow?: number;
  maxWindow?: number;
  /** Retransmission timeout bounds (ms). */
  minRtoMs?: number;
  maxRtoMs?: number;
}

interface Request {
  cid: Xid;
  dst: Dag;
  requestId: number;
  attempt: number;
  maxAttempts: number;
  sentAt: number;
  timer: NodeJS.Timeout | undefined;
  total: number;
  data: Buffer | undefined;
  offsets: Set<number>;
  received: number;
  resolve: (data: Buffer) => void;
  reject: (error: Error) => void;
  signal: AbortSignal | undefined;
  onAbort: (() => void) | undefined;
  retransmitted: boolean;
}

export class ChunkFetcher {
  readonly sid: Xid;
  private unbind: (() => void) | undefined;
  private nextRequestId = 1;
  private readonly inFlight = new Map<number, Request>();
  private readonly queue: Request[] = [];
  private window: number;
  private readonly maxWindow: number;
  private slowStartThreshold = Infinity;
  private growth = 0;
  private srtt: number | undefined;
  private rttvar = 0;
  private readonly minRto: number;
  private readonly maxRto: number;
  readonly stats = { requested: 0, verified: 0, corrupt: 0, timeouts: 0, refetched: 0, notFound: 0, bytes: 0 };

  constructor(
    private readonly node: XiaNode,
    options: ChunkFetcherOptions = {},
  ) {
    this.sid = Xid.of(XidType.SID, randomBytes(20));
    this.window = options.initialWindow ?? 8;
    this.maxWindow = options.maxWindow ?? 512;
    this.minRto = options.minRtoMs ?? 20;
    this.maxRto = options.maxRtoMs ?? 2000;
  }

  start(): void {
    this.unbind = this.node.bind(this.sid, (packet, arrival) => this.onResponse(packet, arrival));
  }

  stop(): void {
    this.unbind?.();
    this.unbind = undefined;
    const error = new XmigError('ERR_CHUNK', 'chunk fetcher stopped');
    for (const request of [...this.inFlight.values(), ...this.queue]) this.finish(request, error);
    this.queue.length = 0;
  }

  /** Requests currently outstanding, and the window that bounds them. */
  get outstanding(): { inFlight: number; queued: number; window: number } {
    return { inFlight: this.inFlight.size, queued: this.queue.length, window: Math.floor(this.window) };
  }

  /**
   * Fetches the chunk `cid` published by the host at `source` (its DAG, or a content
   * DAG already). Resolves with verified bytes.
   */
  fetch(cid: Xid, source: Dag, options: FetchOptions = {}): Promise<Buffer> {
    if (!this.unbind) return Promise.reject(new XmigError('ERR_CHUNK', 'chunk fetcher not started'));
    const dst = source.sink.equals(cid) ? source : contentDag(source, cid);
    return new Promise<Buffer>((resolve, reject) => {
      const request: Request = {
        cid,
        dst,
        requestId: 0,
        attempt: 0,
        maxAttempts: options.attempts ?? 10,
        sentAt: 0,
        timer: undefined,
        total: -1,
        data: undefined,
        offsets: new Set(),
        received: 0,
        resolve,
        reject,
        signal: options.signal,
        onAbort: undefined,
        retransmitted: false,
      };
      if (options.signal) {
        if (options.signal.aborted) return reject(new XmigError('ERR_CHUNK', `fetch of ${cid.short} aborted`));
        request.onAbort = () => this.finish(request, new XmigError('ERR_CHUNK', `fetch of ${cid.short} aborted`));
        options.signal.addEventListener('abort', request.onAbort, { once: true });
      }
      this.queue.push(request);
      this.pump();
    });
  }

  private rto(): number {
    if (this.srtt === undefined) return 200;
    return Math.min(this.maxRto, Math.max(this.minRto, this.srtt + 4 * this.rttvar));
  }

  private pump(): void {
    while (this.inFlight.size < Math.floor(this.window) && this.queue.length > 0) this.send(this.queue.shift()!);
  }

  private send(request: Request): void {
    request.attempt++;
    request.requestId = this.nextRequestId++ >>> 0;
    request.total = -1;
    request.data = undefined;
    request.offsets.clear();
    request.received = 0;
    request.sentAt = this.node.clock.monotonic();
    this.inFlight.set(request.requestId, request);
    this.stats.requested++;
    const timeout = this.rto() * 2 ** Math.min(request.attempt - 1, 5);
    request.timer = setTimeout(() => this.onTimeout(request), timeout);

    this.node.sendPacket(request.dst, encodeChunkRequest({ requestId: request.requestId, cid: request.cid.id, offset: 0, length: 0 }), {
      src: this.node.serviceAddress(this.sid),
      nextHeader: NextHeader.TRANSPORT,
    });
  }

  private retry(request: Request, reason: string): void {
    clearTimeout(request.timer);
    this.inFlight.delete(request.requestId);
    if (request.attempt >= request.maxAttempts) {
      this.finish(request, new XmigError('ERR_CHUNK', `chunk ${request.cid} not fetched after ${request.attempt} attempts (${reason})`));
      return;
    }
    this.stats.refetched++;
    request.retransmitted = true;
    this.send(request);
  }

  private onTimeout(request: Request): void {
    if (this.inFlight.get(request.requestId) !== request) return;
    this.stats.timeouts++;
    // A loss: halve the window (at most once per window's worth of time would be finer; this is enough).
    this.slowStartThreshold = Math.max(2, this.window / 2);
    this.window = this.slowStartThreshold;
    this.retry(request, 'timeout');
  }

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
    const request = this.inFlight.get(message.requestId);
    if (!request || !request.cid.id.equals(message.cid)) return;
    if (message.op === ChunkOp.NOT_FOUND) {
      this.stats.notFound++;
      this.retry(request, 'not found');
      return;
    }
    if (request.total < 0) {
      request.total = message.total;
      request.data = Buffer.allocUnsafe(message.total);
    } else if (request.total !== message.total) {
      this.retry(request, 'inconsistent length');
      return;
    }
    if (request.offsets.has(message.offset)) return;
    request.offsets.add(message.offset);
    message.data.copy(request.data!, message.offset);
    request.received += message.data.length;
    if (request.received < request.total) return;
    clearTimeout(request.timer);
    this.inFlight.delete(request.requestId);
    const data = request.data!;
    if (!createHash('sha1').update(data).digest().equals(request.cid.id)) {
      this.stats.corrupt++;
      this.retry(request, 'corrupt');
      return;
    }
    if (!request.retransmitted) this.sampleRtt(this.node.clock.monotonic() - request.sentAt);
    this.grow();
    this.stats.verified++;
    this.stats.bytes += data.length;
    this.finish(request, undefined, data);
  }

  private sampleRtt(rtt: number): void {
    if (this.srtt === undefined) {
      this.srtt = rtt;
      this.rttvar = rtt / 2;
    } else {
      this.rttvar = 0.75 * this.rttvar + 0.25 * Math.abs(this.srtt - rtt);
      this.srtt = 0.875 * this.srtt + 0.125 * rtt;
    }
  }

  private grow(): void {
    if (this.window < this.slowStartThreshold) this.window += 1;
    else {
      this.growth += 1 / this.window;
      if (this.growth >= 1) {
        this.window += 1;
        this.growth = 0;
      }
    }
    this.window = Math.min(this.window, this.maxWindow);
  }

  private finish(request: Request, error: Error | undefined, data?: Buffer): void {
    clearTimeout(request.timer);
    if (this.inFlight.get(request.requestId) === request) this.inFlight.delete(request.requestId);
    const queued = this.queue.indexOf(request);
    if (queued >= 0) this.queue.splice(queued, 1);
    if (request.onAbort) request.signal?.removeEventListener('abort', request.onAbort);
    if (error) request.reject(error);
    else request.resolve(data!);
    this.pump();
  }
}
