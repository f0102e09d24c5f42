/**
 * The receive side of a STREAM connection: which packets arrived (and so what to
 * acknowledge, and when), the stream's bytes put back in order, and the flow-control
 * window the peer may send into.
 *
 * Acknowledgements follow QUIC: at once for a packet out of order or every second
 * ack-eliciting packet, otherwise within `maxAckDelayMs`. Reassembly holds only what the
 * window allows (a frame beyond it fails the connection), each byte once: a
 * retransmission's overlap with what is held is dropped. The window opens as the
 * application reads, never while its buffer is full (then it waits for `_read`).
 */
import { RangeSet } from './range-set.js';
import { ResetCode, StreamError } from './stream-close.js';
import { MAX_ACK_RANGES, SegmentWriter } from './stream-segment.js';

/** Why a STREAM frame was refused: the error, and the RESET code to tell the peer. */
export interface StreamRefusal {
  error: StreamError;
  code: ResetCode;
}

export class StreamReceiver {
  private readonly packets = new RangeSet();
  private largestReceived = -1;
  private ackElicitingUnacked = 0;
  /** An ACK should go out at the next flush. */
  ackNow = false;
  /** When a delayed ACK is due. */
  ackDeadline: number | undefined;
  private readonly pieces = new Map<number, Buffer>();
  private readonly ranges = new RangeSet();
  private deliveredOffset = 0;
  private finOffset: number | undefined;
  /** How far the peer may send (the MAX_DATA we last gave). */
  advertisedMaxData: number;
  /** A MAX_DATA frame should go out. */
  maxDataPending = false;
  /** The last push() said the application's buffer is full: keep the window where it is. */
  readerBlocked = false;

  constructor(
    private readonly window: number,
    private readonly maxAckDelayMs: number,
    private readonly stats: { bytesReceived: number },
  ) {
    this.advertisedMaxData = window;
  }

  /** This packet number arrived before (a retransmission whose ACK was lost: acknowledge again). */
  isDuplicate(packetNumber: number): boolean {
    return this.packets.has(packetNumber);
  }

  /** A packet's frames were taken: note it, and when to acknowledge it. */
  record(packetNumber: number, ackEliciting: boolean, t: number): void {
    this.packets.add(packetNumber, packetNumber + 1);
    // Keep the set small: ranges far below what matters are never needed again.
    if (this.packets.size > MAX_ACK_RANGES * 2) this.packets.forgetBelow(packetNumber - 100_000);
    const inOrder = packetNumber === this.largestReceived + 1;
    this.largestReceived = Math.max(this.largestReceived, packetNumber);
    if (ackEliciting) {
      this.ackElicitingUnacked++;
      if (!inOrder || this.ackElicitingUnacked >= 2) this.ackNow = true;
      else this.ackDeadline ??= t + this.maxAckDelayMs;
    }
  }

  /** A STREAM frame: held for reassembly, or refused (past the window, or a FIN that moved). */
  accept(offset: number, data: Buffer, fin: boolean): StreamRefusal | undefined {
    const end = offset + data.length;
    if (end > this.advertisedMaxData) {
      return { error: new StreamError('protocol', `peer sent up to ${end}, beyond the window ${this.advertisedMaxData}`), code: ResetCode.FLOW_CONTROL };
    }
    if (fin) {
      if (this.finOffset !== undefined && this.finOffset !== end) {
        return { error: new StreamError('protocol', 'peer moved its end of stream'), code: ResetCode.PROTOCOL };
      }
      this.finOffset = end;
    }
    if (data.length > 0) {
      for (const [start, stop] of this.ranges.missing(offset, end)) {
        this.pieces.set(start, data.subarray(start - offset, stop - offset));
      }
      this.ranges.add(offset, end);
      this.stats.bytesReceived += data.length;
    }
    return undefined;
  }

  /** Hands what is in order to `push` (Readable's); notes when the application's buffer is full. */
  deliverInOrder(push: (piece: Buffer) => boolean): void {
    for (;;) {
      const piece = this.pieces.get(this.deliveredOffset);
      if (!piece) break;
      this.pieces.delete(this.deliveredOffset);
      this.deliveredOffset += piece.length;
      if (!push(piece)) this.readerBlocked = true;
    }
  }

  /** Forgets the ranges of what has been delivered. */
  forgetDelivered(): void {
    this.ranges.forgetBelow(this.deliveredOffset);
  }

  /** Everything up to the peer's FIN has been delivered. */
  get complete(): boolean {
    return this.finOffset !== undefined && this.deliveredOffset >= this.finOffset;
  }

  /**
   * Moves the window forward by a quarter of it or more, unless the application's buffer
   * is full (the standard Readable contract, so it cannot deadlock); true if it moved.
   */
  openWindow(): boolean {
    if (this.readerBlocked) return false;
    const limit = this.deliveredOffset + this.window;
    if (limit - this.advertisedMaxData < this.window / 4) return false;
    this.advertisedMaxData = limit;
    this.maxDataPending = true;
    return true;
  }

  /** A delayed ACK whose time has come is due now. */
  checkAckDeadline(t: number): void {
    if (this.ackDeadline !== undefined && t >= this.ackDeadline) this.ackNow = true;
  }

  /** Something arrived that was not acknowledged yet. */
  get owesAck(): boolean {
    return this.ackElicitingUnacked > 0;
  }

  /** Puts an ACK of what arrived into `writer` if anything did and it fits. */
  writeAck(writer: SegmentWriter): void {
    if (this.packets.size === 0 || writer.room < SegmentWriter.ackLength(1)) return;
    writer.ack(this.packets.descending(Math.min(MAX_ACK_RANGES, Math.floor((writer.room - 2) / 12))));
    this.ackNow = false;
    this.ackDeadline = undefined;
    this.ackElicitingUnacked = 0;
  }

  /** The last ACK, on the way out. */
  writeFinalAck(writer: SegmentWriter): void {
    writer.ack(this.packets.descending(MAX_ACK_RANGES));
    this.ackElicitingUnacked = 0;
  }
}
