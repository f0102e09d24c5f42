/**
 * How much of QEMU's stream the sender may hold announced but unacknowledged. Small
 * keeps QEMU honest — it sizes its last stop-and-copy by how fast we take its stream,
 * so bytes read far ahead of the receiver come out of the downtime — but a fixed 16 MiB
 * caps a path whose round takes 400 ms (OFFER there, fetch round trip, ACK back: 50 ms
 * on each of two links) at 40 MB/s, and far less once losses stretch a round.
 *
 * So the window follows the path, as BBR sizes its own: twice the fastest recent
 * acknowledgement rate times the shortest recent round (announce to ACK), never less
 * than `floorBytes` (16 MiB: what loopback and LAN runs were measured with) nor more
 * than `capBytes`. The shortest round, not the latest, so that rounds waiting in the
 * window's own queue do not grow the window that queued them.
 *
 * That is not enough once the window is full: with QEMU faster than the path, every
 * round waits behind the window before its own turn, the shortest round is the window
 * over the rate, and twice it doubles the window until the cap — 256 MiB that must be
 * fetched while the VM is stopped. On a loaded machine (the lab's, 6 MB/s) that was a
 * 28 s downtime where QEMU reported 139 ms. So beyond the floor the window holds no more
 * than the path drains in `DRAIN_MS`: a path whose rate times its shortest round is
 * more than that is at least half a second long, and one that long is not what the
 * mover carries a VM over.
 */
export interface SendWindowOptions {
  floorBytes: number;
  capBytes: number;
}

/** Rates and rounds are remembered this long. */
const MEMORY_MS = 5000;
/** A rate sample spans at least this long (acknowledgements come in bursts of rounds). */
const RATE_INTERVAL_MS = 100;
/** Beyond the floor, the window holds what the path drains in this long (it adds to the downtime). */
export const DRAIN_MS = 1000;

export class SendWindow {
  private readonly rates: Array<{ at: number; rate: number }> = [];
  private readonly rounds: Array<{ at: number; ms: number }> = [];
  private sampleStart = -1;
  private sampleBytes = 0;

  constructor(private readonly options: SendWindowOptions) {}

  /** A round offered at `offeredAt` (first offer; re-offers after a reconnection give no sample) was acknowledged now. */
  acked(bytes: number, offeredAt: number | undefined, now: number): void {
    if (offeredAt !== undefined) this.rounds.push({ at: now, ms: now - offeredAt });
    if (this.sampleStart < 0) {
      this.sampleStart = now;
      this.sampleBytes = 0;
      return;
    }
    this.sampleBytes += bytes;
    if (now - this.sampleStart >= RATE_INTERVAL_MS) {
      this.rates.push({ at: now, rate: this.sampleBytes / (now - this.sampleStart) });
      this.sampleStart = now;
      this.sampleBytes = 0;
    }
    while (this.rates.length > 0 && now - this.rates[0]!.at > MEMORY_MS) this.rates.shift();
    while (this.rounds.length > 0 && now - this.rounds[0]!.at > MEMORY_MS) this.rounds.shift();
  }

  /** Bytes that may be unacknowledged now. */
  get bytes(): number {
    let rate = 0;
    for (const r of this.rates) rate = Math.max(rate, r.rate);
    let round = Infinity;
    for (const r of this.rounds) round = Math.min(round, r.ms);
    const { floorBytes, capBytes } = this.options;
    if (rate === 0 || !Number.isFinite(round)) return floorBytes;
    return Math.min(capBytes, Math.max(floorBytes, Math.min(2 * rate * round, rate * DRAIN_MS)));
  }
}
