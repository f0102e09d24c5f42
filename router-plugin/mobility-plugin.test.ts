/**
 * The plugin against forged, replayed, reordered and junk notices: none of them may
 * touch a route, and a genuine move sent in the middle of a flood still converges.
 */
import { randomBytes } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { Dag } from '../shared/dag.js';
import { Identity } from '../shared/identity.js';
import { encodeMobility, MobilityType } from '../shared/mobility-message.js';
import { sealMoveNotice, type MoveNotice } from '../shared/move-notice.js';
import { WellKnownSid, XidType } from '../shared/xid.js';
import { LocalNodeApi } from '../xianet/api/local-api.js';
import type { DatagramSocket } from '../xianet/api/node-api.js';
import { LocalRoutes } from '../xianet/local-routes.js';
import { InProcessNetwork, INTER_AD } from '../xianet/topology.js';
import { MobilityPlugin } from './mobility-plugin.js';

let network: InProcessNetwork | undefined;
const closers: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c();
  await network?.stop();
  network = undefined;
});

async function setup() {
  network = new InProcessNetwork(INTER_AD, { beaconIntervalMs: 50, helloIntervalMs: 200 });
  await network.start();
  await network.ready();
  const net = network;
  const plugins = new Map<string, MobilityPlugin>();
  for (const name of ['R1', 'R2']) {
    const stack = net.stack(name);
    const plugin = new MobilityPlugin({ api: new LocalNodeApi(stack), routes: new LocalRoutes(stack.node), identity: stack.node.identity });
    await plugin.start();
    closers.push(() => plugin.stop());
    plugins.set(name, plugin);
  }
  const vm = net.stack('VM').node;
  const r1 = net.stack('R1');
  const r2 = net.stack('R2');
  // The VM moves from A's segment (AD1, R1 port 0) to B's (AD2, R2 port 0).
  const genuine = (seq: number, identity: Identity = vm.identity, hid = vm.hid): Buffer =>
    sealMoveNotice(
      {
        hid,
        newAd: r2.node.ad!,
        newRouterHid: r2.node.hid,
        newLinkId: r2.beacons!.linkId(0),
        oldAd: r1.node.ad!,
        oldRouterHid: r1.node.hid,
        oldLinkId: r1.beacons!.linkId(0),
        seq,
        timestamp: Date.now(),
      } satisfies MoveNotice,
      identity,
    );
  // An attacker on host C's segment, sending to R1 (which it can reach), and a sender on R2's VM link.
  const attacker: DatagramSocket = await new LocalNodeApi(net.stack('C')).bindDatagram();
  closers.push(() => attacker.close());
  net.move('VM', 'seg-B');
  await new Promise((r) => setTimeout(r, 200));
  const vmSocket: DatagramSocket = await new LocalNodeApi(net.stack('VM')).bindDatagram();
  closers.push(() => vmSocket.close());
  const toR1 = Dag.chain(r1.node.hid, WellKnownSid.MOBILITY);
  const toR2 = Dag.chain(r2.node.hid, WellKnownSid.MOBILITY);
  const snapshot = (): string =>
    ['R1', 'R2']
      .map((n) => {
        const route = net.stack(n).node.routes.route(vm.hid);
        return `${n}:${route?.port},${route?.nextHop?.short},${route?.origin}`;
      })
      .join(' ');
  const settle = (): Promise<void> => new Promise((r) => setTimeout(r, 60));
  return { net, plugins, vm, r1, r2, genuine, attacker, vmSocket, toR1, toR2, snapshot, settle };
}

const notice = (sealed: Buffer): Buffer => encodeMobility(MobilityType.NOTICE, sealed);

describe('router plugin security', () => {
  it('accepts a genuine notice: R2 routes the VM locally, R1 points it at R2', async () => {
    const s = await setup();
    await s.vmSocket.send(s.toR2, notice(s.genuine(10)));
    await s.settle();
    expect(s.r2.node.routes.route(s.vm.hid)).toMatchObject({ port: 0, origin: 'mobility' });
    expect(s.r1.node.routes.route(s.vm.hid)?.nextHop?.equals(s.r2.node.hid)).toBe(true);
  });

  it('rejects forged notices, replays and reordered ones without touching a route', async () => {
    const s = await setup();
    await s.vmSocket.send(s.toR2, notice(s.genuine(10)));
    await s.settle();
    const before = s.snapshot();
    const thief = Identity.generate();
    // 1. Signed by another key, claiming the VM's HID.
    await s.attacker.send(s.toR1, notice(s.genuine(20, thief)));
    // 2. The VM's genuine notice with another key swapped in.
    const swapped = s.genuine(21);
    thief.publicKey.copy(swapped, 2);
    await s.attacker.send(s.toR1, notice(swapped));
    // 3. A replay of the accepted notice's older sibling, and 4. a lower sequence after a higher one.
    await s.attacker.send(s.toR1, notice(s.genuine(9)));
    await s.attacker.send(s.toR2, notice(s.genuine(5)));
    // 5. A notice for a HID whose key it is not (a HID made up, signed by the thief).
    await s.attacker.send(s.toR1, notice(s.genuine(30, thief, Identity.generate().xid(XidType.HID))));
    await s.settle();
    expect(s.snapshot()).toBe(before);
    const rejected = { ...s.plugins.get('R1')!.stats.rejected, ...s.plugins.get('R2')!.stats.rejected };
    expect(rejected['key-mismatch']).toBeGreaterThanOrEqual(1);
    expect(rejected['bad-signature']).toBeGreaterThanOrEqual(1);
    expect(rejected['old-sequence']).toBeGreaterThanOrEqual(1);
    // And the exact accepted notice sent again changes nothing either (it is only re-acknowledged).
    await s.vmSocket.send(s.toR2, notice(s.genuine(10)));
    await s.settle();
    expect(s.snapshot()).toBe(before);
  });

  it('leaves routes untouched by 10,000 junk datagrams while a genuine move sent during the flood converges', async () => {
    const s = await setup();
    const before = s.snapshot();
    const r2Plugin = s.plugins.get('R2')!;
    let sent = 0;
    const flood = (async () => {
      while (sent < 10_000) {
        for (let i = 0; i < 250; i++, sent++) {
          const junk = randomBytes(40 + (sent % 200));
          if (sent % 3 === 0) junk[0] = MobilityType.NOTICE;
          void s.attacker.send(sent % 2 ? s.toR1 : s.toR2, junk);
        }
        await new Promise((r) => setImmediate(r));
      }
    })();
    await new Promise((r) => setTimeout(r, 5));
    expect(s.snapshot()).toBe(before);
    await s.vmSocket.send(s.toR2, notice(s.genuine(100)));
    await flood;
    const deadline = Date.now() + 3000;
    while (!s.r1.node.routes.route(s.vm.hid)?.nextHop?.equals(s.r2.node.hid) && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 10));
    }
    expect(s.r1.node.routes.route(s.vm.hid)?.nextHop?.equals(s.r2.node.hid)).toBe(true);
    expect(s.r2.node.routes.route(s.vm.hid)).toMatchObject({ port: 0, origin: 'mobility' });
    expect(sent).toBe(10_000);
    expect((r2Plugin.stats.rejected.malformed ?? 0) + (s.plugins.get('R1')!.stats.rejected.malformed ?? 0)).toBeGreaterThan(1000);
    expect(r2Plugin.stats.accepted).toBe(1);
  });
});
