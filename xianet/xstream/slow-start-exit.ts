/**
 * When to leave slow start before a loss says so: HyStart's delay-increase test (Ha and
 * Rhee, "Taming the elephants", 2011; as RFC 9406, HyStart++, specifies it, without its
 * conservative phase: this end goes straight to congestion avoidance, as Linux's CUBIC
 * does).
 *
 * Slow start doubles the window every round trip until a packet is lost. Where the
 * bottleneck is a slow receiver behind a deep buffer — a TCG guest's node, whose socket
 * buffer holds seconds of its own processing — nothing is lost for a long time: the
 * window grows far past the path's capacity, the excess queues, and the round trip grows
 * with it (7 s seen on a starved host; every packet of every other connection to that
 * host waits behind it). The queue shows as a rising round trip long before any loss:
 * each round trip's smallest RTT sample is compared with the previous one's, and once it
 * has grown by an eighth of it (at least 4 ms, at most 16 ms: RFC 9406's clamp), the
 * window is at the path's capacity and slow start ends there.
 *
 * A round is the time from sending one packet until its acknowledgement: it ends when a
 * packet numbered at or above `roundEnd` (the next packet number when it began) is acked.
 */

/** RFC 9406 §4.2: samples per round before a round's minimum counts, and the threshold's clamp. */
export const HYSTART_MIN_SAMPLES = 8;
export const HYSTART_MIN_THRESHOLD_MS = 4;
export const HYSTART_MAX_THRESHOLD_MS = 16;

export class SlowStartExit {
  private roundEnd = -1;
  private lastRoundMin = Infinity;
  private currentRoundMin = Infinity;
  private samples = 0;
  /** Times slow start was left on a rising round trip (for the connection's stats). */
  exits = 0;

  /**
   * An RTT sample from an acknowledgement of packet `ackedPn`, `nextPn` the next packet
   * number to be sent. True when slow start should end now.
   */
  sample(rttMs: number, ackedPn: number, nextPn: number): boolean {
    if (ackedPn >= this.roundEnd) {
      // A new round: the last one's minimum is the baseline.
      this.lastRoundMin = this.currentRoundMin;
      this.currentRoundMin = Infinity;
      this.samples = 0;
      this.roundEnd = nextPn;
    }
    this.currentRoundMin = Math.min(this.currentRoundMin, rttMs);
    this.samples++;
    if (this.samples < HYSTART_MIN_SAMPLES || !Number.isFinite(this.lastRoundMin)) return false;
    const threshold = Math.min(Math.max(this.lastRoundMin / 8, HYSTART_MIN_THRESHOLD_MS), HYSTART_MAX_THRESHOLD_MS);
    if (this.currentRoundMin < this.lastRoundMin + threshold) return false;
    this.exits++;
    return true;
  }

  /** The path changed (the peer moved): its round trips say nothing of the new one. */
  reset(): void {
    this.roundEnd = -1;
    this.lastRoundMin = Infinity;
    this.currentRoundMin = Infinity;
    this.samples = 0;
  }
}
