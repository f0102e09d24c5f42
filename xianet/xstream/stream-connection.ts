/**
 * One STREAM connection: a reliable, ordered, flow- and congestion-controlled byte
 * stream, exposed as a Node.js Duplex with backpressure both ways. This file is the
 * connection's frame: it hands each arriving frame to the part it belongs to, builds
 * the packets that go out, and keeps the one timer. The parts, one protocol seam each:
 *  - stream-handshake.ts: HANDSHAKE init and accept;
 *  - stream-sender.ts: the send side (in flight, loss, retransmission, congestion);
 *  - stream-receiver.ts: the receive side (ACKs, reassembly, the window);
 *  - stream-path-validation.ts: following a peer that moved;
 *  - stream-close.ts: FIN both ways or a RESET.
 *
 * What makes it survive a VM migration:
 *  - the connection is its ID, not its addresses: packets from the peer's new DAG
 *    belong to it like any other, and (unless pinned) it moves its sending to the
 *    new DAG once a path challenge answered from there proves the peer is there;
 *  - during an outage probes back off only up to `maxBackoffMs`, and the connection
 *    gives up only after `outageTimeoutMs` of silence; the backoff is cut short
 *    when the outage visibly ends: a packet from the peer, or this node joining a
 *    gateway again after a move or pause (`probeNow`);
 *  - a timeout alone never shrinks the congestion window (see stream-sender.ts).
 */
import { randomInt } from 'node:crypto';
import { Duplex } from 'node:stream';
import type { Dag } from '../../shared/dag.js';
import type { Xid } from '../../shared/xid.js';
import { outageError, ResetCode, StreamClose, StreamError } from './stream-close.js';
import { StreamHandshake } from './stream-handshake.js';
import { PathValidation, type StreamPath } from './stream-path-validation.js';
import { StreamReceiver } from './stream-receiver.js';
import { SegmentWriter, visitFrames, type FrameVisitor } from './stream-segment.js';
import { StreamSender, type SentPacket } from './stream-sender.js';

