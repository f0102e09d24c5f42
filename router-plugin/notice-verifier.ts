/**
 * Which HID-move notices a router believes. Cheap checks come first (does it parse,
 * is it fresh, is its sequence newer than any accepted for the HID, is the HID or the
 * link within its rate), so junk costs next to nothing; the signature is verified last,
 * within a per-link budget, so a flood of forged notices on one link cannot starve
 * genuine ones on another. A replayed, reordered or stale notice loses to a newer one,
 * as MAC-mobility sequence numbers do in EVPN.
 *
 * Judging and recording are two steps: `check` says whether a notice may be applied and
 * records nothing; the plugin writes the routes and only then `commit`s it. A notice
 * whose routes could not be written leaves no trace, so its retry is applied, not
 * mistaken for a repeat.
 *
 * The per-HID state is bounded (an LRU). Forgetting a HID whose notice is still fresh
 * would let a replay of an older notice of that HID through, so such an eviction raises
 * a floor: a HID the verifier does not know must then bring a notice signed after every
 * fresh notice it forgot.
 */
import { errorMessage, SignatureError } from '../shared/errors.js';
import { KeyedRateLimiter, LruMap, TokenBucket } from '../shared/limits.js';
import { openMoveNotice, peekMoveNotice, type MoveNotice } from '../shared/move-notice.js';

/** Why a notice was refused (a label of xmig_plugin_notices_rejected_total). */
export const REJECT_REASONS = ['malformed', 'stale', 'old-sequence', 'duplicate', 'bad-signature', 'key-mismatch', 'rate-limited', 'hid-rate', 'new-hid-rate'] as const;
export type RejectReason = (typeof REJECT_REASONS)[number];

export type Verdict =
  | { accepted: true; notice: MoveNotice; repeat: boolean }
  | { accepted: false; reason: RejectReason; detail: string; notice?: MoveNotice };

export interface VerifierOptions {
  /** How far a notice's timestamp may be from our clock (default 30 s). */
  freshnessMs?: number;
  /** Signature verifications per second per link, and the burst (default 200 / 50). */
  verificationsPerSecond?: number;
  burst?: number;
  /** HIDs this router has not seen, per second per link and the burst (default 20 / 50). */
  newHidsPerSecond?: number;
  newHidsBurst?: number;
  /** HIDs this router has not seen, per second over all links and the burst (default 100 / 200). */
  newHidsPerSecondTotal?: number;
  newHidsBurstTotal?: number;
  /** Notices per second per known HID, and the burst (default 5 / 20): a key churning sequence numbers. */
  perHidPerSecond?: number;
  perHidBurst?: number;
  /** Most HIDs whose notice state is kept (default 16,384). */
  maxHids?: number;
  now?: () => number;
}

/** What the router remembers of the last notice it applied for a HID. */
export interface Committed<R = unknown> {
  seq: number;
  timestamp: number;
  sealed: Buffer;
  /** What the plugin did for it (its role and route), so a repeat can be handled alike. */
  applied: R;
}

export class NoticeVerifier<R = unknown> {
  private readonly committed: LruMap<string, Committed<R>>;
  private readonly verifications: KeyedRateLimiter<number>;
  private readonly newHids: KeyedRateLimiter<number>;
  private readonly newHidsTotal: TokenBucket;
  private readonly perHid: KeyedRateLimiter<string>;
  private readonly freshnessMs: number;
  private readonly now: () => number;
  /** Notices of HIDs we do not know must be signed after this (see the file comment). */
  private replayFloor = 0;
  /** Told about every HID whose state is pushed out (the plugin removes its route). */
  onEvict: ((hidKey: string, committed: Committed<R>) => void) | undefined;
  readonly stats = { evicted: 0, evictedFresh: 0 };

  constructor(options: VerifierOptions = {}) {
    this.freshnessMs = options.freshnessMs ?? 30_000;
    this.now = options.now ?? Date.now;
    const clock = { now: this.now, monotonic: this.now };
    this.verifications = new KeyedRateLimiter(options.verificationsPerSecond ?? 200, options.burst ?? 50, 1024, clock);
    const newRate = options.newHidsPerSecond ?? 20;
    const newBurst = options.newHidsBurst ?? 50;
    this.newHids = new KeyedRateLimiter(newRate, newBurst, 1024, clock);
    this.newHidsTotal = new TokenBucket(options.newHidsPerSecondTotal ?? 100, options.newHidsBurstTotal ?? 200, clock);
    this.perHid = new KeyedRateLimiter(options.perHidPerSecond ?? 5, options.perHidBurst ?? 20, options.maxHids ?? 16_384, clock);
    this.committed = new LruMap({
      maxEntries: options.maxHids ?? 16_384,
      onEvict: (key, entry) => {
        this.stats.evicted++;
        if (Math.abs(this.now() - entry.timestamp) <= this.freshnessMs) {
          this.stats.evictedFresh++;
          this.replayFloor = Math.max(this.replayFloor, entry.timestamp);
        }
        this.onEvict?.(key, entry);
      },
    });
  }

