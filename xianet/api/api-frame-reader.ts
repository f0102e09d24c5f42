/**
 * Receiving API frames from one socket within bounds: a frame length cap (the decoder's),
 * a byte budget for frames not yet whole per connection and over all connections, and
 * an idle and a completion deadline for a frame being received. Half-sent frames are
 * what a client can make the node hold without the node doing anything; these bounds
 * are what keep 16 half-sent 16 MiB frames from costing 16 x 16 MiB for ever.
 *
 * Over the global budget, the connection whose partial frame made progress least
 * recently is shed first: a client sitting on a half-sent frame goes before one that is
 * sending at full speed.
 */
import type { RefusalReason } from '../../shared/limits.js';
import type { DecodeResult, FrameDecoder } from './api-frames.js';
import type { ApiLimits } from './api-limits.js';

export interface Refusal {
  resource: string;
  reason: RefusalReason;
  message: string;
}

/** One connection's share of the partial-frame budget. */
export interface BudgetShare {
  readonly partialBytes: number;
  /** When its partial frame last grew (monotonic ms). */
  readonly lastProgress: number;
  /** Called when the budget sheds this connection. */
  shed(refusal: Refusal): void;
}

export class PartialFrameBudget {
  private total = 0;
  private readonly shares = new Map<BudgetShare, number>();

  constructor(readonly limit: number) {}

  get bytes(): number {
    return this.total;
  }

  /** Records `share`'s bytes; sheds the stalest shares while over the limit. False if `share` itself was shed. */
  update(share: BudgetShare, bytes: number): boolean {
    this.total += bytes - (this.shares.get(share) ?? 0);
    if (bytes > 0) this.shares.set(share, bytes);
    else this.shares.delete(share);
    let self = true;
    while (this.total > this.limit && this.shares.size > 0) {
      let stalest: BudgetShare | undefined;
      for (const candidate of this.shares.keys()) {
        if (!stalest || candidate.lastProgress < stalest.lastProgress) stalest = candidate;
      }
      this.release(stalest!);
      if (stalest === share) self = false;
      stalest!.shed({ resource: 'api-frame', reason: 'budget', message: `frames being received hold more than ${this.limit} bytes over all API connections` });
    }
    return self;
  }

  release(share: BudgetShare): void {
    this.total -= this.shares.get(share) ?? 0;
    this.shares.delete(share);
  }
}

export class FrameReader implements BudgetShare {
  lastProgress: number;
  /** When the frame now being received began (undefined between frames). */
  private startedAt: number | undefined;
  private refused = false;

  constructor(
    private readonly decoder: FrameDecoder,
    private readonly budget: PartialFrameBudget,
    private readonly limits: Pick<ApiLimits, 'frameIdleMs' | 'frameCompletionMs' | 'partialBytesPerConnection'>,
    private readonly now: () => number,
    private readonly onRefused: (refusal: Refusal) => void,
  ) {
    this.lastProgress = now();
  }

  get partialBytes(): number {
    return this.decoder.buffered;
  }

  /** Decodes `chunk`; undefined when the connection was refused (and `onRefused` called). */
  push(chunk: Buffer, limit?: number): DecodeResult | undefined {
    if (this.refused) return undefined;
    const result = this.decoder.push(chunk, limit);
    if (result.fatal) {
      this.refuse({ resource: 'api-frame', reason: 'cap', message: result.fatal });
      return undefined;
    }
    const partial = this.decoder.buffered;
    const t = this.now();
    if (chunk.length > 0) this.lastProgress = t;
    if (partial === 0) this.startedAt = undefined;
    else if (this.startedAt === undefined || result.frames.length > 0 || result.malformed.length > 0) this.startedAt = t;
    if (partial > this.limits.partialBytesPerConnection) {
      this.refuse({ resource: 'api-frame', reason: 'budget', message: `a frame being received holds ${partial} bytes, more than ${this.limits.partialBytesPerConnection}` });
      return undefined;
    }
    if (!this.budget.update(this, partial)) return undefined;
    return result;
  }

  /**
   * The deadlines: a partial frame idle too long, or taking too long altogether, is
   * refused. They run while the node has paused reading too: it pauses only for a
   * client that does not read its replies or has too many requests running.
   */
  check(t: number): void {
    if (this.refused || this.startedAt === undefined) return;
    if (t - this.lastProgress >= this.limits.frameIdleMs) {
      this.refuse({ resource: 'api-frame', reason: 'timeout', message: `a frame being received made no progress for ${this.limits.frameIdleMs} ms` });
    } else if (t - this.startedAt >= this.limits.frameCompletionMs) {
      this.refuse({ resource: 'api-frame', reason: 'timeout', message: `a frame being received was not complete after ${this.limits.frameCompletionMs} ms` });
    }
  }

  /** The budget took this connection's share away (BudgetShare). */
  shed(refusal: Refusal): void {
    if (this.refused) return;
    this.refused = true;
    this.decoder.clear();
    this.onRefused(refusal);
  }

  /** The connection is going (or the socket became a STREAM pipe): give back its share. */
  release(): void {
    this.budget.release(this);
    this.startedAt = undefined;
  }

  private refuse(refusal: Refusal): void {
    this.budget.release(this);
    this.shed(refusal);
  }
}
