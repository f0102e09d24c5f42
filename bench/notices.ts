/**
 * Verified HID-move notices per second through one router plugin: genuine notices
 * (signed in advance) from many VMs, sent over a memory link to the router's
 * mobility SID; each is verified (Ed25519) and turned into a route rewrite.
 */
import { Dag } from '../shared/dag.js';
import { Identity } from '../shared/identity.js';
import { encodeMobility, MobilityType } from '../shared/mobility-message.js';
import { sealMoveNotice } from '../shared/move-notice.js';
import { WellKnownSid, XidType } from '../shared/xid.js';
import { MobilityPlugin } from '../router-plugin/mobility-plugin.js';
import { LocalNodeApi } from '../xianet/api/local-api.js';
import { LocalRoutes } from '../xianet/local-routes.js';
import { InProcessNetwork, INTRA_AD } from '../xianet/topology.js';

export interface NoticeResult {
  bench: 'notices';
  budget: string;
  notices: number;
  seconds: number;
  acceptedPerSecond: number;
  rejected: number;
}

async function run(count: number, verificationsPerSecond: number | undefined): Promise<NoticeResult> {
  const network = new InProcessNetwork(INTRA_AD, { beaconIntervalMs: 100, helloIntervalMs: 1000 });
  await network.start();
  await network.ready();
  const r1 = network.stack('R1');
  const plugin = new MobilityPlugin({
    api: new LocalNodeApi(r1),
    routes: new LocalRoutes(r1.node),
    identity: r1.node.identity,
    verifier: verificationsPerSecond === undefined ? { verificationsPerSecond: 1e9, burst: 1e9 } : { verificationsPerSecond },
  });
  await plugin.start();
  const vms = Array.from({ length: 64 }, () => Identity.generate());
  const link = r1.beacons!.linkId(2);
  const notices = Array.from({ length: count }, (_, i) => {
    const vm = vms[i % vms.length]!;
    return encodeMobility(
      MobilityType.NOTICE,
      sealMoveNotice(
        { hid: vm.xid(XidType.HID), newAd: r1.node.ad!, newRouterHid: r1.node.hid, newLinkId: link, oldAd: r1.node.ad!, oldRouterHid: r1.node.hid, oldLinkId: link, seq: i + 1, timestamp: Date.now() },
        vm,
      ),
    );
  });
  const socket = await new LocalNodeApi(network.stack('C')).bindDatagram();
  const dst = Dag.chain(r1.node.hid, WellKnownSid.MOBILITY);
  const started = performance.now();
  for (let i = 0; i < notices.length; i++) {
    await socket.send(dst, notices[i]!);
    if (i % 64 === 63) await new Promise((r) => setImmediate(r));
  }
  const deadline = started + 30_000;
  while (plugin.stats.accepted + Object.values(plugin.stats.rejected).reduce((a, b) => a + b, 0) < count && performance.now() < deadline) {
    await new Promise((r) => setTimeout(r, 5));
  }
  const seconds = (performance.now() - started) / 1000;
  await plugin.stop();
  await network.stop();
  return {
    bench: 'notices',
    budget: verificationsPerSecond === undefined ? 'unlimited' : `${verificationsPerSecond}/s per link`,
    notices: count,
    seconds: Math.round(seconds * 1000) / 1000,
    acceptedPerSecond: Math.round(plugin.stats.accepted / seconds),
    rejected: Object.values(plugin.stats.rejected).reduce((a, b) => a + b, 0),
  };
}

export async function runNoticeBench(): Promise<NoticeResult[]> {
  return [await run(5000, undefined)];
}
