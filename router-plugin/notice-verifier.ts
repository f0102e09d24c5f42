/**
 * Which HID-move notices a router believes. Cheap checks come first (does it parse,
 * is it fresh, is its sequence newer than any accepted for the HID), so junk costs
 * next to nothing; the signature is verified last, within a per-link budget, so a
 * flood of forged notices on one link cannot starve genuine ones on another.
 * A replayed, reordered or stale notice loses to a newer one, as MAC-mobility
 * sequence numbers do in EVPN.
 */
import { errorMessage, SignatureError } from '../shared/errors.js';
import { openMoveNotice, peekMoveNotice, type MoveNotice } from '../shared/move-notice.js';

export type RejectReason =
  | 'malformed'
  | 'stale'
  | 'old-sequence'
  | 'duplicate'
  | 'bad-signature'
  | 'key-mismatch'
  | 'rate-limited';

export type Verdict = { accepted: true; notice: MoveNotice; repeat: boolean } | { accepted: false; reason: RejectReason; detail: string; notice?: MoveNotice };

export interface VerifierOptions {
  /** How far a notice's timestamp may be from our clock (default 30 s). */
  freshnessMs?: number;
  /** Signature verifications per second per link, and the burst (default 200 / 50). */
  verificationsPerSecond?: number;
  burst?: number;
  now?: () => number;
}

interface Accepted {
  seq: number;
  sealed: Buffer;
}

export class NoticeVerifier {
  private readonly accepted = new Map<string, Accepted>();
  private readonly buckets = new Map<number, { tokens: number; at: number }>();
  private readonly freshnessMs: number;
  private readonly rate: number;
  private readonly burst: number;
  private readonly now: () => number;

  constructor(options: VerifierOptions = {}) {
    this.freshnessMs = options.freshnessMs ?? 30_000;
    this.rate = options.verificationsPerSecond ?? 200;
    this.burst = options.burst ?? 50;
    this.now = options.now ?? Date.now;
  }

  /** The highest sequence accepted for a HID (for tests and metrics). */
  lastSeq(hidKey: string): number | undefined {
    return this.accepted.get(hidKey)?.seq;
  }

  private spend(link: number): boolean {
    const t = this.now();
    const bucket = this.buckets.get(link) ?? { tokens: this.burst, at: t };
    bucket.tokens = Math.min(this.burst, bucket.tokens + ((t - bucket.at) / 1000) * this.rate);
    bucket.at = t;
    this.buckets.set(link, bucket);
    if (bucket.tokens < 1) return false;
    bucket.tokens -= 1;
    return true;
  }

  /** Judges one sealed notice that arrived on `link` (the router's interface number). */
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
    const previous = this.accepted.get(key);
    if (previous && claimed.seq < previous.seq) {
      return { accepted: false, reason: 'old-sequence', detail: `seq ${claimed.seq} < accepted ${previous.seq}`, notice: claimed };
    }
    if (previous && claimed.seq === previous.seq) {
      // The very notice we accepted, sent again (its ack was lost): acknowledge, change nothing.
      if (previous.sealed.equals(sealed)) return { accepted: true, notice: claimed, repeat: true };
      return { accepted: false, reason: 'duplicate', detail: `another notice with seq ${claimed.seq}`, notice: claimed };
    }
    if (!this.spend(link)) return { accepted: false, reason: 'rate-limited', detail: `link ${link} over its verification budget`, notice: claimed };
    let notice: MoveNotice;
    try {
      notice = openMoveNotice(sealed).notice;
    } catch (error) {
      const reason = error instanceof SignatureError && error.reason === 'key-mismatch' ? 'key-mismatch' : 'bad-signature';
      return { accepted: false, reason, detail: errorMessage(error), notice: claimed };
    }
    this.accepted.set(key, { seq: notice.seq, sealed: Buffer.from(sealed) });
    return { accepted: true, notice, repeat: false };
  }
}
