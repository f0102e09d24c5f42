/**
 * Issue 14's floods, in the in-process testbed with every part running (agent, the
 * plugin on every router, the name server): before the second move, 100,000 bad notices,
 * 5,000 fresh keys (as notices and as host registrations) and 3,000 squatted names. The
 * state each part holds stays within its bounds, the process within a stated RSS, and the
 * move after the flood still rewrites every router and re-registers the name.
 */
import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { Dag } from '../shared/dag.js';
import { Identity } from '../shared/identity.js';
import { encodeMobility, MobilityType } from '../shared/mobility-message.js';
import { sealMoveNotice, type MoveNotice } from '../shared/move-notice.js';
import { WellKnownSid, XidType } from '../shared/xid.js';
import { encodeXip, NextHeader } from '../shared/xip-header.js';
import { LocalNodeApi } from '../xianet/api/local-api.js';
import { MemoryLink } from '../xianet/memory-link.js';
import { sealNameRecord } from '../xianet/names/name-record.js';
import { encodeNsMessage, NsType } from '../xianet/names/xns-message.js';
import type { RunningTestbed } from '../xianet/testbed.js';
import { TransportType } from '../xianet/transport-header.js';
import { encodeHostRegister } from '../xianet/xroute-message.js';
import { runMigrationTestbed, type MigrationParts } from './migration.js';

const MB = 1024 * 1024;
/** What the flooded testbed process may grow by (measured: see bench/README.md, hardening). */
const RSS_GROWTH_BOUND = 200 * MB;

/** Yields to the event loop every `batch` sends, so the in-process network drains as it goes. */
async function inBatches(count: number, batch: number, send: (i: number) => void): Promise<void> {
  for (let i = 0; i < count; i++) {
    send(i);
    if (i % batch === batch - 1) await new Promise((r) => setImmediate(r));
  }
}

interface FloodFigures {
  rssBeforeMb: number;
  rssAfterMb: number;
  r1HidRoutes: number;
  r2HidRoutes: number;
  pluginHids: number[];
  names: number;
  /** Names the testbed itself had registered before the flood (the VM's). */
  namesBefore: number;
  refusals: Record<string, number>;
  phaseMs: Record<string, number>;
}

async function flood(t: RunningTestbed, parts: MigrationParts): Promise<FloodFigures> {
  const net = t.network;
  const [r1, r2, vm] = ['R1', 'R2', 'VM'].map((n) => net.stack(n).node);
  const attacker = await new LocalNodeApi(net.stack('C')).bindDatagram();
  const rssBefore = process.memoryUsage().rss;
  const namesBefore = t.nameServer.store.size;
  const phaseMs: Record<string, number> = {};
  let mark = performance.now();
  const phase = (name: string): void => {
    phaseMs[name] = Math.round(performance.now() - mark);
    mark = performance.now();
  };
  try {
    const toR1 = Dag.chain(r1!.hid, WellKnownSid.MOBILITY);
    const toR2 = Dag.chain(r2!.hid, WellKnownSid.MOBILITY);
    const notice = (identity: Identity, seq: number, hid = identity.xid(XidType.HID)): Buffer =>
      sealMoveNotice(
        {
          hid,
          newAd: r2!.ad!,
          newRouterHid: r2!.hid,
          newLinkId: `${r2!.hid.id.toString('hex', 0, 8)}/0`,
          oldAd: r1!.ad!,
          oldRouterHid: r1!.hid,
          oldLinkId: `${r1!.hid.id.toString('hex', 0, 8)}/0`,
          seq,
          timestamp: Date.now(),
        } satisfies MoveNotice,
        identity,
      );
    // 1. 100,000 bad notices: junk, forged for the VM's HID, captured-and-replayed, truncated, bit-flipped.
    const thief = Identity.generate();
    const forged = notice(thief, Date.now() + 1e9, vm!.hid);
    const captured = notice(vm!.identity, 1); // an old notice of the VM (seq 1, long superseded)
    await inBatches(100_000, 500, (i) => {
      let bytes: Buffer;
      switch (i % 5) {
        case 0:
          bytes = randomBytes(40 + (i % 300));
          break;
        case 1:
          bytes = forged;
          break;
        case 2:
          bytes = captured;
          break;
        case 3:
          bytes = forged.subarray(0, i % forged.length);
          break;
        default:
          bytes = Buffer.from(captured);
          bytes[i % bytes.length]! ^= 1 << (i % 8);
      }
      void attacker.send(i % 2 ? toR1 : toR2, encodeMobility(i % 3 ? MobilityType.NOTICE : MobilityType.FORWARDED, bytes)).catch(() => undefined);
    });
    phase('badNotices');
    // 2. 5,000 fresh keys: each a genuine notice of its own HID "moving" to R2, and a host
    //    registration with R1 on host A's segment.
    const segA = new MemoryLink('flood-a', { segment: net.segment('seg-A') });
    const keys = Array.from({ length: 5000 }, () => Identity.generate());
    await inBatches(5000, 100, (i) => {
      const key = keys[i]!;
      void attacker.send(toR2, encodeMobility(MobilityType.NOTICE, notice(key, 1))).catch(() => undefined);
      const register = encodeHostRegister(
        { hid: key.xid(XidType.HID), gatewayHid: r1!.hid, ad: r1!.ad!, linkId: '', seq: 1, timestamp: Date.now() },
        key,
      );
      segA.broadcast(
        encodeXip({
          dst: Dag.chain(r1!.hid, WellKnownSid.XROUTE),
          src: Dag.chain(key.xid(XidType.HID), WellKnownSid.XROUTE),
          nextHeader: NextHeader.TRANSPORT,
          payload: Buffer.concat([Buffer.of(TransportType.DGRAM), register]),
        }),
      );
    });
    phase('freshKeys');
    // 3. 3,000 names: one squatter's key, then 3,000 keys of one name each.
    const squatter = Identity.generate();
    const ns = await t.nameServer.address();
    const dag = net.stack('C').node.address();
    await inBatches(6000, 200, (i) => {
      const owner = i < 3000 ? squatter : keys[i - 3000]!;
      const name = `squat-${i}`;
      const record = sealNameRecord({ name, dag, seq: 1, timestamp: Date.now(), migrated: false }, owner);
      void attacker.send(ns, encodeNsMessage({ type: NsType.REGISTER, flags: 0, name, dag: dag.toDagString(), record, requestId: i + 1 })).catch(() => undefined);
    });
    phase('names');
    // Let everything queued be handled before measuring.
    for (let i = 0; i < 50; i++) await new Promise((r) => setImmediate(r));
    await new Promise((r) => setTimeout(r, 500));
    const hidRoutes = (node: typeof r1): number => node!.routes.table(XidType.HID).list().length;
    const refusals: Record<string, number> = {};
    for (const [i, plugin] of parts.plugins.entries()) for (const [k, v] of Object.entries(plugin.refusals.snapshot())) if (v) refusals[`plugin${i}:${k}`] = v;
    for (const [k, v] of Object.entries(t.nameServer.refusals.snapshot())) if (v) refusals[`nameserver:${k}`] = v;
    for (const [k, v] of Object.entries(net.stack('R1').xroute.refusals.snapshot())) if (v) refusals[`R1 xroute:${k}`] = v;
    return {
      rssBeforeMb: Math.round(rssBefore / MB),
      rssAfterMb: Math.round(process.memoryUsage().rss / MB),
      r1HidRoutes: hidRoutes(r1),
      r2HidRoutes: hidRoutes(r2),
      pluginHids: parts.plugins.map((p) => p.hids),
      names: t.nameServer.store.size,
      namesBefore,
      refusals,
      phaseMs,
    };
  } finally {
    await attacker.close();
  }
}