  /** The highest sequence committed for a HID (for tests and metrics). */
  lastSeq(hidKey: string): number | undefined {
    return this.committed.peek(hidKey)?.seq;
  }

  /** What was committed for a HID, if anything. */
  get(hidKey: string): Committed<R> | undefined {
    return this.committed.peek(hidKey);
  }

  /** HIDs whose state is held. */
  get size(): number {
    return this.committed.size;
  }

  /**
   * Judges one sealed notice that arrived on `link` (the router's interface number).
   * Records nothing.
   */
  check(sealed: Buffer, link: number): Verdict {
    let claimed: MoveNotice;
    try {
      claimed = peekMoveNotice(sealed);
    } catch (error) {
      return { accepted: false, reason: 'malformed', detail: errorMessage(error) };
    }
    if (Math.abs(this.now() - claimed.timestamp) > this.freshnessMs) {
      return { accepted: false, reason: 'stale', detail: `timestamp ${claimed.timestamp} is more than ${this.freshnessMs} ms away`, notice: claimed };
    }
    const key = claimed.hid.key;
    const previous = this.committed.peek(key);
    if (previous && claimed.seq < previous.seq) {
      return { accepted: false, reason: 'old-sequence', detail: `seq ${claimed.seq} < accepted ${previous.seq}`, notice: claimed };
    }
    if (previous && claimed.seq === previous.seq) {
      // The very notice we applied, sent again (its ack was lost): acknowledge, change nothing
      // (within the HID's rate: each repeat costs a signed ack).
      if (previous.sealed.equals(sealed)) {
        if (!this.perHid.take(key)) return { accepted: false, reason: 'hid-rate', detail: `${claimed.hid} over its notice rate`, notice: claimed };
        return { accepted: true, notice: claimed, repeat: true };
      }
      return { accepted: false, reason: 'duplicate', detail: `another notice with seq ${claimed.seq}`, notice: claimed };
    }
    if (!previous && claimed.timestamp <= this.replayFloor) {
      return { accepted: false, reason: 'stale', detail: `signed before notices this router had to forget (${this.replayFloor})`, notice: claimed };
    }
    // A HID we know spends its own budget; a new one the link's, then the router's. (Refused
    // notices are retried by their senders, hop by hop: genuine ones get through the flood.)
    if (previous ? !this.perHid.take(key) : !(this.newHids.take(link) && this.newHidsTotal.take())) {
      return previous
        ? { accepted: false, reason: 'hid-rate', detail: `${claimed.hid} over its notice rate`, notice: claimed }
        : { accepted: false, reason: 'new-hid-rate', detail: `link ${link} over its rate of new HIDs`, notice: claimed };
    }
    if (!this.verifications.take(link)) return { accepted: false, reason: 'rate-limited', detail: `link ${link} over its verification budget`, notice: claimed };
    let notice: MoveNotice;
    try {
      notice = openMoveNotice(sealed).notice;
    } catch (error) {
      const reason = error instanceof SignatureError && error.reason === 'key-mismatch' ? 'key-mismatch' : 'bad-signature';
      return { accepted: false, reason, detail: errorMessage(error), notice: claimed };
    }
    return { accepted: true, notice, repeat: false };
  }

  /**
   * Records a notice whose routes are written. False if a newer one was committed
   * meanwhile (it stays).
   */
  commit(notice: MoveNotice, sealed: Buffer, applied: R): boolean {
    const key = notice.hid.key;
    const previous = this.committed.peek(key);
    if (previous && previous.seq >= notice.seq) return false;
    this.committed.set(key, { seq: notice.seq, timestamp: notice.timestamp, sealed: Buffer.from(sealed), applied });
    return true;
  }

  /** Marks a HID as used now (a repeat refreshes it in the LRU). */
  touch(hidKey: string): void {
    this.committed.get(hidKey);
  }
}
