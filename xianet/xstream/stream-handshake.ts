/**
 * The STREAM handshake, one HANDSHAKE frame each way: the client's init (role 0) and
 * the server's accept (role 1), each carrying how far the other may send (its initial
 * MAX_DATA). The client sends no data until it hears the accept; the server is
 * established from the init on. Either frame is sent again when the packet carrying it
 * is lost, and the client's init again on every probe until it is accepted; a server
 * that hears the init again (its accept was lost) accepts again.
 *
 * A server's connection is confirmed when the client first acknowledges one of its
 * packets: until then its source may be forged (see half-open-connections.ts).
 */
import type { SegmentWriter } from './stream-segment.js';

/** Bytes a HANDSHAKE frame takes in a packet. */
const HANDSHAKE_FRAME_LENGTH = 7;

/** What a HANDSHAKE frame from the peer means to this end. */
export interface HandshakeHeard {
  /** The frame is for this end (init to a server, accept to a client): take its MAX_DATA. */
  valid: boolean;
  /** This client has just been accepted. */
  establishedNow: boolean;
}

export class StreamHandshake {
  established: boolean;
  /** A server's client has acknowledged a packet of ours: it hears us where it says it is. */
  confirmed: boolean;
  /** The role byte of a HANDSHAKE frame waiting to be sent (0 init, 1 accept). */
  private pending: 0 | 1 | undefined;

  constructor(readonly role: 'client' | 'server') {
    this.established = role === 'server';
    this.confirmed = role === 'client';
    this.pending = role === 'client' ? 0 : 1;
  }

  /** A HANDSHAKE frame still has to go out. */
  get outstanding(): boolean {
    return this.pending !== undefined;
  }

  heard(role: 0 | 1): HandshakeHeard {
    if (role === 1 && this.role === 'client') {
      const establishedNow = !this.established;
      this.established = true;
      return { valid: true, establishedNow };
    }
    if (role === 0 && this.role === 'server') {
      // (Again, if the client did not hear our accept.)
      this.pending = 1;
      return { valid: true, establishedNow: false };
    }
    return { valid: false, establishedNow: false };
  }

  /** Puts the pending frame into `writer` if it fits; true if it did. */
  write(writer: SegmentWriter, maxData: number): boolean {
    if (this.pending === undefined || writer.room < HANDSHAKE_FRAME_LENGTH) return false;
    writer.handshake(this.pending, maxData);
    this.pending = undefined;
    return true;
  }

  /** The peer acknowledged something we sent; true the first time it confirms a server's client. */
  acknowledged(): boolean {
    if (this.confirmed) return false;
    this.confirmed = true;
    return true;
  }

  /** The packet that carried our HANDSHAKE frame was lost. */
  lost(): void {
    if (!this.established && this.role === 'client') this.pending = 0;
    if (this.role === 'server') this.pending ??= 1;
  }

  /** A probe is going out: a client not yet accepted says its init again. */
  probe(): void {
    if (!this.established && this.role === 'client') this.pending = 0;
  }
}