describe('floods', () => {
  it('100k bad notices, 5,000 fresh keys, 3,000 names: state bounded, RSS bounded, the next move still converges', async () => {
    let figures: FloodFigures | undefined;
    const report = await runMigrationTestbed({
      topology: 'inter-ad',
      moves: 2,
      settleMs: 200,
      beforeMove: async (t, move, parts) => {
        if (move === 2) figures = await flood(t, parts);
      },
    });
    process.stdout.write(`flood figures: ${JSON.stringify({ figures, perMove: report.perMove })}\n`);
    expect(figures).toBeDefined();
    const f = figures!;
    // Bounds: a plugin admits new HIDs at 100/s per router (burst 200), R1's registrations at
    // 20/s per link (burst 50), over however long the flood took (slower on a busy machine),
    // so some hundreds, not 5,000 (the issue measured 975 HID routes on R1).
    const floodSeconds = (f.phaseMs['badNotices']! + f.phaseMs['freshKeys']! + f.phaseMs['names']!) / 1000 + 1;
    const pluginBound = 200 + 100 * floodSeconds;
    for (const hids of f.pluginHids) expect(hids).toBeLessThanOrEqual(Math.min(pluginBound, 4000));
    expect(f.r1HidRoutes).toBeLessThanOrEqual(Math.min(pluginBound + 50 + 20 * floodSeconds + 10, 4500));
    expect(f.r2HidRoutes).toBeLessThanOrEqual(Math.min(pluginBound + 10, 4500));
    // One key holds at most 64 names (and registers at 20/s); new names come in at 200/s (burst 500).
    // (Beside the names the testbed had before: 3,065 = the VM's + 64 + 3,000 failed this once.)
    expect(f.names - f.namesBefore).toBeLessThanOrEqual(Math.min(500 + 200 * floodSeconds, 64 + 3000));
    expect(f.rssAfterMb - f.rssBeforeMb).toBeLessThan(RSS_GROWTH_BOUND / MB);
    expect(Object.keys(f.refusals).length).toBeGreaterThan(3);
    // And the genuine move after the flood converged: every router rewritten, the name re-registered.
    expect(report.brokenConnections).toBe(0);
    for (const move of report.perMove) {
      expect(move.moveToRewrittenMs, `move ${move.move}`).not.toBeNull();
      expect(move.moveToRegisteredMs, `move ${move.move}`).not.toBeNull();
    }
  }, 300_000);
});
