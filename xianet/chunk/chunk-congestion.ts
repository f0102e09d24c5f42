/**
 * Congestion control of the CHUNK fetcher: BBR, version 1's model and state machine
 * (Cardwell, Cheng, Gunn, Hassas Yeganeh, Jacobson, "BBR: Congestion-Based Congestion
 * Control", ACM Queue 14(5), 2016; draft-cardwell-iccrg-bbr-congestion-control-00),
 * run by the receiver over its requests instead of by a sender over its segments.
 *
 * Why BBR and not a loss-based AIMD (NewReno, CUBIC): on the links this must cross,
 * loss is not a congestion signal. At 5 % loss on each of two links a request or
 * one of its datagrams is lost ~10 % of the time; an AIMD window then settles where
 * Mathis et al.'s formula puts it, ~1.22/sqrt(p) ≈ 4 datagrams per round trip —
 * 30 KB/s at 200 ms — three orders of magnitude below the path. BBR models the path
 * instead: the bottleneck bandwidth (the largest delivery rate seen over the last 10
 * rounds) and the round-trip propagation time (the smallest RTT of the last 10 s);
 * it paces requests at a gain times that bandwidth and keeps twice the
 * bandwidth-delay product in flight, so random loss costs only its own
 * retransmissions, a deep queue is drained, and the window reaches the BDP at any
 * delay within a few round trips (startup doubles the rate every round).
 *
 * States, as in BBR v1: STARTUP (gain 2/ln 2 until the bandwidth stops growing by
 * 25 % for three rounds), DRAIN (the queue startup built), PROBE_BW (pacing gain
 * cycling 1.25, 0.75, then six rounds of 1: probe for more, drain what probing
 * queued), PROBE_RTT (every 10 s without a new minimum RTT, four requests' worth in
 * flight for 200 ms, so the minimum is measured without our own queue). After a
 * retransmission timeout the window drops to its minimum until a request comes back
 * (packet conservation), then returns to what it was.
 *
 * One departure from v1: the bottleneck here is as often a host's CPU as a link, and a
 * host shared with other work has more or less of it from one second to the next. v1
 * finds a larger bandwidth only by 25 % per eight rounds (1.6 s a step at 200 ms, ~20 s
 * to grow tenfold); here, a probing phase that finds 25 % more than the bandwidth
 * PROBE_BW began with goes back to STARTUP, which doubles per round until it stops
 * finding more (BBR v2's exponential probing has the same purpose).
 *
 * Units: bytes and milliseconds; rates in bytes per millisecond.
 */

/** One request's completion, measured as BBR measures an ACK (see the fetcher's rate sampling). */
export interface DeliverySample {
  now: number;
  /** Bytes delivered per ms over the sample's interval. */
  deliveryRate: number;
  /** This request's round trip (sent to completed). */
  rtt: number;
  /** Bytes delivered in total when the request was sent, and now. */
  priorDelivered: number;
  delivered: number;
  /** Bytes this completion newly delivered. */
  newlyDelivered: number;
  /** The request went out when the fetcher had nothing more to ask for. */
  appLimited: boolean;
  /** Bytes still in flight. */
  inflight: number;
}

export interface CongestionOptions {
  /** Never less in flight than this (BBR: 4 packets; here: 4 requests' worth). */
  minCwndBytes: number;
  /** In flight before the first measurement (TCP's initial window, in requests' worth). */
  initialCwndBytes: number;
  /** Never more in flight than this (memory: the fetcher holds a buffer for every chunk in flight). */
  maxCwndBytes: number;
}

export type BbrMode = 'startup' | 'drain' | 'probe-bw' | 'probe-rtt';

const HIGH_GAIN = 2 / Math.LN2;
const PROBE_BW_GAINS = [1.25, 0.75, 1, 1, 1, 1, 1, 1];
const BW_WINDOW_ROUNDS = 10;
const RTPROP_WINDOW_MS = 10_000;
const PROBE_RTT_MS = 200;