export { ResetCode, StreamError } from './stream-close.js';
export type { StreamPath } from './stream-path-validation.js';

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
  /** Stream data came before the peer was confirmed, and was dropped (counted as a refusal). */
  unconfirmedData(): void;
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
  private nextPn: number;
  private lastHeard: number;
  /** The path of the packet whose frames are being visited. */
  private currentPath: StreamPath | undefined;
  /** This packet confirmed a server's client: say so once its frames are taken. */
  private confirmedNow = false;
  /** The segment being read carried stream data before this server's client was confirmed. */
  private droppedUnconfirmed = false;

  private readonly handshake: StreamHandshake;
  private readonly sender: StreamSender;
  private readonly receiver: StreamReceiver;
  private readonly paths = new PathValidation();
  private readonly closing = new StreamClose();

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
    this.lastHeard = now();
    // A server's packet numbers start at random: a client's first ACK names one, which a
    // forged source never hears (see half-open-connections.ts). A client's start at 0.
    this.nextPn = init.role === 'server' ? randomInt(0, 2 ** 32) : 0;
    this.handshake = new StreamHandshake(init.role);
    this.receiver = new StreamReceiver(options.receiveWindow, options.maxAckDelayMs, this.stats);
    this.sender = new StreamSender(lower, options, this.stats, (packet) => this.onLost(packet), {
      peerMaxData: init.role === 'server' ? init.peerMaxData : undefined,
      t: now(),
    });
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

  /** A server connection whose client has not yet acknowledged anything of ours (its source unproven). */
  get awaitingConfirmation(): boolean {
    return !this.handshake.confirmed;
  }

  /** Ends the connection without a word to the peer (no RESET, no 'error'). */
  abandon(): void {
    this.closing.quiet();
    this.destroy();
  }

  /** Congestion and RTT state, for tests and metrics. */
  get state(): { cwnd: number; bytesInFlight: number; srtt: number; established: boolean; ackedPrefix: number } {
    const sender = this.sender;
    return { cwnd: sender.cwnd, bytesInFlight: sender.bytesInFlight, srtt: sender.rtt.smoothed, established: this.handshake.established, ackedPrefix: sender.ackedPrefix };
  }

  // ---- Duplex -------------------------------------------------------------------------

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    // A held callback makes Writable buffer and write() return false: the writer's backpressure.
    this.sender.write(chunk, () => callback());
    this.queueFlush();
  }

  override _final(callback: (error?: Error | null) => void): void {
    this.sender.end(callback);
    this.queueFlush();
  }

  override _read(): void {
    // The application wants more: the window may open again.
    this.receiver.readerBlocked = false;
    this.updateWindow();
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    const graceful = this.sender.finAcked && this.receiver.complete;
    const farewell = this.closing.farewell(graceful, this.receiver.owesAck);
    if (farewell === 'reset') this.sendReset(ResetCode.ABORT);
    // The peer's FIN may be waiting for our acknowledgement: give it before going.
    if (farewell === 'final-ack') this.sendFinalAck();
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
    const wasBackingOff = this.backingOff;
    this.stats.packetsReceived++;
    if (this.receiver.isDuplicate(packetNumber)) {
      this.receiver.ackNow = true;
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
    if (this.droppedUnconfirmed) {
      // Not recorded, so not acknowledged: a genuine client sends the data again once
      // confirmed, while a forged source cannot fill buffers nobody reads yet.
      this.droppedUnconfirmed = false;
      this.lower.unconfirmedData();
    } else {
      this.receiver.record(packetNumber, ackEliciting, now());
      if (this.options.followPeerAddress) this.paths.heardFrom(path, this.peer);
    }
    if (wasBackingOff && this.backingOff) this.probeNow();
    else this.queueFlush();
    if (this.confirmedNow) {
      this.confirmedNow = false;
      this.emit('confirmed');
    }
  }

  private get backingOff(): boolean {
    return this.sender.ptoCount > 0 && this.sender.inFlight > 0;
  }

  private readonly visitor: FrameVisitor = {
    ping: () => undefined,
    ack: (ranges) => {
      if (this.sender.onAck(ranges, now(), this.nextPn) && this.handshake.acknowledged()) this.confirmedNow = true;
    },
    reset: (code) => this.fail(this.closing.peerReset(code)),
    stream: (offset, data, fin) => this.onStream(offset, data, fin),
    maxData: (limit) => this.sender.raisePeerMaxData(limit),
    pathChallenge: (data) => this.paths.challenged(data, this.currentPath!),
    pathResponse: (data) => {
      const moved = this.paths.answered(data, this.currentPath!);
      if (!moved) return;
      this.peer = moved;
      this.stats.pathChanges++;
      this.sender.slowStartExit.reset();
      this.emit('path', this.peer.dag);
    },
    handshake: (role, maxData) => {
      const heard = this.handshake.heard(role);
      if (heard.valid) this.sender.peerMaxData = Math.max(this.sender.peerMaxData, maxData);
      if (heard.establishedNow) this.emit('established');
    },
  };

  private onStream(offset: number, data: Buffer, fin: boolean): void {
    // A server's client that has acknowledged nothing of ours may be a forged source: no
    // application holds this connection yet, so whatever it sent would only be buffered.
    if (!this.handshake.confirmed) {
      this.droppedUnconfirmed = true;
      return;
    }
    const refusal = this.receiver.accept(offset, data, fin);
    if (refusal) {
      this.fail(refusal.error, refusal.code);
      return;
    }
    this.deliver();
  }

  private deliver(): void {
    this.receiver.deliverInOrder((piece) => this.push(piece));
    this.updateWindow();
    this.receiver.forgetDelivered();
    if (this.receiver.complete && !this.readableEnded) this.push(null);
  }

  private updateWindow(): void {
    if (this.destroyed) return;
    if (this.receiver.openWindow()) this.queueFlush();
  }

  /** What a lost packet carried besides stream data goes out again. */
  private onLost(packet: SentPacket): void {
    if (packet.handshake) this.handshake.lost();
    if (packet.maxData) this.receiver.maxDataPending = true;
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

  private flush(probe = false): void {
    if (this.destroyed || this.flushing) return;
    this.flushing = true;
    try {
      const t = now();
      this.receiver.checkAckDeadline(t);
      let probes = probe ? 1 : 0;
      for (;;) {
        const congestionOk = this.sender.bytesInFlight < this.sender.cwnd || probes > 0;
        const wantData = congestionOk && this.handshake.established && this.sender.hasDataToSend();
        const wantControl = this.handshake.outstanding || this.receiver.maxDataPending || this.paths.wantsToSend(t, this.challengeInterval());
        if (!wantData && !wantControl && !this.receiver.ackNow && probes === 0) break;
        this.sendPacket(t, wantData, probes > 0);
        if (probes > 0) probes--;
      }
    } finally {
      this.flushing = false;
    }
    this.schedule();
  }

  /** How often a path challenge is sent again while unanswered. */
  private challengeInterval(): number {
    return Math.min(this.sender.rtt.pto(this.options.maxAckDelayMs), this.options.maxBackoffMs);
  }

  private sendPacket(t: number, withData: boolean, probe: boolean): void {
    const peer = this.peer.dag;
    const pn = this.nextPn++;
    // Packets that may carry data get the full segment size; ACK-only ones a small buffer.
    const capacity = withData || probe ? this.lower.maxSegment : 512;
    const writer = new SegmentWriter(capacity, this.lower.headerRoom(peer), this.connectionId, pn);
    const packet: SentPacket = { pn, sentAt: t, bytes: 0, ranges: [], fin: false, handshake: false, maxData: false };
    this.receiver.writeAck(writer);
    packet.handshake = this.handshake.write(writer, this.receiver.advertisedMaxData);
    if (this.receiver.maxDataPending && writer.room >= 7) {
      writer.maxData(this.receiver.advertisedMaxData);
      packet.maxData = true;
      this.receiver.maxDataPending = false;
    }
    // Path frames go in packets of their own, to the path they are for (QUIC 8.2.2).
    this.paths.send(t, this.challengeInterval(), (type, data, path) => {
      const frame = new SegmentWriter(64, this.lower.headerRoom(path.dag), this.connectionId, this.nextPn++);
      frame.path(type, data);
      this.lower.transmit(frame, path.dag);
    });
    if (withData || probe) this.sender.fillData(writer, packet, probe);
    if (probe && !writer.ackEliciting) writer.ping();
    if (writer.ackEliciting) {
      packet.bytes = writer.length - this.lower.headerRoom(peer);
      this.sender.sentPacket(packet, t);
    }
    this.stats.packetsSent++;
    this.lower.transmit(writer, peer);
  }

  private sendFinalAck(): void {
    const writer = new SegmentWriter(512, this.lower.headerRoom(this.peer.dag), this.connectionId, this.nextPn++);
    this.receiver.writeFinalAck(writer);
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
      this.closing.resetSent();
    }
    this.destroy(error);
  }

  // ---- timers ----------------------------------------------------------------------------

  private deadlines(): { loss: number; pto: number; ack: number; keepalive: number; outage: number } {
    const sender = this.sender;
    const outstanding = sender.inFlight > 0 || this.handshake.outstanding;
    const backoff = Math.min(sender.rtt.pto(this.options.maxAckDelayMs) * 2 ** sender.ptoCount, this.options.maxBackoffMs);
    const pto = outstanding ? sender.lastAckElicitingSent + backoff : Infinity;
    return {
      loss: sender.lossDeadline(),
      pto,
      ack: this.receiver.ackDeadline ?? Infinity,
      keepalive: sender.lastAckElicitingSent + this.options.keepaliveMs,
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
    this.handshake.probe();
    this.flush(true);
  }

  /**
   * This node has just joined a gateway again, after a move or a pause: probe now
   * rather than at the end of the current backoff, so what the outage lost is sent
   * again at once and the peer hears from us (and from our new address) at once.
   */
  probeNow(): void {
    if (this.destroyed) return;
    this.sender.ptoCount = 0;
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
      this.fail(outageError(this.options.outageTimeoutMs));
      return;
    }
    if (t >= d.loss) {
      this.sender.detectLosses(t);
      this.flush();
      return;
    }
    if (t >= d.pto) {
      this.sender.ptoCount++;
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
