/**
 * xping: XCMP echo to a DAG at a fixed interval, as the paper uses it to measure
 * downtime: with interval Δt and n replies missing in a row, the outage lasted
 * (n ± 1)·Δt. Reports RTTs, loss, the longest run of missing replies, and the
 * XCMP errors that came back instead.
 *
 * Its options come from outside (the API, the command line), so they are checked
 * before anything starts: a count, an interval of at least 1 ms, and echo data no
 * larger than a packet on the node's smallest link carries. A ping holds bounded
 * state however long it runs: the statistics are kept as outcomes arrive in the
 * order sent, and only the last `MAX_KEPT_REPLIES` replies are kept for the summary.
 */
import { randomInt } from 'node:crypto';
import { Dag } from '../shared/dag.js';
import { BadRequestError, errorMessage, XmigError } from '../shared/errors.js';
import type { Startable } from '../shared/startable.js';
import { NextHeader, XIP_BASE_LENGTH, XIP_NODE_LENGTH, xipHeaderLength, XipOffset } from '../shared/xip-header.js';
import type { XiaNode } from './node.js';
import { encodeXcmp, XCMP_HEADER_LENGTH, XcmpType, type XcmpMessage } from './xcmp.js';

export interface PingOptions {
  /** Echoes to send; 0 or undefined with a signal: until aborted. */
  count?: number;
  intervalMs?: number;
  /** A reply later than this counts as lost (default max(1000, 10 intervals)). */
  timeoutMs?: number;
  /** Echo data bytes (default 16: a timestamp and padding; at least 8). */
  size?: number;
  signal?: AbortSignal;
  /** Called for each echo as it is sent; the same object gets its outcome when it is known. */
  onSent?: (reply: PingReply) => void;
  /** Called for each reply or loss as it is known (in that order, not the order sent). */
  onResult?: (result: PingReply) => void;
}

export interface PingReply {
  seq: number;
  /** Round-trip ms, or undefined if lost or answered by an error. */
  rtt: number | undefined;
  /** XCMP error that came back instead (e.g. 'unreachable/1', 'time-exceeded/0'). */
  error?: string;
  /** Monotonic ms when the echo was sent. */
  sentAt: number;
}

export interface PingSummary {
  destination: string;
  intervalMs: number;
  sent: number;
  received: number;
  errors: number;
  lossPct: number;
  rttMinMs: number | null;
  rttAvgMs: number | null;
  rttMaxMs: number | null;
  /** Longest run of consecutive unanswered echoes. */
  longestGapCount: number;
  /** That run in ms: (n)·Δt, the paper's downtime estimate (±Δt). */
  longestGapMs: number;
  /** The replies in the order sent (the last MAX_KEPT_REPLIES of them). */
  replies: PingReply[];
}

/** Replies a summary keeps (the statistics cover all of them). */
export const MAX_KEPT_REPLIES = 100_000;
export const MAX_PING_COUNT = 10_000_000;
export const MAX_PING_MS = 86_400_000;
/** The echo data carries a timestamp (8 bytes). */
export const MIN_ECHO_SIZE = 8;

/** The most echo data a ping from `node` to `dst` can carry in one packet on the node's smallest link. */
export function maxEchoSize(node: XiaNode, dst: Dag): number {
  return node.mtu - xipHeaderLength(dst.length, node.address().length) - XCMP_HEADER_LENGTH;
}

function badOption(node: XiaNode, field: string, message: string): BadRequestError {
  node.refusals.refuse('ping', 'malformed');
  return new BadRequestError(field, message);
}

interface Checked {
  count: number;
  intervalMs: number;
  timeoutMs: number;
  size: number;
}

/** The options with defaults, or a typed error naming the bad one. */
export function checkPingOptions(node: XiaNode, dst: unknown, options: PingOptions): Checked {
  if (!(dst instanceof Dag)) throw badOption(node, 'dst', 'ping: the destination is not a DAG');
  const number = (value: unknown, name: string, min: number, max: number, integer: boolean): number | undefined => {
    if (value === undefined) return undefined;
    if (typeof value !== 'number' || !Number.isFinite(value) || value < min || value > max || (integer && !Number.isInteger(value))) {
      throw badOption(node, name, `ping: ${name} must be ${integer ? 'an integer' : 'a number'} in ${min}..${max}, got ${String(value).slice(0, 40)}`);
    }
    return value;
  };
  const count = number(options.count, 'count', 0, MAX_PING_COUNT, true) ?? 0;
  const intervalMs = number(options.intervalMs, 'intervalMs', 1, MAX_PING_MS, false) ?? 10;
  const timeoutMs = number(options.timeoutMs, 'timeoutMs', 1, MAX_PING_MS, false) ?? Math.max(1000, 10 * intervalMs);
  const max = maxEchoSize(node, dst);
  const size = Math.max(MIN_ECHO_SIZE, number(options.size, 'size', 0, 65_535, true) ?? 16);
  if (size > max) throw badOption(node, 'size', `ping: size ${size} is more echo data than a packet on ${node.name}'s smallest link (MTU ${node.mtu}) carries toward this DAG: at most ${max}`);
  return { count, intervalMs, timeoutMs, size };
}

