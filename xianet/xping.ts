/**
 * xping: XCMP echo to a DAG at a fixed interval, as the paper uses it to measure
 * downtime: with interval Δt and n replies missing in a row, the outage lasted
 * (n ± 1)·Δt. Reports RTTs, loss, the longest run of missing replies, and the
 * XCMP errors that came back instead.
 */
import { randomInt } from 'node:crypto';
import type { Dag } from '../shared/dag.js';
import { NextHeader, XIP_BASE_LENGTH, XIP_NODE_LENGTH } from '../shared/xip-header.js';
import type { XiaNode } from './node.js';
import { encodeXcmp, XCMP_HEADER_LENGTH, XcmpType, type XcmpMessage } from './xcmp.js';

export interface PingOptions {
  /** Echoes to send; 0 or undefined with a signal: until aborted. */
  count?: number;
  intervalMs?: number;
  /** A reply later than this counts as lost (default max(1000, 10 intervals)). */
  timeoutMs?: number;
  /** Echo data bytes (default 16: a timestamp and padding). */
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
  replies: PingReply[];
}

export function summarize(destination: string, intervalMs: number, replies: PingReply[]): PingSummary {
  const rtts = replies.flatMap((r) => (r.rtt === undefined ? [] : [r.rtt]));
  let run = 0;
  let longest = 0;
  for (const r of replies) {
    run = r.rtt === undefined ? run + 1 : 0;
    longest = Math.max(longest, run);
  }
  const round = (v: number): number => Math.round(v * 1000) / 1000;
  return {
    destination,
    intervalMs,
    sent: replies.length,
    received: rtts.length,
    errors: replies.filter((r) => r.error !== undefined).length,
    lossPct: replies.length === 0 ? 0 : round((100 * (replies.length - rtts.length)) / replies.length),
    rttMinMs: rtts.length ? round(Math.min(...rtts)) : null,
    rttAvgMs: rtts.length ? round(rtts.reduce((a, b) => a + b, 0) / rtts.length) : null,
    rttMaxMs: rtts.length ? round(Math.max(...rtts)) : null,
    longestGapCount: longest,
    longestGapMs: longest * intervalMs,
    replies,
  };
}

function errorName(message: XcmpMessage): string {
  const type =
    message.type === XcmpType.UNREACHABLE ? 'unreachable' : message.type === XcmpType.TIME_EXCEEDED ? 'time-exceeded' : `type-${message.type}`;
  return `${type}/${message.code}`;
}

/** Pings `dst` from `node` and resolves with the summary when done (count reached or aborted). */
export function ping(node: XiaNode, dst: Dag, options: PingOptions = {}): Promise<PingSummary> {
  const intervalMs = options.intervalMs ?? 10;
  const timeoutMs = options.timeoutMs ?? Math.max(1000, 10 * intervalMs);
  const size = Math.max(8, options.size ?? 16);
  const identifier = randomInt(0, 0x10000);
  const replies: PingReply[] = [];
  const pending = new Map<number, { reply: PingReply; timer: NodeJS.Timeout }>();
  let seq = 0;
  let finished = false;

  return new Promise<PingSummary>((resolve) => {
    const settle = (entry: { reply: PingReply; timer: NodeJS.Timeout }): void => {
      clearTimeout(entry.timer);
      pending.delete(entry.reply.seq);
      options.onResult?.(entry.reply);
      maybeFinish();
    };

    const unlisten = node.onXcmp((message) => {
      if (message.type === XcmpType.ECHO_REPLY) {
        if (message.identifier !== identifier) return;
        const entry = pending.get(message.sequence);
        if (!entry) return;
        entry.reply.rtt = node.clock.monotonic() - entry.reply.sentAt;
        settle(entry);
        return;
      }
      // An error quotes our packet: find our echo header after the quoted XIP header.
      const quoted = message.data;
      if (quoted.length < XIP_BASE_LENGTH) return;
      const at = XIP_BASE_LENGTH + (quoted[5]! + quoted[6]!) * XIP_NODE_LENGTH;
      if (quoted[1] !== NextHeader.XCMP || quoted.length < at + XCMP_HEADER_LENGTH) return;
      if (quoted[at] !== XcmpType.ECHO || quoted.readUInt16BE(at + 4) !== identifier) return;
      const entry = pending.get(quoted.readUInt16BE(at + 6));
      if (!entry) return;
      entry.reply.error = errorName(message);
      settle(entry);
    });

    const maybeFinish = (): void => {
      if (!finished || pending.size > 0) return;
      clearInterval(sender);
      unlisten();
      options.signal?.removeEventListener('abort', onAbort);
      resolve(summarize(dst.toString(), intervalMs, replies));
    };

    const sendOne = (): void => {
      if (finished) return;
      const s = seq++ & 0xffff;
      const data = Buffer.alloc(size);
      data.writeDoubleBE(Date.now(), 0);
      const reply: PingReply = { seq: s, rtt: undefined, sentAt: node.clock.monotonic() };
      replies.push(reply);
      const timer = setTimeout(() => settle({ reply, timer }), timeoutMs);
      pending.set(s, { reply, timer });
      options.onSent?.(reply);
      node.sendPacket(dst, encodeXcmp({ type: XcmpType.ECHO, code: 0, identifier, sequence: s, data }), {
        nextHeader: NextHeader.XCMP,
      });
      if (options.count && seq >= options.count) {
        finished = true;
        clearInterval(sender);
      }
    };

    const onAbort = (): void => {
      finished = true;
      clearInterval(sender);
      // Echoes still in flight when the user stops are not losses: forget them.
      for (const entry of pending.values()) {
        clearTimeout(entry.timer);
        replies.splice(replies.indexOf(entry.reply), 1);
      }
      pending.clear();
      maybeFinish();
    };

    const sender = setInterval(sendOne, intervalMs);
    options.signal?.addEventListener('abort', onAbort, { once: true });
    if (options.signal?.aborted) onAbort();
    else sendOne();
  });
}
