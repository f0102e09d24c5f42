/**
 * How a STREAM connection ends. Gracefully, when both FINs are through: both ends
 * have all the data and the other's FIN acknowledged, and the last ACK owed is given
 * on the way out. Otherwise by a RESET (sent at most once, and never in answer to the
 * peer's own), which the other end reports as the error its code names.
 */
import { XmigError } from '../../shared/errors.js';

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

/** What a connection being destroyed still sends. */
export type Farewell = 'reset' | 'final-ack' | 'none';

export class StreamClose {
  /** A RESET went either way: no other is sent. */
  private resetDone = false;

  /** The peer reset the connection with `code`: the error to fail with. */
  peerReset(code: number): StreamError {
    this.resetDone = true;
    return new StreamError(code === ResetCode.UNKNOWN_CONNECTION ? 'refused' : 'reset', `connection reset by peer (code ${code})`);
  }

  /** This end sent a RESET (destroying must not send a second one). */
  resetSent(): void {
    this.resetDone = true;
  }

  /** Leave without a word: no RESET (a half-open connection dropped: its source may be forged). */
  quiet(): void {
    this.resetDone = true;
  }

  /**
   * On destroy: `graceful` when our FIN is acknowledged and all of the peer's data up to
   * its FIN delivered; `owesAck` when the peer sent something we have not acknowledged
   * (its FIN may be waiting for that).
   */
  farewell(graceful: boolean, owesAck: boolean): Farewell {
    if (!graceful) return this.resetDone ? 'none' : 'reset';
    return owesAck ? 'final-ack' : 'none';
  }
}

/** The error of a connection that heard nothing from its peer for `ms`. */
export function outageError(ms: number): StreamError {
  return new StreamError('timeout', `no packet from the peer for ${ms} ms`);
}