function errorName(message: XcmpMessage): string {
  const type =
    message.type === XcmpType.UNREACHABLE ? 'unreachable' : message.type === XcmpType.TIME_EXCEEDED ? 'time-exceeded' : `type-${message.type}`;
  return `${type}/${message.code}`;
}

/** Statistics over outcomes taken in the order the echoes were sent. */
class PingStats {
  sent = 0;
  received = 0;
  errors = 0;
  private rttMin = Infinity;
  private rttMax = -Infinity;
  private rttSum = 0;
  private run = 0;
  longest = 0;
  readonly kept: PingReply[] = [];

  add(reply: PingReply): void {
    this.sent++;
    if (reply.error !== undefined) this.errors++;
    if (reply.rtt === undefined) {
      this.run++;
      this.longest = Math.max(this.longest, this.run);
    } else {
      this.run = 0;
      this.received++;
      this.rttMin = Math.min(this.rttMin, reply.rtt);
      this.rttMax = Math.max(this.rttMax, reply.rtt);
      this.rttSum += reply.rtt;
    }
    this.kept.push(reply);
    if (this.kept.length > MAX_KEPT_REPLIES) this.kept.splice(0, this.kept.length - MAX_KEPT_REPLIES);
  }

  summary(destination: string, intervalMs: number): PingSummary {
    const round = (v: number): number => Math.round(v * 1000) / 1000;
    const any = this.received > 0;
    return {
      destination,
      intervalMs,
      sent: this.sent,
      received: this.received,
      errors: this.errors,
      lossPct: this.sent === 0 ? 0 : round((100 * (this.sent - this.received)) / this.sent),
      rttMinMs: any ? round(this.rttMin) : null,
      rttAvgMs: any ? round(this.rttSum / this.received) : null,
      rttMaxMs: any ? round(this.rttMax) : null,
      longestGapCount: this.longest,
      longestGapMs: this.longest * intervalMs,
      replies: this.kept,
    };
  }
}

/** The summary of replies already known (all outcomes in), as a ping would report them. */
export function summarize(destination: string, intervalMs: number, replies: PingReply[]): PingSummary {
  const stats = new PingStats();
  for (const reply of replies) stats.add(reply);
  return stats.summary(destination, intervalMs);
}

interface InFlight {
  reply: PingReply;
  timer: NodeJS.Timeout;
  settled: boolean;
}

/**
 * One xping run. `start()` sends the first echo and then one every interval; `stop()`
 * ends it at once (echoes in flight are not counted as lost) and leaves no timer or
 * listener behind. `done` resolves with the summary when the count is reached and
 * every outcome is in, or when stopped or aborted; it rejects if an echo cannot be sent.
 */
export class XPing implements Startable {
  readonly done: Promise<PingSummary>;
  private readonly options: Checked;
  private readonly identifier = randomInt(0, 0x10000);
  private readonly stats = new PingStats();
  /** Echoes whose outcome is not yet counted, in the order sent. */
  private readonly order: InFlight[] = [];
  private readonly bySeq = new Map<number, InFlight>();
  private seq = 0;
  private sender: NodeJS.Timeout | undefined;
  private unlisten: (() => void) | undefined;
  private state: 'new' | 'running' | 'finishing' | 'done' = 'new';
  private resolve!: (summary: PingSummary) => void;
  private reject!: (error: Error) => void;

  constructor(
    private readonly node: XiaNode,
    private readonly dst: Dag,
    private readonly callbacks: PingOptions = {},
  ) {
    this.options = checkPingOptions(node, dst, callbacks);
    this.done = new Promise<PingSummary>((resolve, reject) => {
      this.resolve = resolve;
      this.reject = reject;
    });
  }

  async start(): Promise<void> {
    if (this.state !== 'new') return;
    this.state = 'running';
    const signal = this.callbacks.signal;
    if (signal?.aborted) {
      this.finish();
      return;
    }
    signal?.addEventListener('abort', this.onAbort, { once: true });
    this.unlisten = this.node.onXcmp((message) => this.onXcmp(message));
    this.sender = setInterval(() => this.sendOne(), this.options.intervalMs);
    this.sendOne();
  }

  async stop(): Promise<void> {
    if (this.state === 'new') this.state = 'running';
    this.forgetInFlight();
    this.finish();
  }

