/**
 * The paper's clients on host C, as the paper runs them: `xmig ping -i 10` (xping, Δt =
 * 10 ms) and `xmig cal ask` (the Goldbach client, one STREAM), both aimed at the VM's
 * DAG from before the first move and pinned to it. What they print is all the lab
 * believes about connectivity: every reply line and every answer line, with the time the
 * lab read it, and the client's own report when it ends.
 *
 * iperf3's client (the network workload) is read the same way: its per-second reports.
 *
 * xping prints `seq=N time=R ms`, `seq=N lost` (after its timeout) or `seq=N <error>`; a
 * reply read at lab time T with round trip R was sent at T − R, and a lost echo's send
 * time is placed between its neighbours' by sequence number.
 */
import { join } from 'node:path';
import type { Dag } from '../shared/dag.js';
import type { Startable } from '../shared/startable.js';
import { LabProcess } from './lab-process.js';
import type { LabWorld } from './world.js';
import type { LabHost } from './topology.js';

export interface PingRecord {
  seq: number;
  /** Lab clock (epoch ms) when it was sent: measured for answered ones, placed for the rest. */
  sentAt: number;
  rttMs?: number;
  /** 'lost', or the XCMP error that came back. */
  failure?: string;
}

export interface AnswerRecord {
  n: number;
  /** Lab clock when the answer was read. */
  at: number;
}

export interface GoldbachEnd {
  answers: number;
  wrong: number;
  maxGapMs: number;
  ended: string;
  error?: string;
}

interface ClientOptions {
  world: LabWorld;
  host: LabHost;
  api: string;
  dir: string;
}

const REPLY = /^seq=(\d+) time=([\d.]+) ms$/;
const FAILED = /^seq=(\d+) (.+)$/;

export class XpingClient implements Startable {
  readonly process: LabProcess;

  constructor(
    private readonly options: ClientOptions & { target: Dag; intervalMs: number; timeoutMs?: number },
  ) {
    this.process = new LabProcess({
      net: options.world.net,
      ns: options.world.ns(options.host),
      name: `xping on ${options.host}`,
      args: ['ping', options.target.toString(), '--api', options.api, '-i', String(options.intervalMs), ...(options.timeoutMs ? ['-W', String(options.timeoutMs)] : [])],
      stderrFile: join(options.dir, 'xping.stderr'),
    });
  }

  get intervalMs(): number {
    return this.options.intervalMs;
  }

  start(): Promise<void> {
    return this.process.start();
  }

  /** Every echo so far whose outcome is known, in the order sent. */
  records(): PingRecord[] {
    const bySeq = new Map<number, PingRecord>();
    for (const line of this.process.lines) {
      const reply = REPLY.exec(line.text);
      if (reply) {
        const rttMs = Number(reply[2]);
        bySeq.set(Number(reply[1]), { seq: Number(reply[1]), sentAt: line.at - rttMs, rttMs });
        continue;
      }
      const failed = FAILED.exec(line.text);
      if (failed) bySeq.set(Number(failed[1]), { seq: Number(failed[1]), sentAt: Number.NaN, failure: failed[2]! });
    }
    const records = [...bySeq.values()].sort((a, b) => a.seq - b.seq);
    placeSendTimes(records, this.options.intervalMs);
    return records;
  }

  /** Resolves once an echo sent after `since` (lab clock) has been answered. */
  async answeredAfter(since: number, wait: { deadlineMs: number; signal?: AbortSignal }): Promise<PingRecord> {
    const line = await this.process.waitForLine(
      (l) => {
        const reply = REPLY.exec(l.text);
        return reply !== null && l.at - Number(reply[2]) > since;
      },
      'an xping reply',
      wait,
    );
    const reply = REPLY.exec(line.text)!;
    return { seq: Number(reply[1]), sentAt: line.at - Number(reply[2]), rttMs: Number(reply[2]) };
  }

  /** Ends it (SIGINT, as Ctrl-C: it prints its summary). */
  async finish(): Promise<void> {
    await this.process.interrupt(10_000);
  }

  stop(): Promise<void> {
    return this.process.stop();
  }
}

/** Fills in the send time of echoes that were not answered, from their answered neighbours. */
export function placeSendTimes(records: PingRecord[], intervalMs: number): void {
  const known = records.filter((r) => Number.isFinite(r.sentAt));
  if (known.length === 0) return;
  let k = 0;
  for (const record of records) {
    if (Number.isFinite(record.sentAt)) continue;
    while (k + 1 < known.length && known[k + 1]!.seq < record.seq) k++;
    const before = known[k]!.seq < record.seq ? known[k] : undefined;
    const after = known.find((r) => r.seq > record.seq);
    if (before && after) record.sentAt = before.sentAt + ((after.sentAt - before.sentAt) * (record.seq - before.seq)) / (after.seq - before.seq);
    else if (before) record.sentAt = before.sentAt + (record.seq - before.seq) * intervalMs;
    else if (after) record.sentAt = after.sentAt - (after.seq - record.seq) * intervalMs;
  }
}

const ANSWER = /^(\d+) = (\d+) \+ (\d+)$/;
const END = /^(\d+) answers, (\d+) wrong, longest gap (\d+) ms, ended: (\w+)(?: \((.*)\))?$/;

export class GoldbachClient implements Startable {
  readonly process: LabProcess;

  /** `target`: a DAG or name over XIA (pinned unless `pin: false`), or host:port with `tcp`. */
  constructor(options: ClientOptions & { target: Dag | string; name?: string; pin?: boolean; tcp?: boolean }) {
    const name = options.name ?? `Goldbach client on ${options.host}`;
    const args = options.tcp
      ? ['cal', 'ask', '--tcp', options.target.toString()]
      : ['cal', 'ask', options.target.toString(), '--api', options.api, ...(options.pin === false ? [] : ['--pin'])];
    this.process = new LabProcess({
      net: options.world.net,
      ns: options.world.ns(options.host),
      name,
      args,
      stderrFile: join(options.dir, `${name.replace(/\s+/g, '-')}.stderr`),
    });
  }

