/**
 * Whole migrations in the in-process testbed: agent in the VM, plugin on the
 * routers, the Goldbach STREAM pinned to the VM's old DAG, xping to the old DAG.
 */
import { describe, expect, it } from 'vitest';
import { ControlClient, RouteControl } from '../shared/click-control-client.js';
import { LocalNodeApi } from '../xianet/api/local-api.js';
import { ClickControlPort } from '../xianet/click-control-port.js';
import { NameClient } from '../xianet/names/name-client.js';
import { GOLDBACH_NAME, type RunningTestbed } from '../xianet/testbed.js';
import { ping } from '../xianet/xping.js';
import { runMigrationTestbed, type MoveFigures } from './migration.js';

/** `list` of rt_HID through a real control port on `node`. */
async function listHid(t: RunningTestbed, name: string): Promise<string[]> {
  const node = t.network.stack(name).node;
  const port = new ClickControlPort(node, { port: 0 });
  await port.start();
  const client = new ControlClient({ host: '127.0.0.1', port: Number(port.address!.split(':').pop()) });
  try {
    return (await new RouteControl(client, node.name).listRoutes('HID')).map((r) => `${r.xid},${r.port},${r.nextHop}`);
  } finally {
    await client.close();
    await port.stop();
  }
}

describe.each(['intra-ad', 'inter-ad'] as const)('migration in the %s testbed', (topology) => {
  it('keeps the Goldbach STREAM over 20 moves (A → B → A ...), xping recovers, the old DAG still reaches the VM, names and stale routes follow', async () => {
    const checks: string[] = [];
    const afterMove = async (t: RunningTestbed, figures: MoveFigures): Promise<void> => {
      const vm = t.network.stack('VM').node;
      // Packets to the VM's old DAG (the service DAG registered before any move) arrive where it is now.
      const toOld = await ping(t.network.stack('C').node, t.serviceDag, { count: 3, intervalMs: 2 });
      if (toOld.received !== 3) checks.push(`move ${figures.move}: old DAG answered ${toOld.received}/3`);
      // A new client resolving the name gets the DAG of where the VM is now.
      const names = new NameClient(new LocalNodeApi(t.network.stack('B')));
      const resolved = (await names.resolve(GOLDBACH_NAME)).dag;
      await names.close();
      if (!resolved.find(0x10)!.equals(vm.ad!)) checks.push(`move ${figures.move}: name resolves to ${resolved}`);
      // Stale entries: the host the VM left has no direct route to it; the VM none to that host.
      const leftHost = figures.from;
      const hostRoutes = await listHid(t, leftHost);
      if (hostRoutes.some((r) => r.startsWith(`${vm.hid},`) && r.endsWith(`,${vm.hid}`))) checks.push(`move ${figures.move}: ${leftHost} still routes the VM directly`);
      const vmRoutes = await listHid(t, 'VM');
      const hostHid = t.network.stack(leftHost).node.hid.toString();
      if (vmRoutes.some((r) => r.startsWith(`${hostHid},`))) checks.push(`move ${figures.move}: the VM still routes ${leftHost} directly`);
    };
    const report = await runMigrationTestbed({ topology, moves: 20, settleMs: 120, afterMove });
    expect(checks).toEqual([]);
    expect(report.brokenConnections).toBe(0);
    expect(report.goldbachAnswers).toBeGreaterThan(1000);
    expect(report.perMove.every((m) => m.moveToRewrittenMs !== null && m.moveToRegisteredMs !== null)).toBe(true);
    // xping recovers after every move: no run of losses longer than a few intervals.
    expect(Math.max(...report.perMove.map((m) => m.lostPings))).toBeLessThan(10);
    expect(report.perMove.map((m) => `${m.from}${m.to}`).slice(0, 3)).toEqual(['AB', 'BA', 'AB']);
  }, 60_000);
});

describe('a move with the VM off the network for a stop-and-copy pause', () => {
  it('counts the pings lost in the pause as downtime, in the order sent, and keeps the Goldbach STREAM', async () => {
    const pauseMs = 200;
    // After the last move: every run of lost pings in the order sent, how many, and the
    // time from the first of them to the next ping that got through (timer drift under
    // load changes the count, not the time).
    const moves = 3;
    const runs: Array<{ count: number; ms: number }> = [];
    const afterMove = async (t: RunningTestbed, figures: MoveFigures): Promise<void> => {
      if (figures.move < moves) return;
      const end = t.pings.length;
      await t.pingsSettled(end);
      const pings = t.pings.slice(0, end);
      for (let i = 0; i < pings.length; i++) {
        if (pings[i]!.rtt !== undefined) continue;
        let next = i;
        while (next < pings.length && pings[next]!.rtt === undefined) next++;
        if (next < pings.length) runs.push({ count: next - i, ms: pings[next]!.sentAt - pings[i]!.sentAt });
        i = next;
      }
    };
    const report = await runMigrationTestbed({ topology: 'inter-ad', moves, pauseMs, settleMs: 120, afterMove });
    expect(report.brokenConnections).toBe(0);
    // One run per move, the one the report counts, and each spans the whole pause.
    expect(runs.map((r) => r.count)).toEqual(report.perMove.map((m) => m.lostPings));
    for (const run of runs) expect(run.ms).toBeGreaterThanOrEqual(pauseMs - 20);
  }, 30_000);
});
