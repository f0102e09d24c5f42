/**
 * A whole migration in the in-process Fig. 1 testbed: the agent runs in the VM,
 * the router plugin on every router, and the VM node is moved from host A's
 * segment to host B's (and back, for more moves) while the Goldbach client on C
 * keeps its STREAM to the VM's OLD DAG and xping probes that old DAG every Δt.
 *
 * This is where the three parts meet in one process; they still talk only over
 * the (memory) wire. Figures per move: downtime the paper's way ((n ± 1)·Δt from
 * n lost pings in a row), move → every router rewritten, move → name registered.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Agent } from '../agent/agent.js';
import type { Logger } from '../shared/logger.js';
import { MobilityPlugin, type Rewrite } from '../router-plugin/mobility-plugin.js';
import { LocalNodeApi } from '../xianet/api/local-api.js';
import { LocalRoutes } from '../xianet/local-routes.js';
import type { SignedNameRecord } from '../xianet/names/name-record.js';
import { GOLDBACH_NAME, runTestbed, type RunningTestbed, type TestbedReport } from '../xianet/testbed.js';
import type { TopologyName } from '../xianet/topology.js';

export interface MigrationOptions {
  topology: TopologyName;
  /** Moves: A → B, then back and forth (default 1). */
  moves?: number;
  pingIntervalMs?: number;
  /** How long the VM is off every segment during a move (the stop-and-copy), default 0. */
  pauseMs?: number;
  /** Traffic time after each move before the next (default 600 ms). */
  settleMs?: number;
  beaconIntervalMs?: number;
  logger?: Logger;
  /** Called after each move has settled, with the running testbed (tests inspect it). */
  afterMove?: (testbed: RunningTestbed, figures: MoveFigures, parts: MigrationParts) => Promise<void>;
  /** Called before each move (1-based), e.g. to flood the daemons first. */
  beforeMove?: (testbed: RunningTestbed, move: number, parts: MigrationParts) => Promise<void>;
}

/** The mobility parts the testbed runs, for tests that look inside them. */
export interface MigrationParts {
  plugins: MobilityPlugin[];
  agent: Agent;
}

export interface MoveFigures {
  move: number;
  from: string;
  to: string;
  lostPings: number;
  /** n·Δt for n consecutive lost pings around the move (the paper's downtime, ± Δt). */
  downtimeMs: number;
  moveToRewrittenMs: number | null;
  moveToRegisteredMs: number | null;
  noticeAckedMs: number | null;
}

export interface MigrationReport {
  topology: TopologyName;
  moves: number;
  brokenConnections: number;
  downtimeMs: number;
  downtimeMaxMs: number;
  goldbachAnswers: number;
  goldbachMaxGapMs: number;
  moveToRewrittenMs: number | null;
  moveToRewrittenMaxMs: number | null;
  moveToRegisteredMs: number | null;
  xpingLossPct: number;
  pingIntervalMs: number;
  perMove: MoveFigures[];
}

export function median(values: number[]): number | null {
  if (values.length === 0) return null;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return round(sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2);
}

const round = (v: number): number => Math.round(v * 100) / 100;

function waitFor<T>(subscribe: (done: (value: T) => void) => () => void, timeoutMs: number): Promise<T | undefined> {
  return new Promise((resolve) => {
    let unsubscribe = (): void => undefined;
    const timer = setTimeout(() => {
      unsubscribe();
      resolve(undefined);
    }, timeoutMs);
    unsubscribe = subscribe((value) => {
      clearTimeout(timer);
      unsubscribe();
      resolve(value);
    });
  });
}

