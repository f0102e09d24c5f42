/**
 * One STREAM connection: a reliable, ordered, flow- and congestion-controlled byte
 * stream, exposed as a Node.js Duplex with backpressure both ways.
 *
 * Reliability follows QUIC (RFC 9000/9002): packet numbers are never reused, ACK
 * frames carry ranges, a packet is lost when three later ones are acknowledged or
 * when it is 9/8 RTT older than an acknowledged one, and a probe timeout with
 * exponential backoff finds out when nothing is acknowledged at all.
 *
 * What makes it survive a VM migration:
 *  - the connection is its ID, not its addresses: packets from the peer's new DAG
 *    belong to it like any other, and (unless pinned) it moves its sending to the
 *    new DAG once a path challenge answered from there proves the peer is there;
 *  - during an outage probes back off only up to `maxBackoffMs`, and the connection
 *    gives up only after `outageTimeoutMs` of silence; the backoff is cut short
 *    when the outage visibly ends: a packet from the peer, or this node joining a
 *    gateway again after a move or pause (`probeNow`);
 *  - a timeout alone never shrinks the congestion window (as in QUIC, unlike
 *    TCP's RTO): a stop-and-copy pause is not congestion, so when packets flow
 *    again the sender goes on at the rate it had. Only losses detected by later
 *    acknowledgements halve it, once per round trip.
 */
import { randomBytes } from 'node:crypto';
import { Duplex } from 'node:stream';
import type { Dag } from '../../shared/dag.js';
import { XmigError } from '../../shared/errors.js';
import type { Xid } from '../../shared/xid.js';
import { RangeSet } from './range-set.js';
import { RttEstimator } from './rtt-estimator.js';
import { Frame, MAX_ACK_RANGES, SegmentWriter, STREAM_FRAME_OVERHEAD, visitFrames, type FrameVisitor } from './stream-segment.js';

/** Where a packet came from: its source DAG and the raw bytes of it (compared cheaply). */
export interface StreamPath {
  dag: Dag;
  key: Buffer;
}

/** What a connection needs from the transport under it. */
export interface StreamLower {
  /** Bytes to leave in front of a segment for the XIP header toward `peer`. */
  headerRoom(peer: Dag): number;
  /** Fills in the XIP header and sends; the writer's buffer is handed over. */
  transmit(writer: SegmentWriter, peer: Dag): void;
  /** Largest segment (after the transport byte) one packet carries. */
  readonly maxSegment: number;
  /** Forget this connection (it is closed). */
  release(connection: StreamConnection): void;
}

export interface StreamOptions {
  /** Move to the peer's new address after validating it (default true). */
  followPeerAddress?: boolean;
  /** Fail after this long without hearing from the peer (default 30 s). */
  outageTimeoutMs?: number;
  /** Longest interval between probes during an outage (default 1 s). */
  maxBackoffMs?: number;
  /** Send a PING after this long without sending anything (default 5 s). */
  keepaliveMs?: number;
  /** Bytes the peer may send beyond what the application has read (default 8 MiB). */
  receiveWindow?: number;
  /** Bytes written but not yet acknowledged before write() asks the writer to wait (default 8 MiB). */
  sendBuffer?: number;
  /** Longest a receiver waits before acknowledging (default 2 ms). */
  maxAckDelayMs?: number;
  /** Congestion window at the start, in packets (default 10). */
  initialWindowPackets?: number;
}

export type ResetCode = 0 | 1 | 2 | 3;
export const ResetCode = { ABORT: 0, UNKNOWN_CONNECTION: 1, FLOW_CONTROL: 2, PROTOCOL: 3 } as const;

export class StreamError extends XmigError {
  constructor(
    readonly reason: 'reset' | 'timeout' | 'refused' | 'protocol',
    message: string,
  ) {
    super('ERR_CONNECTION', message);
  }
}

interface SentPacket {
  pn: number;
  sentAt: number;
  bytes: number;
  /** Stream byte ranges it carried. */
  ranges: Array<[number, number]>;
  fin: boolean;
  handshake: boolean;
  maxData: boolean;
}

