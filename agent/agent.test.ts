import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { Identity } from '../shared/identity.js';
import { BROADCAST_HID, WellKnownSid, Xid, XidType } from '../shared/xid.js';
import { Dag } from '../shared/dag.js';
import { MobilityPlugin } from '../router-plugin/mobility-plugin.js';
import { LocalNodeApi } from '../xianet/api/local-api.js';
import { LocalRoutes } from '../xianet/local-routes.js';
import { MemoryLink } from '../xianet/memory-link.js';
import { NameClient } from '../xianet/names/name-client.js';
import { NameServer } from '../xianet/names/name-server.js';
import { InProcessNetwork, INTER_AD, INTRA_AD, type Topology } from '../xianet/topology.js';
import { encodeBeacon } from '../xianet/xhcp.js';
import { encodeXip, NextHeader } from '../shared/xip-header.js';
import { TransportType } from '../xianet/transport-header.js';
import { Agent, type MoveRecord } from './agent.js';

const dir = mkdtempSync(join(tmpdir(), 'xmig-agent-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
let network: InProcessNetwork | undefined;
const closers: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c();
  await network?.stop();
  network = undefined;
});

const SERVICE = Xid.random(XidType.SID);

async function setup(topology: Topology) {
  network = new InProcessNetwork(topology, { beaconIntervalMs: 50, helloIntervalMs: 200 });
  await network.start();
  await network.ready();
  const net = network;
  const db = join(dir, `${Math.random()}.json`);
  let nameServer: NameServer | undefined;
  const startNameServer = async (): Promise<Dag> => {
    nameServer = new NameServer(new LocalNodeApi(net.stack('A')), { databaseFile: db });
    await nameServer.start();
    const address = await nameServer.address();
    for (const stack of net.stacks.values()) if (stack.beacons) stack.beacons.nameServer = address;
    return address;
  };
  const nameServerDag = await startNameServer();
  closers.push(() => nameServer!.stop());
  for (const stack of net.stacks.values()) {
    if (stack.node.role !== 'router') continue;
    const plugin = new MobilityPlugin({ api: new LocalNodeApi(stack), routes: new LocalRoutes(stack.node), identity: stack.node.identity });
    await plugin.start();
    closers.push(() => plugin.stop());
  }
  const vm = net.stack('VM');
  const agent = new Agent({
    api: new LocalNodeApi(vm),
    routes: new LocalRoutes(vm.node, 'control'),
    identity: vm.node.identity,
    names: [{ name: 'svc.vm', sid: SERVICE }],
    stateFile: join(dir, `${Math.random()}.state`),
    nameServer: nameServerDag,
    resume: false,
    schedules: { refresh: false, reannounce: false, health: false },
    hostFacts: false,
    retry: { registerMs: 50, maxMs: 200 },
  });
  await agent.start();
  closers.push(() => agent.stop());
  const resolve = async (): Promise<Dag> => {
    const client = new NameClient(new LocalNodeApi(net.stack('C')), { nameServer: nameServerDag, timeoutMs: 500 });
    try {
      return (await client.resolve('svc.vm')).dag;
    } finally {
      await client.close();
    }
  };
  const nextMove = (): Promise<MoveRecord> => new Promise((r) => agent.onMove(r));
  return { net, agent, vm, resolve, nextMove, stopNameServer: () => nameServer!.stop(), startNameServer };
}

describe('the agent', () => {
  it.each([
    ['intra-AD', INTRA_AD, 'intra-ad'],
    ['inter-AD', INTER_AD, 'inter-ad'],
  ] as const)('perceives an %s move, re-registers the name, notifies the new gateway', async (_, topology, kind) => {
    const s = await setup(topology);
    await new Promise((r) => setTimeout(r, 100));
    expect((await s.resolve()).find(XidType.AD)?.equals(s.net.stack('R1').node.ad!)).toBe(true);
    const moved = s.nextMove();
    const started = performance.now();
    s.net.move('VM', 'seg-B');
    const move = await moved;
    const elapsed = performance.now() - started;
    expect(move.kind).toBe(kind);
    const newAd = s.vm.node.ad!;
    expect((await s.resolve()).equals(Dag.hostAddress(newAd, s.vm.node.hid, SERVICE))).toBe(true);
    expect(move.noticeAckedMs).not.toBeUndefined();
    // Acknowledged by the new gateway, which routes the VM's HID straight to the VM's link.
    const gateway = s.net.stack(kind === 'inter-ad' ? 'R2' : 'R1').node;
    const route = gateway.routes.route(s.vm.node.hid);
    expect(route?.nextHop?.equals(s.vm.node.hid)).toBe(true);
    expect(route?.port).toBe(kind === 'inter-ad' ? 0 : 1);
    process.stdout.write(`${kind} move: perceived → registered ${move.registeredMs} ms, → notice acked ${move.noticeAckedMs} ms, move → done ${elapsed.toFixed(1)} ms\n`);
  });

  it('does not take a stray beacon from another AD on its link for a move', async () => {
    const s = await setup(INTER_AD);
    await new Promise((r) => setTimeout(r, 100));
    const rogueAd = Identity.generate();
    const rogue = new MemoryLink('rogue', { segment: s.net.segment('seg-A') });
    const beacon = encodeBeacon({ seq: 1, ad: rogueAd.xid(XidType.AD), gatewayHid: Identity.generate().xid(XidType.HID), timestamp: Date.now(), linkId: 'ff/0' }, rogueAd);
    const packet = encodeXip({
      dst: Dag.chain(BROADCAST_HID, WellKnownSid.XHCP),
      src: Dag.chain(Identity.generate().xid(XidType.HID)),
      nextHeader: NextHeader.TRANSPORT,
      payload: Buffer.concat([Buffer.of(TransportType.DGRAM), beacon]),
    });
    for (let i = 0; i < 3; i++) {
      rogue.broadcast(Buffer.from(packet));
      await new Promise((r) => setTimeout(r, 20));
    }
    await new Promise((r) => setTimeout(r, 100));
    expect(s.agent.moves).toEqual([]);
    expect(s.agent.stats.strayBeacons).toBeGreaterThanOrEqual(3);
    expect(s.vm.node.ad?.equals(s.net.stack('R1').node.ad!)).toBe(true);
  });

  it('finishes registering once a name server that was down during the move comes back, without a restart', async () => {
    const s = await setup(INTER_AD);
    await new Promise((r) => setTimeout(r, 100));
    await s.stopNameServer();
    const moved = s.nextMove();
    s.net.move('VM', 'seg-B');
    await new Promise((r) => setTimeout(r, 1500));
    expect(s.agent.stats.registrationFailures).toBeGreaterThan(0);
    await s.startNameServer();
    const move = await moved;
    expect(move.registeredMs).toBeGreaterThan(1500);
    expect((await s.resolve()).find(XidType.AD)?.equals(s.net.stack('R2').node.ad!)).toBe(true);
  });
});
