/**
 * The retransmission timeout of CHUNK requests, as RFC 6298 computes TCP's:
 *
 *   first sample R:  SRTT = R, RTTVAR = R/2
 *   later samples:   RTTVAR = 3/4 RTTVAR + 1/4 |SRTT - R|,  SRTT = 7/8 SRTT + 1/8 R
 *   RTO = SRTT + max(G, 4 RTTVAR, min), at most max; 1 s before any sample (2.1).
 *   (RFC 6298 puts `min` under the whole RTO and asks 1 s; like Linux's tcp_rto_min
 *   it is a floor under the variation term here: on a 200 ms path whose variation is
 *   small, an RTO of SRTT + 8 ms fires on every scheduling hiccup of a loaded host.)
 *   Each expiry doubles it (5.5, "back off the timer") until a new sample arrives.
 *
 * Karn's rule (3) says not to sample a retransmitted segment, whose ACK may answer
 * either copy. A CHUNK request is never retransmitted under its own id: the missing
 * ranges are asked for again in a new request with a new id, and DATA echoes the id
 * it answers, so every sample is unambiguous (as TCP timestamps make them, which
 * RFC 6298 allows to be sampled) and retransmissions are sampled too. The fetcher
 * only counts a request's completion on bytes that came back under that request's id.
 */
export interface RtoOptions {
  /** Least margin over SRTT (Linux: 200 ms; default 200 ms: a receiver here finds most losses by RACK first). */
  minMs?: number;
  /** Upper bound (RFC 6298 allows >= 60 s; default 2 s: a give-up comes from a deadline, not from here). */
  maxMs?: number;
  /** Before the first sample (default 1 s, RFC 6298 2.1). */
  initialMs?: number;
  /** Clock granularity G (default 1 ms: Node timers). */
  granularityMs?: number;
}

export class RtoEstimator {
  srtt: number | undefined;
  rttvar = 0;
  /** Smallest sample seen. */
  minRtt = Infinity;
  /** How many expiries in a row have doubled the timeout. */
  backoff = 0;
  samples = 0;
  private readonly min: number;
  private readonly max: number;
  private readonly initial: number;
  private readonly granularity: number;

  constructor(options: RtoOptions = {}) {
    this.min = options.minMs ?? 200;
    this.max = options.maxMs ?? 2000;
    this.initial = options.initialMs ?? 1000;
    this.granularity = options.granularityMs ?? 1;
  }

  sample(rttMs: number): void {
    const r = Math.max(0, rttMs);
    this.samples++;
    this.minRtt = Math.min(this.minRtt, r);
    if (this.srtt === undefined) {
      this.srtt = r;
      this.rttvar = r / 2;
    } else {
      this.rttvar = 0.75 * this.rttvar + 0.25 * Math.abs(this.srtt - r);
      this.srtt = 0.875 * this.srtt + 0.125 * r;
    }
    // A fresh measurement ends the back-off (RFC 6298 5.7 keeps it until then).
    this.backoff = 0;
  }

  /** The timeout now, back-off included. */
  get rto(): number {
    const base = this.srtt === undefined ? this.initial : this.srtt + Math.max(this.granularity, 4 * this.rttvar, this.min);
    return Math.min(this.max, base * 2 ** this.backoff);
  }

  /** The timer expired: double (RFC 6298 5.5), up to the maximum. */
  expired(): void {
    if (this.rto < this.max) this.backoff++;
  }
}