export async function runMigrationTestbed(options: MigrationOptions): Promise<MigrationReport> {
  const moves = options.moves ?? 1;
  const pingIntervalMs = options.pingIntervalMs ?? 10;
  const settleMs = options.settleMs ?? 600;
  const stateDir = mkdtempSync(join(tmpdir(), 'xmig-testbed-'));
  const plugins: MobilityPlugin[] = [];
  let agent: Agent | undefined;
  const figures: MoveFigures[] = [];

  const prepare = async (t: RunningTestbed): Promise<void> => {
    for (const stack of t.network.stacks.values()) {
      if (stack.node.role !== 'router') continue;
      const plugin = new MobilityPlugin({ api: new LocalNodeApi(stack), routes: new LocalRoutes(stack.node), identity: stack.node.identity, logger: options.logger });
      await plugin.start();
      plugins.push(plugin);
    }
    const vm = t.network.stack('VM');
    agent = new Agent({
      api: new LocalNodeApi(vm),
      routes: new LocalRoutes(vm.node, 'control'),
      identity: vm.node.identity,
      names: [{ name: GOLDBACH_NAME, sid: t.serviceDag.sink }],
      stateFile: join(stateDir, 'agent.json'),
      logger: options.logger,
      resume: false,
      schedules: { refresh: false, reannounce: false, health: false },
      hostFacts: false,
    });
    await agent.start();
  };

  const during = async (t: RunningTestbed): Promise<MoveFigures[]> => {
    const vm = t.network.stack('VM').node;
    const segments = ['seg-A', 'seg-B'];
    await new Promise((r) => setTimeout(r, settleMs));
    const parts: MigrationParts = { plugins, agent: agent! };
    for (let i = 0; i < moves; i++) {
      await options.beforeMove?.(t, i + 1, parts);
      const from = segments[i % 2]!;
      const to = segments[(i + 1) % 2]!;
      // Done when the old gateway (or the one gateway, intra-AD) has rewritten its route.
      const rewritten = waitFor<Rewrite>(
        (done) => {
          const offs = plugins.map((p) =>
            p.onRewrite((r) => {
              if (r.hid.equals(vm.hid) && (r.role === 'old-gateway' || r.role === 'same-gateway')) done(r);
            }),
          );
          return () => offs.forEach((off) => off());
        },
        5000,
      );
      const registered = waitFor<SignedNameRecord>((done) => t.nameServer.onRecord((record) => record.name === GOLDBACH_NAME && done(record)), 5000);
      const acked = waitFor<number | undefined>((done) => agent!.onMove((m) => done(m.noticeAckedMs)), 5000);
      const started = performance.now();
      const pingMark = t.pings.length;
      t.network.link('VM').detach();
      if (options.pauseMs) await new Promise((r) => setTimeout(r, options.pauseMs));
      t.network.link('VM').attach(t.network.segment(to));
      const [rewrite, record, ackedMs] = await Promise.all([
        rewritten.then((r) => (r ? performance.now() - started : null)),
        registered.then((r) => (r ? performance.now() - started : null)),
        acked,
      ]);
      await new Promise((r) => setTimeout(r, settleMs));
      // Downtime the paper's way: the longest run of lost pings sent since just before
      // the move, in the order sent, once every one of them has an answer or timed out.
      const pingEnd = t.pings.length;
      await t.pingsSettled(pingEnd);
      let run = 0;
      let longest = 0;
      for (const reply of t.pings.slice(Math.max(0, pingMark - 2), pingEnd)) {
        run = reply.rtt === undefined ? run + 1 : 0;
        longest = Math.max(longest, run);
      }
      const measured: MoveFigures = {
        move: i + 1,
        from: from === 'seg-A' ? 'A' : 'B',
        to: to === 'seg-A' ? 'A' : 'B',
        lostPings: longest,
        downtimeMs: longest * pingIntervalMs,
        moveToRewrittenMs: rewrite === null ? null : round(rewrite),
        moveToRegisteredMs: record === null ? null : round(record),
        noticeAckedMs: ackedMs ?? null,
      };
      figures.push(measured);
      await options.afterMove?.(t, measured, parts);
    }
    return figures;
  };

  let report: TestbedReport;
  try {
    report = await runTestbed({
      topology: options.topology,
      pingIntervalMs,
      beaconIntervalMs: options.beaconIntervalMs,
      logger: options.logger,
      prepare,
      during,
    });
  } finally {
    await agent?.stop();
    for (const plugin of plugins) await plugin.stop();
    rmSync(stateDir, { recursive: true, force: true });
  }
  const rewrittenTimes = figures.flatMap((f) => (f.moveToRewrittenMs === null ? [] : [f.moveToRewrittenMs]));
  return {
    topology: options.topology,
    moves,
    brokenConnections: report.goldbach.brokenConnections,
    downtimeMs: median(figures.map((f) => f.downtimeMs)) ?? 0,
    downtimeMaxMs: Math.max(0, ...figures.map((f) => f.downtimeMs)),
    goldbachAnswers: report.goldbach.answers,
    goldbachMaxGapMs: report.goldbach.maxGapMs,
    moveToRewrittenMs: median(rewrittenTimes),
    moveToRewrittenMaxMs: rewrittenTimes.length ? Math.max(...rewrittenTimes) : null,
    moveToRegisteredMs: median(figures.flatMap((f) => (f.moveToRegisteredMs === null ? [] : [f.moveToRegisteredMs]))),
    xpingLossPct: report.xping.lossPct,
    pingIntervalMs,
    perMove: figures,
  };
}
