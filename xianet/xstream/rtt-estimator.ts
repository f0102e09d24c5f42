/** Round-trip time estimation as in RFC 9002 §5 (smoothed RTT, variation, minimum). */
export class RttEstimator {
  smoothed: number;
  variation: number;
  min = Infinity;
  latest = 0;
  private sampled = false;

  constructor(initialMs = 100) {
    this.smoothed = initialMs;
    this.variation = initialMs / 2;
  }

  get hasSample(): boolean {
    return this.sampled;
  }

  sample(rttMs: number, ackDelayMs = 0): void {
    this.latest = rttMs;
    this.min = Math.min(this.min, rttMs);
    if (!this.sampled) {
      this.sampled = true;
      this.smoothed = rttMs;
      this.variation = rttMs / 2;
      return;
    }
    const adjusted = rttMs - ackDelayMs >= this.min ? rttMs - ackDelayMs : rttMs;
    this.variation = 0.75 * this.variation + 0.25 * Math.abs(this.smoothed - adjusted);
    this.smoothed = 0.875 * this.smoothed + 0.125 * adjusted;
  }

  /** Probe timeout before backoff: srtt + max(4·rttvar, 1 ms) + the peer's ack delay. */
  pto(maxAckDelayMs: number): number {
    return this.smoothed + Math.max(4 * this.variation, 1) + maxAckDelayMs;
  }

  /** How long after a later packet's ack an unacked packet counts as lost: 9/8 of the larger RTT. */
  lossDelay(): number {
    return Math.max((9 / 8) * Math.max(this.smoothed, this.latest), 1);
  }
}