export class BbrController {
  mode: BbrMode = 'startup';
  /** Bottleneck bandwidth estimate, bytes per ms (0: none yet). */
  btlBw = 0;
  /** Round-trip propagation time estimate, ms. */
  rtProp = Infinity;
  round = 0;
  private rtPropStamp = 0;
  private nextRoundDelivered = 0;
  private roundStart = false;
  private readonly bwSamples: Array<{ round: number; bw: number }> = [];
  private fullBw = 0;
  private fullBwRounds = 0;
  private filledPipe = false;
  private pacingGain = HIGH_GAIN;
  private cwndGain = HIGH_GAIN;
  private cycleIndex = 0;
  private cycleStamp = 0;
  private probeRttDoneAt: number | undefined;
  private probeRttRoundDone = false;
  /** The bandwidth when PROBE_BW began: finding 25 % more sends us back to STARTUP. */
  private probeBase = 0;
  private cwndBytes: number;
  private priorCwnd = 0;
  private recovering = false;
  readonly counters = { samples: 0, rounds: 0, probeRtt: 0, rtos: 0, restarts: 0 };

  constructor(private readonly options: CongestionOptions) {
    this.cwndBytes = options.initialCwndBytes;
  }

  /** Bytes that may be in flight now. */
  get cwnd(): number {
    if (this.mode === 'probe-rtt' || this.recovering) return this.options.minCwndBytes;
    return this.cwndBytes;
  }

  /** Bytes per ms to pace requests at. Before any measurement: the initial window over 1 ms, times the startup gain. */
  get pacingRate(): number {
    if (this.btlBw === 0) return (HIGH_GAIN * this.options.initialCwndBytes) / (Number.isFinite(this.rtProp) ? Math.max(this.rtProp, 1) : 1);
    return this.pacingGain * this.btlBw;
  }

  /** Bandwidth-delay product, bytes (the initial window until both are measured). */
  get bdp(): number {
    if (this.btlBw === 0 || !Number.isFinite(this.rtProp)) return this.options.initialCwndBytes;
    return this.btlBw * this.rtProp;
  }

  onSample(sample: DeliverySample): void {
    this.counters.samples++;
    this.updateRound(sample);
    this.updateBtlBw(sample);
    this.checkCycle(sample);
    this.checkFullPipe(sample);
    this.checkDrain(sample);
    this.updateRtProp(sample);
    this.updateCwnd(sample);
    if (this.recovering) {
      // A request came back after the timeout: the path works again.
      this.recovering = false;
      this.cwndBytes = Math.max(this.cwndBytes, this.priorCwnd);
    }
  }

  /** A retransmission timeout: packet conservation until something comes back. */
  onRto(): void {
    this.counters.rtos++;
    if (!this.recovering) this.priorCwnd = this.cwndBytes;
    this.recovering = true;
  }

  private updateRound(s: DeliverySample): void {
    this.roundStart = false;
    if (s.priorDelivered >= this.nextRoundDelivered) {
      this.nextRoundDelivered = s.delivered;
      this.round++;
      this.counters.rounds++;
      this.roundStart = true;
    }
  }

  private updateBtlBw(s: DeliverySample): void {
    if (!(s.deliveryRate > 0) || !Number.isFinite(s.deliveryRate)) return;
    // App-limited samples tell of the application, not the path, unless they beat the estimate.
    if (s.appLimited && s.deliveryRate < this.btlBw) return;
    const last = this.bwSamples[this.bwSamples.length - 1];
    if (last && last.round === this.round) last.bw = Math.max(last.bw, s.deliveryRate);
    else this.bwSamples.push({ round: this.round, bw: s.deliveryRate });
    while (this.bwSamples.length > 0 && this.bwSamples[0]!.round <= this.round - BW_WINDOW_ROUNDS) this.bwSamples.shift();
    let best = 0;
    for (const entry of this.bwSamples) best = Math.max(best, entry.bw);
    this.btlBw = best;
  }

  private checkFullPipe(s: DeliverySample): void {
    if (this.filledPipe || !this.roundStart || s.appLimited) return;
    if (this.btlBw >= this.fullBw * 1.25) {
      this.fullBw = this.btlBw;
      this.fullBwRounds = 0;
      return;
    }
    if (++this.fullBwRounds >= 3) {
      this.filledPipe = true;
      if (this.mode === 'startup') {
        this.mode = 'drain';
        this.pacingGain = 1 / HIGH_GAIN;
        this.cwndGain = HIGH_GAIN;
      }
    }
  }