interface Stats {
  packetsSent: number;
  packetsReceived: number;
  retransmittedBytes: number;
  lostPackets: number;
  probes: number;
  bytesSent: number;
  bytesReceived: number;
  pathChanges: number;
}

const INITIAL_PEER_WINDOW = 256 * 1024;

export class StreamConnection extends Duplex {
  readonly connectionId: Buffer;
  readonly role: 'client' | 'server';
  readonly localSid: Xid;
  readonly stats: Stats = {
    packetsSent: 0,
    packetsReceived: 0,
    retransmittedBytes: 0,
    lostPackets: 0,
    probes: 0,
    bytesSent: 0,
    bytesReceived: 0,
    pathChanges: 0,
  };

  private peer: StreamPath;
  private readonly options: Required<StreamOptions>;
  private established: boolean;
  private resetDone = false;

  // ---- sending ----
  private nextPn = 0;
  private readonly sendChunks: Array<{ offset: number; data: Buffer }> = [];
  private writtenOffset = 0;
  private nextSendOffset = 0;
  private readonly acked = new RangeSet();
  private ackedPrefix = 0;
  private retransmit: Array<[number, number]> = [];
  private finOffset: number | undefined;
  private finSent = false;
  private finAcked = false;
  private peerMaxData = INITIAL_PEER_WINDOW;
  private readonly sent = new Map<number, SentPacket>();
  private largestAcked = -1;
  private bytesInFlight = 0;
  private cwnd: number;
  private ssthresh = Infinity;
  private recoveryStart = -Infinity;
  private readonly rtt = new RttEstimator(100);
  private ptoCount = 0;
  private lastAckElicitingSent = 0;
  private pendingWrite: (() => void) | undefined;
  private pendingFinal: ((error?: Error | null) => void) | undefined;
  private handshakePending: 0 | 1 | undefined;
  private maxDataPending = false;
  private pathChallenge: { data: Buffer; path: StreamPath } | undefined;
  private pathResponses: Array<{ data: Buffer; path: StreamPath }> = [];

  // ---- receiving ----
  private readonly receivedPns = new RangeSet();
  private largestReceived = -1;
  private ackElicitingUnacked = 0;
  private ackNow = false;
  private ackDeadline: number | undefined;
  private readonly recvData = new Map<number, Buffer>();
  private readonly recvRanges = new RangeSet();
  private deliveredOffset = 0;
  private recvFinOffset: number | undefined;
  private advertisedMaxData: number;
  /** The last push() said the application's buffer is full: keep the window where it is. */
  private readerBlocked = false;
  private lastHeard: number;
  private currentPath: StreamPath | undefined;

  // ---- timers ----
  private timer: NodeJS.Timeout | undefined;
  private timerAt = Infinity;
  private flushing = false;
  private flushQueued = false;

  constructor(
    private readonly lower: StreamLower,
    init: { role: 'client' | 'server'; connectionId: Buffer; localSid: Xid; peer: StreamPath; peerMaxData?: number; options?: StreamOptions },
  ) {
    const options: Required<StreamOptions> = {
      followPeerAddress: true,
      outageTimeoutMs: 30_000,
      maxBackoffMs: 1000,
      keepaliveMs: 5000,
      receiveWindow: 8 * 1024 * 1024,
      sendBuffer: 8 * 1024 * 1024,
      maxAckDelayMs: 2,
      initialWindowPackets: 10,
      ...stripUndefined(init.options ?? {}),
    };
    super({ allowHalfOpen: true, readableHighWaterMark: options.receiveWindow, writableHighWaterMark: 1024 * 1024 });
    this.options = options;
    this.role = init.role;
    this.connectionId = init.connectionId;
    this.localSid = init.localSid;
    this.peer = init.peer;
    this.cwnd = options.initialWindowPackets * lower.maxSegment;
    this.advertisedMaxData = options.receiveWindow;
    this.lastHeard = now();
    this.lastAckElicitingSent = now();
    if (init.role === 'client') {
      this.established = false;
      this.handshakePending = 0;
    } else {
      this.established = true;
      this.peerMaxData = init.peerMaxData ?? INITIAL_PEER_WINDOW;
      this.handshakePending = 1;
    }
    this.queueFlush();
  }

