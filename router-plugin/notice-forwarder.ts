/**
 * Passing an applied notice on toward the VM's old gateway, hop by hop: each router
 * sends it (FORWARDED) to its next hop toward the old location and retries until that
 * router acknowledges it (a MOVE_ACK signed by the next hop), the notice goes stale, a
 * newer notice of the same HID supersedes it, or the plugin stops. One lost datagram no
 * longer leaves the old gateway pointing at the old host until the next move.
 *
 * Acks are screened before their signature is checked: only an ack for a forward that
 * is waiting, from the router it was sent to, costs a verification.
 */
import { Dag } from '../shared/dag.js';
import { errorMessage, isXmigError } from '../shared/errors.js';
import type { Refusals } from '../shared/limits.js';
import type { Logger } from '../shared/logger.js';
import { encodeMobility, MobilityType } from '../shared/mobility-message.js';
import { openMoveAck, peekMoveAck, type MoveAck, type MoveNotice } from '../shared/move-notice.js';
import { WellKnownSid, Xid } from '../shared/xid.js';
import type { DatagramSocket } from '../xianet/api/node-api.js';
import { AckWaiters, sendUntilAcked, type Backoff } from '../xianet/send-until-acked.js';
import type { RouteRewriter } from './route-rewriter.js';

export interface ForwarderOptions {
  /** Most forwards in flight at once (default 4096); more are refused and counted. */
  maxInFlight?: number;
  /** Hop retransmissions (default 30 ms doubling to 1 s). */
  backoff?: Backoff;
  /** A notice is not forwarded past this age (the receivers' freshness window, default 30 s). */
  freshnessMs?: number;
}

interface Running {
  seq: number;
  controller: AbortController;
  done: Promise<void>;
}

export class NoticeForwarder {
  private readonly acks = new AckWaiters<string, MoveAck>();
  private readonly running = new Map<string, Running>();
  private readonly stopping = new AbortController();
  private readonly maxInFlight: number;
  private readonly backoff: Backoff;
  private readonly freshnessMs: number;
  readonly stats = { forwarded: 0, acked: 0, retries: 0, gaveUp: 0 };

  constructor(
    private readonly socket: () => DatagramSocket | undefined,
    private readonly rewriter: RouteRewriter,
    private readonly refusals: Refusals,
    private readonly logger: Logger,
    options: ForwarderOptions = {},
  ) {
    this.maxInFlight = options.maxInFlight ?? 4096;
    this.backoff = options.backoff ?? { firstMs: 30, maxMs: 1000 };
    this.freshnessMs = options.freshnessMs ?? 30_000;
  }

  get inFlight(): number {
    return this.running.size;
  }

  /**
   * Forwards `sealed` toward the old location in the background, unless the same
   * notice is already on its way; a newer notice of the HID stops an older one's forward.
   */
  forward(notice: MoveNotice, sealed: Buffer): void {
    if (this.stopping.signal.aborted) return;
    const key = notice.hid.key;
    const current = this.running.get(key);
    if (current && current.seq >= notice.seq) return;
    current?.controller.abort(new Error('superseded'));
    if (!current && this.running.size >= this.maxInFlight) {
      this.refusals.refuse('forward', 'cap');
      return;
    }
    const controller = new AbortController();
    const entry: Running = { seq: notice.seq, controller, done: Promise.resolve() };
    entry.done = this.run(notice, sealed, controller.signal).finally(() => {
      if (this.running.get(key) === entry) this.running.delete(key);
    });
    this.running.set(key, entry);
  }

  private async run(notice: MoveNotice, sealed: Buffer, signal: AbortSignal): Promise<void> {
    const hid = notice.hid.toString();
    let toward;
    try {
      toward = await this.rewriter.towardOld(notice);
    } catch (error) {
      this.logger.warn('notice.cannot-forward', { hid, seq: notice.seq, reason: errorMessage(error) });
      return;
    }
    if (!toward) {
      this.logger.warn('notice.cannot-forward', { hid, seq: notice.seq, reason: 'no route toward the old location' });
      return;
    }
    let next: Xid;
    try {
      next = Xid.parse(toward.nextHop);
    } catch {
      this.logger.warn('notice.cannot-forward', { hid, seq: notice.seq, reason: `next hop "${toward.nextHop}" is not an XID` });
      return;
    }
    const dst = Dag.chain(next, WellKnownSid.MOBILITY);
    const data = encodeMobility(MobilityType.FORWARDED, sealed);
    const ackKey = `${hid}/${notice.seq}/${next.key}`;
    const deadlineMs = Math.max(0, notice.timestamp + this.freshnessMs - Date.now());
    try {
      const { attempts, ms } = await sendUntilAcked(
        async () => {
          const socket = this.socket();
          if (!socket) throw new Error('plugin socket closed');
          await socket.send(dst, data);
        },
        (s) => this.acks.wait(ackKey, s),
        {
          signal: AbortSignal.any([signal, this.stopping.signal]),
          deadlineMs,
          backoff: this.backoff,
          what: `forwarded notice for ${hid}`,
          onRetry: () => this.stats.retries++,
        },
      );
      this.stats.forwarded++;
      this.stats.acked++;
      this.logger.debug('notice.forwarded', { hid, seq: notice.seq, to: next.toString(), attempts, ms: Math.round(ms) });
    } catch (error) {
      if (signal.aborted || this.stopping.signal.aborted) return;
      this.stats.gaveUp++;
      if (isXmigError(error, 'ERR_TIMEOUT')) this.refusals.refuse('forward', 'timeout');
      this.logger.warn('notice.forward-failed', { hid, seq: notice.seq, to: next.toString(), reason: errorMessage(error) });
    }
  }

  /** A MOVE_ACK from a next hop; true if it acknowledged a forward that was waiting. */
  onAck(sealed: Buffer): boolean {
    let claimed: MoveAck;
    try {
      claimed = peekMoveAck(sealed);
    } catch {
      this.refusals.refuse('hop-ack', 'malformed');
      return false;
    }
    const key = `${claimed.hid.toString()}/${claimed.seq}/${claimed.routerHid.key}`;
    if (!this.acks.has(key)) return false; // not ours (late, stray or forged): no verification spent
    let ack: MoveAck;
    try {
      ack = openMoveAck(sealed);
    } catch {
      this.refusals.refuse('hop-ack', 'forbidden');
      return false;
    }
    return this.acks.settle(key, ack);
  }

  async stop(): Promise<void> {
    this.stopping.abort(new Error('plugin stopped'));
    await Promise.all([...this.running.values()].map((r) => r.done));
  }
}
