/**
 * The send side of a STREAM connection: what the application wrote, held until
 * acknowledged; what is in flight; loss detection and retransmission; congestion
 * control; and the writer's backpressure.
 *
 * Reliability follows QUIC (RFC 9000/9002): packet numbers are never reused, a packet
 * is lost when three later ones are acknowledged or when it is 9/8 RTT older than an
 * acknowledged one, and what it carried (never the packet) goes into the next ones.
 * A timeout alone never shrinks the congestion window (as in QUIC, unlike TCP's RTO):
 * a stop-and-copy pause is not congestion. Only losses detected by later
 * acknowledgements halve it, once per round trip. Slow start also ends where the round
 * trip starts to grow (HyStart, slow-start-exit.ts): a slow receiver behind a deep
 * buffer loses nothing for seconds while the queue to it grows.
 */
import { RangeSet } from './range-set.js';
import { RttEstimator } from './rtt-estimator.js';
import { SlowStartExit } from './slow-start-exit.js';
import { STREAM_FRAME_OVERHEAD, type SegmentWriter } from './stream-segment.js';

const INITIAL_PEER_WINDOW = 256 * 1024;

export interface SentPacket {
  pn: number;
  sentAt: number;
  bytes: number;
  /** Stream byte ranges it carried. */
  ranges: Array<[number, number]>;
  fin: boolean;
  handshake: boolean;
  maxData: boolean;
}

export interface SenderStats {
  retransmittedBytes: number;
  lostPackets: number;
  bytesSent: number;
}

export class StreamSender {
  private readonly chunks: Array<{ offset: number; data: Buffer }> = [];
  private writtenOffset = 0;
  private nextSendOffset = 0;
  private readonly acked = new RangeSet();
  /** All stream bytes below this are acknowledged. */
  ackedPrefix = 0;
  private retransmit: Array<[number, number]> = [];
  private finOffset: number | undefined;
  private finSent = false;
  /** Our FIN is acknowledged. */
  finAcked = false;
  /** How far the peer lets us send. */
  peerMaxData: number;
  private readonly sent = new Map<number, SentPacket>();
  private largestAcked = -1;
  bytesInFlight = 0;
  cwnd: number;
  private ssthresh = Infinity;
  private recoveryStart = -Infinity;
  readonly rtt = new RttEstimator(100);
  readonly slowStartExit = new SlowStartExit();
  /** Probe timeouts in a row without an acknowledgement (the backoff's exponent). */
  ptoCount = 0;
  lastAckElicitingSent: number;
  private pendingWrite: (() => void) | undefined;
  private pendingFinal: ((error?: Error | null) => void) | undefined;

  constructor(
    private readonly lower: { readonly maxSegment: number },
    private readonly options: { sendBuffer: number; initialWindowPackets: number },
    private readonly stats: SenderStats,
    /** A lost packet carried control frames (HANDSHAKE, MAX_DATA): send them again. */
    private readonly onLost: (packet: SentPacket) => void,
    init: { peerMaxData?: number; t: number },
  ) {
    this.cwnd = options.initialWindowPackets * lower.maxSegment;
    this.peerMaxData = init.peerMaxData ?? INITIAL_PEER_WINDOW;
    this.lastAckElicitingSent = init.t;
  }

  /** Packets in flight (sent, neither acknowledged nor lost). */
  get inFlight(): number {
    return this.sent.size;
  }

  /** Takes written bytes; holds `callback` while too much is unacknowledged (Writable then buffers: backpressure). */
  write(chunk: Buffer, callback: () => void): void {
    if (chunk.length > 0) {
      this.chunks.push({ offset: this.writtenOffset, data: chunk });
      this.writtenOffset += chunk.length;
    }
    if (this.writtenOffset - this.ackedPrefix > this.options.sendBuffer) this.pendingWrite = callback;
    else callback();
  }

  /** The application ended its side: a FIN after what it wrote; `callback` once that is acknowledged. */
  end(callback: (error?: Error | null) => void): void {
    this.finOffset = this.writtenOffset;
    this.pendingFinal = callback;
  }

  /** Data (or the FIN) waits to be sent and the peer's window lets it. */
  hasDataToSend(): boolean {
    if (this.retransmit.length > 0) return true;
    const limit = Math.min(this.writtenOffset, this.peerMaxData);
    if (this.nextSendOffset < limit) return true;
    return this.finOffset !== undefined && !this.finSent && this.nextSendOffset >= this.finOffset;
  }

  /** The peer's MAX_DATA. */
  raisePeerMaxData(limit: number): void {
    if (limit > this.peerMaxData) this.peerMaxData = limit;
  }

  /**
   * An ACK frame; true if it acknowledged something new. `sentBelow`: the next packet
   * number this end would use. An ACK naming a packet never sent is ignored whole: only
   * a peer guessing at our packet numbers sends one.
   */
  onAck(ranges: Array<[number, number]>, t: number, sentBelow: number): boolean {
    for (const [, end] of ranges) if (end > sentBelow) return false;
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
    if (!newlyAcked) return false;
    if (largestNewly && largestNewly.pn > this.largestAcked) {
      this.largestAcked = largestNewly.pn;
      const rttMs = t - largestNewly.sentAt;
      this.rtt.sample(rttMs);
      if (this.cwnd < this.ssthresh && this.slowStartExit.sample(rttMs, largestNewly.pn, sentBelow)) this.ssthresh = this.cwnd;
    }
    this.ptoCount = 0;
    this.detectLosses(t);
    this.advanceAcked();
    return true;
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

  detectLosses(t: number): void {
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
    this.onLost(packet);
    if (this.retransmit.length > 1) this.retransmit.sort((a, b) => a[0] - b[0]);
  }

  private advanceAcked(): void {
    const prefix = this.acked.contiguousEnd(0);
    if (prefix > this.ackedPrefix) {
      this.ackedPrefix = prefix;
      while (this.chunks.length > 0) {
        const first = this.chunks[0]!;
        if (first.offset + first.data.length > prefix) break;
        this.chunks.shift();
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

  /** An ack-eliciting packet went out: it is in flight now. */
  sentPacket(packet: SentPacket, t: number): void {
    this.sent.set(packet.pn, packet);
    this.bytesInFlight += packet.bytes;
    this.lastAckElicitingSent = t;
  }

  /** When the oldest packet in flight below the largest acknowledged counts as lost. */
  lossDeadline(): number {
    if (this.largestAcked < 0) return Infinity;
    for (const packet of this.sent.values()) {
      if (packet.pn >= this.largestAcked) break;
      return packet.sentAt + this.rtt.lossDelay();
    }
    return Infinity;
  }

  /** Bytes of stream data from `offset`, at most `length`, as one Buffer (a view when it can be). */
  private dataAt(offset: number, length: number): Buffer {
    const chunks = this.chunks;
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

  /** Fills the packet: retransmissions first, then new data, then the FIN; a probe with nothing new resends the oldest. */
  fillData(writer: SegmentWriter, packet: SentPacket, probe: boolean): void {
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
}