  start(): Promise<void> {
    return this.process.start();
  }

  answers(): AnswerRecord[] {
    return this.process.lines.flatMap((l) => {
      const m = ANSWER.exec(l.text);
      return m ? [{ n: Number(m[1]), at: l.at }] : [];
    });
  }

  /** The client's own last words, once it ended. */
  end(): GoldbachEnd | undefined {
    for (const line of this.process.lines) {
      const m = END.exec(line.text);
      if (m) return { answers: Number(m[1]), wrong: Number(m[2]), maxGapMs: Number(m[3]), ended: m[4]!, ...(m[5] ? { error: m[5] } : {}) };
    }
    return undefined;
  }

  /** Broken if it said so, or if it ended by itself (a client that keeps its connection runs until told to stop). */
  get broken(): boolean {
    const end = this.end();
    return (end !== undefined && end.ended === 'broken') || (!this.process.running && end === undefined && this.process.exitCode !== undefined);
  }

  async answeredAfter(since: number, wait: { deadlineMs: number; signal?: AbortSignal }): Promise<AnswerRecord> {
    const line = await this.process.waitForLine((l) => l.at > since && ANSWER.test(l.text), `a Goldbach answer after ${new Date(since).toISOString()}`, wait);
    return { n: Number(ANSWER.exec(line.text)![1]), at: line.at };
  }

  async finish(): Promise<void> {
    await this.process.interrupt(15_000);
  }

  stop(): Promise<void> {
    return this.process.stop();
  }
}

/** The longest time between consecutive answers read in [from, to) (and from `from` to the first). */
export function longestGap(answers: AnswerRecord[], from: number, to: number): { ms: number; endedAt?: number } {
  let last = from;
  let best = { ms: 0 } as { ms: number; endedAt?: number };
  for (const answer of answers) {
    if (answer.at < from) continue;
    if (answer.at >= to) break;
    if (answer.at - last > best.ms) best = { ms: answer.at - last, endedAt: answer.at };
    last = answer.at;
  }
  return best;
}

export interface Iperf3Interval {
  /** Lab clock when the line was read (the interval's end). */
  at: number;
  mbps: number;
}

/** iperf3's per-second line: `[  5]   1.00-2.00   sec  1.19 MBytes  10.0 Mbits/sec  0  89.1 KBytes`. */
const IPERF3_INTERVAL = /^\[\s*\d+\]\s+[\d.]+-[\d.]+\s+sec\s+[\d.]+\s+[KMGT]?Bytes\s+([\d.]+)\s+([KMGT]?)bits\/sec(?!.*(sender|receiver))/;
const IPERF3_ERROR = /^iperf3: (error|interrupt)\b/;
const UNIT: Record<string, number> = { '': 1e-6, K: 1e-3, M: 1, G: 1e3, T: 1e6 };

/** Reads iperf3's text lines: its per-second rates (Mbit/s) and its errors. */
export function parseIperf3(lines: ReadonlyArray<{ at: number; text: string }>): { intervals: Iperf3Interval[]; errors: Array<{ at: number; text: string }> } {
  const intervals: Iperf3Interval[] = [];
  const errors: Array<{ at: number; text: string }> = [];
  for (const line of lines) {
    const m = IPERF3_INTERVAL.exec(line.text);
    if (m) intervals.push({ at: line.at, mbps: Number(m[1]) * UNIT[m[2]!]! });
    else if (IPERF3_ERROR.test(line.text) && !/interrupt - the client has terminated/.test(line.text)) errors.push({ at: line.at, text: line.text.trim() });
  }
  return { intervals, errors };
}

/**
 * The network workload: iperf3's client on C sending to `iperf3 -s` in the VM at a fixed
 * rate (the same load over XIA and over TCP/IP), reporting every second. Over XIA its TCP connection is local at both ends — to
 * `xmig tunnel connect` on C and from `xmig tunnel serve` in the VM — and an XIA STREAM
 * carries it between them; in the TCP/IP baseline it goes to the VM's address directly.
 */
export class Iperf3Client implements Startable {
  readonly process: LabProcess;

  constructor(options: Omit<ClientOptions, 'api'> & { host: LabHost; address: string; port: number; rateMbps: number; name?: string }) {
    const name = options.name ?? `iperf3 client on ${options.host}`;
    this.process = new LabProcess({
      net: options.world.net,
      ns: options.world.ns(options.host),
      name,
      command: ['iperf3'],
      args: ['--client', options.address, '--port', String(options.port), '--time', '86400', '--interval', '1', '--bitrate', `${options.rateMbps}M`, '--forceflush'],
      stderrFile: join(options.dir, `${name.replace(/\s+/g, '-')}.stderr`),
    });
  }

  start(): Promise<void> {
    return this.process.start();
  }

  report(): ReturnType<typeof parseIperf3> {
    return parseIperf3(this.process.lines);
  }

  /** Resolves once a second's report read after `since` carried bytes. */
  async sentAfter(since: number, wait: { deadlineMs: number; signal?: AbortSignal }): Promise<void> {
    await this.process.waitForLine((l) => l.at > since && (parseIperf3([l]).intervals[0]?.mbps ?? 0) > 0, `iperf3 to report bytes after ${new Date(since).toISOString()}`, wait);
  }

  async finish(): Promise<void> {
    await this.process.interrupt(10_000);
  }

  stop(): Promise<void> {
    return this.process.stop();
  }
}