  private readonly onAbort = (): void => void this.stop();

  private sendOne(): void {
    if (this.state !== 'running') return;
    const s = this.seq++ & 0xffff;
    const data = Buffer.alloc(this.options.size);
    data.writeDoubleBE(Date.now(), 0);
    const reply: PingReply = { seq: s, rtt: undefined, sentAt: this.node.clock.monotonic() };
    const entry: InFlight = { reply, timer: setTimeout(() => this.settle(entry), this.options.timeoutMs), settled: false };
    // A sequence number wraps after 65,536 echoes: an older echo still waiting under it is lost.
    const older = this.bySeq.get(s);
    if (older) this.settle(older);
    this.bySeq.set(s, entry);
    this.order.push(entry);
    this.callbacks.onSent?.(reply);
    try {
      this.node.sendPacket(this.dst, encodeXcmp({ type: XcmpType.ECHO, code: 0, identifier: this.identifier, sequence: s, data }), { nextHeader: NextHeader.XCMP });
    } catch (error) {
      // Nothing more can be sent this way: the run ends here, with its error.
      this.fail(new XmigError('ERR_UNREACHABLE', `ping ${this.dst}: ${errorMessage(error)}`, { cause: error }));
      return;
    }
    if (this.options.count && this.seq >= this.options.count) {
      this.state = 'finishing';
      this.clearSender();
      this.maybeDone();
    }
  }

  private onXcmp(message: XcmpMessage): void {
    if (message.type === XcmpType.ECHO_REPLY) {
      if (message.identifier !== this.identifier) return;
      const entry = this.bySeq.get(message.sequence);
      if (!entry) return;
      entry.reply.rtt = this.node.clock.monotonic() - entry.reply.sentAt;
      this.settle(entry);
      return;
    }
    // An error quotes our packet: find our echo header after the quoted XIP header.
    const quoted = message.data;
    if (quoted.length < XIP_BASE_LENGTH) return;
    const at = XIP_BASE_LENGTH + (quoted[XipOffset.DST_NODES]! + quoted[XipOffset.SRC_NODES]!) * XIP_NODE_LENGTH;
    if (quoted[XipOffset.NEXT_HEADER] !== NextHeader.XCMP || quoted.length < at + XCMP_HEADER_LENGTH) return;
    if (quoted[at] !== XcmpType.ECHO || quoted.readUInt16BE(at + 4) !== this.identifier) return;
    const entry = this.bySeq.get(quoted.readUInt16BE(at + 6));
    if (!entry) return;
    entry.reply.error = errorName(message);
    this.settle(entry);
  }

  private settle(entry: InFlight): void {
    if (entry.settled) return;
    entry.settled = true;
    clearTimeout(entry.timer);
    if (this.bySeq.get(entry.reply.seq) === entry) this.bySeq.delete(entry.reply.seq);
    this.callbacks.onResult?.(entry.reply);
    // Count outcomes in the order sent, as far as they are known.
    while (this.order.length > 0 && this.order[0]!.settled) this.stats.add(this.order.shift()!.reply);
    this.maybeDone();
  }

  private maybeDone(): void {
    if (this.state === 'finishing' && this.order.length === 0) this.finish();
  }

  /** Echoes still in flight when the user stops are not losses: forget them. */
  private forgetInFlight(): void {
    const known = this.order.filter((entry) => entry.settled);
    for (const entry of this.order) clearTimeout(entry.timer);
    // Outcomes already known behind the first unknown one still count.
    for (const entry of known) this.stats.add(entry.reply);
    this.order.length = 0;
    this.bySeq.clear();
  }

  private clearSender(): void {
    if (this.sender) clearInterval(this.sender);
    this.sender = undefined;
  }

  private release(): void {
    this.clearSender();
    for (const entry of this.order) clearTimeout(entry.timer);
    this.unlisten?.();
    this.unlisten = undefined;
    this.callbacks.signal?.removeEventListener('abort', this.onAbort);
  }

  private finish(): void {
    if (this.state === 'done') return;
    this.state = 'done';
    this.release();
    this.resolve(this.stats.summary(this.dst.toString(), this.options.intervalMs));
  }

  private fail(error: Error): void {
    if (this.state === 'done') return;
    this.state = 'done';
    this.release();
    this.order.length = 0;
    this.bySeq.clear();
    this.reject(error);
  }
}

/** Pings `dst` from `node` and resolves with the summary when done (count reached or aborted). */
export function ping(node: XiaNode, dst: Dag, options: PingOptions = {}): Promise<PingSummary> {
  let run: XPing;
  try {
    run = new XPing(node, dst, options);
  } catch (error) {
    return Promise.reject(error as Error);
  }
  void run.start();
  return run.done;
}