  /** The peer's current DAG (the one this end sends to); changes when the peer moves. */
  get remote(): Dag {
    return this.peer.dag;
  }

  /** The peer's current path (its DAG and the raw bytes packets from it carry). */
  get peerPath(): StreamPath {
    return this.peer;
  }

  get connectionIdHex(): string {
    return this.connectionId.toString('hex');
  }

  /** Whether a timer is armed (a destroyed connection must leave none). */
  get timerArmed(): boolean {
    return this.timer !== undefined;
  }

  /** Congestion and RTT state, for tests and metrics. */
  get state(): { cwnd: number; bytesInFlight: number; srtt: number; established: boolean; ackedPrefix: number } {
    return { cwnd: this.cwnd, bytesInFlight: this.bytesInFlight, srtt: this.rtt.smoothed, established: this.established, ackedPrefix: this.ackedPrefix };
  }

  // ---- Duplex -------------------------------------------------------------------------

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    if (chunk.length > 0) {
      this.sendChunks.push({ offset: this.writtenOffset, data: chunk });
      this.writtenOffset += chunk.length;
    }
    // Hold the callback while too much is unacknowledged: Writable then buffers and
    // write() returns false, which is the backpressure the writer sees.
    if (this.writtenOffset - this.ackedPrefix > this.options.sendBuffer) this.pendingWrite = () => callback();
    else callback();
    this.queueFlush();
  }

  override _final(callback: (error?: Error | null) => void): void {
    this.finOffset = this.writtenOffset;
    this.pendingFinal = callback;
    this.queueFlush();
  }

  override _read(): void {
    // The application wants more: the window may open again.
    this.readerBlocked = false;
    this.updateWindow();
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    const graceful = this.finAcked && this.recvFinOffset !== undefined && this.deliveredOffset >= this.recvFinOffset;
    if (!graceful && !this.resetDone) this.sendReset(ResetCode.ABORT);
    // The peer's FIN may be waiting for our acknowledgement: give it before going.
    if (graceful && this.ackElicitingUnacked > 0) this.sendFinalAck();
    this.clearTimer();
    this.lower.release(this);
    callback(error);
  }

  // ---- receiving ------------------------------------------------------------------------

  /** A segment for this connection arrived from `path`. */
  receive(segment: Buffer, packetNumber: number, framesAt: number, path: StreamPath): void {
    if (this.destroyed) return;
    this.lastHeard = now();
    // Backing off with data unacknowledged, and the peer is heard again: the outage is
    // over. Probe at once instead of sleeping out the backoff (an ACK in this packet
    // that acknowledges something resets the backoff itself, and then this is moot).
    const wasBackingOff = this.ptoCount > 0 && this.sent.size > 0;
    this.stats.packetsReceived++;
    if (this.receivedPns.has(packetNumber)) {
      this.ackNow = true;
      this.queueFlush();
      return;
    }
    this.currentPath = path;
    let ackEliciting: boolean;
    try {
      ackEliciting = visitFrames(segment, framesAt, this.visitor);
    } catch (error) {
      this.fail(new StreamError('protocol', `malformed STREAM segment: ${(error as Error).message}`), ResetCode.PROTOCOL);
      return;
    } finally {
      this.currentPath = undefined;
    }
    if (this.destroyed) return;
    this.receivedPns.add(packetNumber, packetNumber + 1);
    // Keep the set small: ranges far below what matters are never needed again.
    if (this.receivedPns.size > MAX_ACK_RANGES * 2) this.receivedPns.forgetBelow(packetNumber - 100_000);
    const inOrder = packetNumber === this.largestReceived + 1;
    this.largestReceived = Math.max(this.largestReceived, packetNumber);
    if (ackEliciting) {
      this.ackElicitingUnacked++;
      if (!inOrder || this.ackElicitingUnacked >= 2) this.ackNow = true;
      else this.ackDeadline ??= now() + this.options.maxAckDelayMs;
    }
    if (!this.options.followPeerAddress || path.key.equals(this.peer.key)) {
      // nothing to validate
    } else if (!this.pathChallenge || !this.pathChallenge.path.key.equals(path.key)) {
      this.pathChallenge = { data: randomBytes(8), path };
    }
    if (wasBackingOff && this.ptoCount > 0 && this.sent.size > 0) this.probeNow();
    else this.queueFlush();
  }

  private readonly visitor: FrameVisitor = {
    ping: () => undefined,
    ack: (ranges) => this.onAck(ranges),
    reset: (code) => {
      this.resetDone = true;
      this.fail(new StreamError(code === ResetCode.UNKNOWN_CONNECTION ? 'refused' : 'reset', `connection reset by peer (code ${code})`));
    },
    stream: (offset, data, fin) => this.onStream(offset, data, fin),
    maxData: (limit) => {
      if (limit > this.peerMaxData) this.peerMaxData = limit;
    },
    pathChallenge: (data) => {
      this.pathResponses.push({ data: Buffer.from(data), path: this.currentPath! });
    },
    pathResponse: (data) => {
      const challenge = this.pathChallenge;
      if (challenge && challenge.data.equals(data) && challenge.path.key.equals(this.currentPath!.key)) {
        this.peer = challenge.path;
        this.pathChallenge = undefined;
        this.stats.pathChanges++;
        this.emit('path', this.peer.dag);
      }
    },
    handshake: (role, maxData) => {
      if (role === 1 && this.role === 'client') {
        this.peerMaxData = Math.max(this.peerMaxData, maxData);
        if (!this.established) {
          this.established = true;
          this.emit('established');
        }
      } else if (role === 0 && this.role === 'server') {
        // (Again, if the client did not hear our accept.)
        this.peerMaxData = Math.max(this.peerMaxData, maxData);
        this.handshakePending = 1;
      }
    },
  };

  private onStream(offset: number, data: Buffer, fin: boolean): void {
    const end = offset + data.length;
    if (end > this.advertisedMaxData) {
      this.fail(new StreamError('protocol', `peer sent up to ${end}, beyond the window ${this.advertisedMaxData}`), ResetCode.FLOW_CONTROL);
      return;
    }
    if (fin) {
      if (this.recvFinOffset !== undefined && this.recvFinOffset !== end) {
        this.fail(new StreamError('protocol', 'peer moved its end of stream'), ResetCode.PROTOCOL);
        return;
      }
      this.recvFinOffset = end;
    }
    if (data.length > 0) {
      for (const [start, stop] of this.recvRanges.missing(offset, end)) {
        this.recvData.set(start, data.subarray(start - offset, stop - offset));
      }
      this.recvRanges.add(offset, end);
      this.stats.bytesReceived += data.length;
    }
    this.deliver();
  }

  private deliver(): void {
    for (;;) {
      const piece = this.recvData.get(this.deliveredOffset);
      if (!piece) break;
      this.recvData.delete(this.deliveredOffset);
      this.deliveredOffset += piece.length;
      if (!this.push(piece)) this.readerBlocked = true;
    }
    this.updateWindow();
    this.recvRanges.forgetBelow(this.deliveredOffset);
    if (this.recvFinOffset !== undefined && this.deliveredOffset >= this.recvFinOffset && !this.readableEnded) {
      this.push(null);
    }
  }

  /**
   * Moves the receive window forward. It opens a window beyond what was handed to the
   * application, unless the application's buffer is full (push() said so), in which
   * case it waits for _read(): the standard Readable contract, so it cannot deadlock.
   */
  private updateWindow(): void {
    if (this.readerBlocked || this.destroyed) return;
    const limit = this.deliveredOffset + this.options.receiveWindow;
    if (limit - this.advertisedMaxData >= this.options.receiveWindow / 4) {
      this.advertisedMaxData = limit;
      this.maxDataPending = true;
      this.queueFlush();
    }
  }

  // ---- acknowledgements and loss ----------------------------------------------------------

  private onAck(ranges: Array<[number, number]>): void {
    const t = now();
    let newlyAcked = false;
    let largestNewly: SentPacket | undefined;
    for (const [start, end] of ranges) {
      if (end - start > this.sent.size) {
        // A wide range: walk what is in flight instead of every number in it.
        for (const packet of this.sent.values()) {
          if (packet.pn >= start && packet.pn < end) {
            this.onPacketAcked(packet);
            newlyAcked = true;
            if (!largestNewly || packet.pn > largestNewly.pn) largestNewly = packet;
          }
        }
      } else {
        for (let pn = start; pn < end; pn++) {
          const packet = this.sent.get(pn);
          if (!packet) continue;
          this.onPacketAcked(packet);
          newlyAcked = true;
          if (!largestNewly || packet.pn > largestNewly.pn) largestNewly = packet;
        }
      }
    }
    if (!newlyAcked) return;
    if (largestNewly && largestNewly.pn > this.largestAcked) {
      this.largestAcked = largestNewly.pn;
      this.rtt.sample(t - largestNewly.sentAt);
    }
    this.ptoCount = 0;
    this.detectLosses(t);
    this.advanceAcked();
  }

  private onPacketAcked(packet: SentPacket): void {
    this.sent.delete(packet.pn);
    this.bytesInFlight -= packet.bytes;
    for (const [start, end] of packet.ranges) this.acked.add(start, end);
    if (packet.fin) this.finAcked = true;
    // Congestion window growth (RFC 9002 7.3), not for packets sent before a recovery began.
    if (packet.sentAt > this.recoveryStart) {
      if (this.cwnd < this.ssthresh) this.cwnd += packet.bytes;
      else this.cwnd += (this.lower.maxSegment * packet.bytes) / this.cwnd;
    }
  }

  private detectLosses(t: number): void {
    const lossDelay = this.rtt.lossDelay();
    let lostAny = false;
    let newestLostSentAt = -Infinity;
    for (const packet of this.sent.values()) {
      if (packet.pn >= this.largestAcked) break;
      if (packet.pn <= this.largestAcked - 3 || packet.sentAt <= t - lossDelay) {
        this.sent.delete(packet.pn);
        this.bytesInFlight -= packet.bytes;
        this.stats.lostPackets++;
        this.requeue(packet);
        lostAny = true;
        newestLostSentAt = Math.max(newestLostSentAt, packet.sentAt);
      }
    }
    if (lostAny && newestLostSentAt > this.recoveryStart) {
      this.recoveryStart = t;
      this.ssthresh = Math.max(this.cwnd / 2, 2 * this.lower.maxSegment);
      this.cwnd = this.ssthresh;
    }
  }

  /** Puts what a lost packet carried back in line to be sent again. */
  private requeue(packet: SentPacket): void {
    for (const [start, end] of packet.ranges) {
      for (const missing of this.acked.missing(start, end)) {
        this.retransmit.push(missing);
        this.stats.retransmittedBytes += missing[1] - missing[0];
      }
    }
    if (packet.fin && !this.finAcked) this.finSent = false;
    if (packet.handshake && !this.established && this.role === 'client') this.handshakePending = 0;
    if (packet.handshake && this.role === 'server') this.handshakePending ??= 1;
    if (packet.maxData) this.maxDataPending = true;
    if (this.retransmit.length > 1) this.retransmit.sort((a, b) => a[0] - b[0]);
  }

  private advanceAcked(): void {
    const prefix = this.acked.contiguousEnd(0);
    if (prefix > this.ackedPrefix) {
      this.ackedPrefix = prefix;
      while (this.sendChunks.length > 0) {
        const first = this.sendChunks[0]!;
        if (first.offset + first.data.length > prefix) break;
        this.sendChunks.shift();
      }
    }
    if (this.pendingWrite && this.writtenOffset - this.ackedPrefix <= this.options.sendBuffer) {
      const resume = this.pendingWrite;
      this.pendingWrite = undefined;
      resume();
    }
    if (this.finAcked && this.pendingFinal && this.ackedPrefix >= (this.finOffset ?? Infinity)) {
      const done = this.pendingFinal;
      this.pendingFinal = undefined;
      done();
    }
  }

  // ---- sending -------------------------------------------------------------------------

  private queueFlush(): void {
    if (this.flushQueued || this.destroyed) return;
    this.flushQueued = true;
    queueMicrotask(() => {
      this.flushQueued = false;
      this.flush();
    });
  }

  /** Bytes of stream data from `offset`, at most `length`, as one Buffer (a view when it can be). */
  private dataAt(offset: number, length: number): Buffer {
    const chunks = this.sendChunks;
    let lo = 0;
    let hi = chunks.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (chunks[mid]!.offset <= offset) lo = mid;
      else hi = mid - 1;
    }
    const first = chunks[lo]!;
    const start = offset - first.offset;
    if (start + length <= first.data.length) return first.data.subarray(start, start + length);
    const parts = [first.data.subarray(start)];
    let have = parts[0]!.length;
    for (let i = lo + 1; i < chunks.length && have < length; i++) {
      const piece = chunks[i]!.data.subarray(0, length - have);
      parts.push(piece);
      have += piece.length;
    }
    return Buffer.concat(parts, have);
  }

  private hasDataToSend(): boolean {
    if (!this.established) return false;
    if (this.retransmit.length > 0) return true;
    const limit = Math.min(this.writtenOffset, this.peerMaxData);
    if (this.nextSendOffset < limit) return true;
    return this.finOffset !== undefined && !this.finSent && this.nextSendOffset >= this.finOffset;
  }

  private flush(probe = false): void {
    if (this.destroyed || this.flushing) return;
    this.flushing = true;
    try {
      const t = now();
      if (this.ackDeadline !== undefined && t >= this.ackDeadline) this.ackNow = true;
      let probes = probe ? 1 : 0;
      for (;;) {
        const congestionOk = this.bytesInFlight < this.cwnd || probes > 0;
        const wantData = congestionOk && this.hasDataToSend();
        const wantControl =
          this.handshakePending !== undefined || this.maxDataPending || this.pathResponses.length > 0 || (this.pathChallenge !== undefined && !this.challengeSentRecently(t));
        if (!wantData && !wantControl && !this.ackNow && probes === 0) break;
        this.sendPacket(t, wantData, probes > 0);
        if (probes > 0) probes--;
      }
    } finally {
      this.flushing = false;
    }
    this.schedule();
  }

  private challengeSentAt = -Infinity;
  private challengeSentRecently(t: number): boolean {
    return t - this.challengeSentAt < Math.min(this.rtt.pto(this.options.maxAckDelayMs), this.options.maxBackoffMs);
  }

  private sendPacket(t: number, withData: boolean, probe: boolean): void {
    const peer = this.peer.dag;
    const pn = this.nextPn++;
    // Packets that may carry data get the full segment size; ACK-only ones a small buffer.
    const capacity = withData || probe ? this.lower.maxSegment : 512;
    const writer = new SegmentWriter(capacity, this.lower.headerRoom(peer), this.connectionId, pn);
    const packet: SentPacket = { pn, sentAt: t, bytes: 0, ranges: [], fin: false, handshake: false, maxData: false };
    if (this.receivedPns.size > 0 && writer.room >= SegmentWriter.ackLength(1)) {
      const ranges = this.receivedPns.descending(Math.min(MAX_ACK_RANGES, Math.floor((writer.room - 2) / 12)));
      writer.ack(ranges);
      this.ackNow = false;
      this.ackDeadline = undefined;
      this.ackElicitingUnacked = 0;
    }
    if (this.handshakePending !== undefined && writer.room >= 7) {
      writer.handshake(this.handshakePending, this.advertisedMaxData);
      packet.handshake = true;
      this.handshakePending = undefined;
    }
    if (this.maxDataPending && writer.room >= 7) {
      writer.maxData(this.advertisedMaxData);
      packet.maxData = true;
      this.maxDataPending = false;
    }
    for (const response of this.pathResponses.splice(0)) {
      // A response goes back the way the challenge came (QUIC 8.2.2).
      const reply = new SegmentWriter(64, this.lower.headerRoom(response.path.dag), this.connectionId, this.nextPn++);
      reply.path(Frame.PATH_RESPONSE, response.data);
      this.lower.transmit(reply, response.path.dag);
    }
    if (this.pathChallenge && !this.challengeSentRecently(t)) {
      const challenge = new SegmentWriter(64, this.lower.headerRoom(this.pathChallenge.path.dag), this.connectionId, this.nextPn++);
      challenge.path(Frame.PATH_CHALLENGE, this.pathChallenge.data);
      this.lower.transmit(challenge, this.pathChallenge.path.dag);
      this.challengeSentAt = t;
    }
    if (withData || probe) this.fillData(writer, packet, probe);
    if (probe && !writer.ackEliciting) writer.ping();
    if (writer.ackEliciting) {
      packet.bytes = writer.length - this.lower.headerRoom(peer);
      this.sent.set(packet.pn, packet);
      this.bytesInFlight += packet.bytes;
      this.lastAckElicitingSent = t;
    }
    this.stats.packetsSent++;
    this.lower.transmit(writer, peer);
  }

  private fillData(writer: SegmentWriter, packet: SentPacket, probe: boolean): void {
    // Retransmissions first, then new data, then the FIN.
    while (this.retransmit.length > 0 && writer.room > STREAM_FRAME_OVERHEAD) {
      const range = this.retransmit[0]!;
      const [start, end] = range;
      if (this.acked.covers(start, end) || end <= this.ackedPrefix) {
        this.retransmit.shift();
        continue;
      }
      const length = Math.min(end - start, writer.room - STREAM_FRAME_OVERHEAD);
      const fin = this.finOffset !== undefined && start + length === this.finOffset && this.nextSendOffset >= this.finOffset;
      writer.stream(start, this.dataAt(start, length), fin);
      packet.ranges.push([start, start + length]);
      if (fin) {
        packet.fin = true;
        this.finSent = true;
      }
      if (start + length >= end) this.retransmit.shift();
      else range[0] = start + length;
      this.stats.bytesSent += length;
    }
    const limit = Math.min(this.writtenOffset, this.peerMaxData);
    while (this.nextSendOffset < limit && writer.room > STREAM_FRAME_OVERHEAD) {
      const length = Math.min(limit - this.nextSendOffset, writer.room - STREAM_FRAME_OVERHEAD);
      const start = this.nextSendOffset;
      const fin = this.finOffset !== undefined && start + length === this.finOffset;
      writer.stream(start, this.dataAt(start, length), fin);
      packet.ranges.push([start, start + length]);
      this.nextSendOffset += length;
      this.stats.bytesSent += length;
      if (fin) {
        packet.fin = true;
        this.finSent = true;
      }
    }
    if (this.finOffset !== undefined && !this.finSent && this.nextSendOffset >= this.finOffset && writer.room > STREAM_FRAME_OVERHEAD) {
      writer.stream(this.finOffset, Buffer.alloc(0), true);
      packet.fin = true;
      this.finSent = true;
    }
    if (probe && !writer.ackEliciting) {
      // Nothing new to send: probe with the oldest data still unacknowledged.
      const oldest = this.sent.values().next().value;
      if (oldest && oldest.ranges.length > 0) {
        const [start, end] = oldest.ranges[0]!;
        const length = Math.min(end - start, writer.room - STREAM_FRAME_OVERHEAD);
        if (length > 0 && !this.acked.covers(start, start + length)) {
          writer.stream(start, this.dataAt(start, length), false);
          packet.ranges.push([start, start + length]);
        }
      }
    }
  }

  private sendFinalAck(): void {
    const writer = new SegmentWriter(512, this.lower.headerRoom(this.peer.dag), this.connectionId, this.nextPn++);
    writer.ack(this.receivedPns.descending(MAX_ACK_RANGES));
    this.ackElicitingUnacked = 0;
    this.lower.transmit(writer, this.peer.dag);
  }

  private sendReset(code: ResetCode): void {
    if (!this.peer) return;
    const writer = new SegmentWriter(32, this.lower.headerRoom(this.peer.dag), this.connectionId, this.nextPn++);
    writer.reset(code);
    this.lower.transmit(writer, this.peer.dag);
  }

  private fail(error: StreamError, resetCode?: ResetCode): void {
    if (this.destroyed) return;
    if (resetCode !== undefined) {
      this.sendReset(resetCode);
      this.resetDone = true; // _destroy must not send a second one
    }
    this.destroy(error);
  }

  // ---- timers ----------------------------------------------------------------------------

  private deadlines(): { loss: number; pto: number; ack: number; keepalive: number; outage: number } {
    let loss = Infinity;
    if (this.largestAcked >= 0) {
      for (const packet of this.sent.values()) {
        if (packet.pn >= this.largestAcked) break;
        loss = Math.min(loss, packet.sentAt + this.rtt.lossDelay());
        break;
      }
    }
    const outstanding = this.sent.size > 0 || this.handshakePending !== undefined;
    const backoff = Math.min(this.rtt.pto(this.options.maxAckDelayMs) * 2 ** this.ptoCount, this.options.maxBackoffMs);
    const pto = outstanding ? this.lastAckElicitingSent + backoff : Infinity;
    return {
      loss,
      pto,
      ack: this.ackDeadline ?? Infinity,
      keepalive: this.lastAckElicitingSent + this.options.keepaliveMs,
      outage: this.lastHeard + this.options.outageTimeoutMs,
    };
  }

  private schedule(): void {
    if (this.destroyed) return;
    const d = this.deadlines();
    const next = Math.min(d.loss, d.pto, d.ack, d.keepalive, d.outage);
    // Re-arm only for an earlier deadline; a later one is found when the timer fires.
    if (this.timer && next >= this.timerAt - 1) return;
    this.clearTimer();
    this.timerAt = next;
    this.timer = setTimeout(() => this.onTimer(), Math.max(0, next - now()));

  }

  private clearTimer(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.timerAt = Infinity;
  }

  /** Sends one ack-eliciting packet now: the handshake again, the oldest unacknowledged data, or a PING. */
  private probe(): void {
    if (!this.established && this.role === 'client') this.handshakePending = 0;
    this.flush(true);
  }

  /**
   * This node has just joined a gateway again, after a move or a pause: probe now
   * rather than at the end of the current backoff, so what the outage lost is sent
   * again at once and the peer hears from us (and from our new address) at once.
   */
  probeNow(): void {
    if (this.destroyed) return;
    this.ptoCount = 0;
    this.stats.probes++;
    this.probe();
  }

  private onTimer(): void {
    this.timer = undefined;
    this.timerAt = Infinity;
    if (this.destroyed) return;
    const t = now();
    const d = this.deadlines();
    if (t >= d.outage) {
      this.fail(new StreamError('timeout', `no packet from the peer for ${this.options.outageTimeoutMs} ms`));
      return;
    }
    if (t >= d.loss) {
      this.detectLosses(t);
      this.flush();
      return;
    }
    if (t >= d.pto) {
      this.ptoCount++;
      this.stats.probes++;
      this.probe();
      return;
    }
    if (t >= d.keepalive) {
      this.flush(true);
      return;
    }
    this.flush();
  }
}

function now(): number {
  return performance.now();
}

function stripUndefined<T extends object>(value: T): Partial<T> {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as Partial<T>;
}