  private checkDrain(s: DeliverySample): void {
    if (this.mode === 'drain' && s.inflight <= this.bdp) this.enterProbeBw(s.now);
  }

  private enterProbeBw(now: number): void {
    this.mode = 'probe-bw';
    this.probeBase = this.btlBw;
    this.cwndGain = 2;
    // BBR starts at a random phase other than the 0.75 one; a fixed one keeps runs repeatable.
    this.cycleIndex = 2;
    this.pacingGain = PROBE_BW_GAINS[this.cycleIndex]!;
    this.cycleStamp = now;
  }

  private checkCycle(s: DeliverySample): void {
    if (this.mode !== 'probe-bw') return;
    if (this.roundStart && !s.appLimited && this.btlBw >= 1.25 * this.probeBase) {
      // More capacity than when we settled: find how much at startup's pace, not 25 % per cycle.
      this.counters.restarts++;
      this.mode = 'startup';
      this.filledPipe = false;
      this.fullBw = this.btlBw;
      this.fullBwRounds = 0;
      this.pacingGain = HIGH_GAIN;
      this.cwndGain = HIGH_GAIN;
      return;
    }
    const elapsed = s.now - this.cycleStamp > (Number.isFinite(this.rtProp) ? this.rtProp : 0);
    const gain = this.pacingGain;
    // 1.25 probes for at least one min-RTT; 0.75 ends as soon as the queue it drains is gone.
    const advance = gain === 1 ? elapsed : gain > 1 ? elapsed : elapsed || s.inflight <= this.bdp;
    if (!advance) return;
    this.cycleIndex = (this.cycleIndex + 1) % PROBE_BW_GAINS.length;
    this.pacingGain = PROBE_BW_GAINS[this.cycleIndex]!;
    this.cycleStamp = s.now;
  }

  private updateRtProp(s: DeliverySample): void {
    const expired = s.now - this.rtPropStamp > RTPROP_WINDOW_MS;
    if (s.rtt >= 0 && (s.rtt <= this.rtProp || expired)) {
      this.rtProp = s.rtt;
      this.rtPropStamp = s.now;
    }
    if (this.mode !== 'probe-rtt' && expired && this.counters.samples > 1) {
      this.mode = 'probe-rtt';
      this.counters.probeRtt++;
      this.pacingGain = 1;
      this.probeRttDoneAt = undefined;
      this.probeRttRoundDone = false;
    }
    if (this.mode === 'probe-rtt') {
      if (this.probeRttDoneAt === undefined && s.inflight <= this.options.minCwndBytes) {
        this.probeRttDoneAt = s.now + Math.max(PROBE_RTT_MS, Number.isFinite(this.rtProp) ? this.rtProp : 0);
        this.nextRoundDelivered = s.delivered;
      } else if (this.probeRttDoneAt !== undefined) {
        if (this.roundStart) this.probeRttRoundDone = true;
        if (this.probeRttRoundDone && s.now >= this.probeRttDoneAt) {
          this.rtPropStamp = s.now;
          if (this.filledPipe) this.enterProbeBw(s.now);
          else {
            this.mode = 'startup';
            this.pacingGain = HIGH_GAIN;
            this.cwndGain = HIGH_GAIN;
          }
        }
      }
    }
  }

  private updateCwnd(s: DeliverySample): void {
    const target = this.cwndGain * this.bdp;
    const { minCwndBytes, maxCwndBytes, initialCwndBytes } = this.options;
    if (this.filledPipe) this.cwndBytes = Math.min(this.cwndBytes + s.newlyDelivered, target);
    else if (this.cwndBytes < target || s.delivered < initialCwndBytes) this.cwndBytes += s.newlyDelivered;
    this.cwndBytes = Math.min(maxCwndBytes, Math.max(minCwndBytes, this.cwndBytes));
  }
}
