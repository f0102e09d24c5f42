import { afterEach, describe, expect, it } from 'vitest';
import { Identity } from '../shared/identity.js';
import { XidType } from '../shared/xid.js';
import { InProcessNetwork, INTRA_AD, type Topology } from './topology.js';
import { encodeBeacon, decodeXhcp } from './xhcp.js';
import { Dag } from '../shared/dag.js';
import { WellKnownSid } from '../shared/xid.js';
import { encodeXip, NextHeader } from '../shared/xip-header.js';
import { MemoryLink } from './memory-link.js';
import { TransportType } from './transport-header.js';
import { encodeHostRegister } from './xroute-message.js';

let network: InProcessNetwork | undefined;
afterEach(async () => {
  await network?.stop();
  network = undefined;
});

/** R1 with host A, and a rogue router on A's segment. */
const WITH_ROGUE: Topology = {
  ...INTRA_AD,
  ads: ['AD1', 'EVIL'],
  nodes: [
    ...INTRA_AD.nodes,
    { name: 'ROGUE', role: 'router', ad: 'EVIL', interfaces: [{ segment: 'seg-A', hostFacing: true }] },
  ],
};

describe('beacons', () => {
  it('are signed by the AD key and verified; tampering breaks them', () => {
    const ad = Identity.generate();
    const beacon = { seq: 7, ad: ad.xid(XidType.AD), gatewayHid: Identity.generate().xid(XidType.HID), timestamp: 1, linkId: 'r/0' };
    const signed = encodeBeacon(beacon, ad);
    const decoded = decodeXhcp(signed);
    expect(decoded.kind === 'beacon' && decoded.beacon.authenticated).toBe(true);
    const tampered = Buffer.from(signed);
    tampered[tampered.indexOf('r/0') + 2] = '1'.charCodeAt(0); // the link id says another interface
    const bad = decodeXhcp(tampered);
    expect(bad.kind === 'beacon' && bad.beacon.authenticated).toBe(false);
    // signed by a key that is not the AD's: not authentic either
    const other = encodeBeacon(beacon, Identity.generate());
    const wrong = decodeXhcp(other);
    expect(wrong.kind === 'beacon' && wrong.beacon.authenticated).toBe(false);
    expect(decodeXhcp(encodeBeacon(beacon)).kind).toBe('beacon');
  });

  it('a host that pins its AD ignores a rogue router on its segment', async () => {
    const ad1 = Identity.generate();
    network = new InProcessNetwork(WITH_ROGUE, {
      beaconIntervalMs: 30,
      helloIntervalMs: 200,
      identities: new Map([['AD1', ad1]]),
      stackOptions: (name) => (name === 'A' ? { trustedAds: [ad1.xid(XidType.AD)] } : {}),
    });
    const a = network.stack('A');
    await network.start();
    await expect.poll(() => a.node.ad?.equals(ad1.xid(XidType.AD)) === true && a.join!.stats.rejected > 0).toBe(true);
    expect(a.join!.stats.changes).toBe(1);
  });
});

describe('host registration under a flood of fresh keys', () => {
  // Issue 14: 5,000 self-minted keys put 975 HID routes on R1.
  it('admits new HIDs per link at a rate, keeps registered hosts in an LRU, and genuine hosts still register', async () => {
    network = new InProcessNetwork(INTRA_AD, { beaconIntervalMs: 50, helloIntervalMs: 200 });
    await network.start();
    await network.ready();
    const r1 = network.stack('R1');
    const a = network.stack('A');
    const flood = new MemoryLink('flood', { segment: network.segment('seg-A') });
    const registeredBefore = r1.node.routes.table(XidType.HID).list().filter((r) => r.origin === 'register').length;
    const floodStarted = performance.now();
    for (let i = 0; i < 5000; i++) {
      const key = Identity.generate();
      const register = encodeHostRegister(
        { hid: key.xid(XidType.HID), gatewayHid: r1.node.hid, ad: r1.node.ad!, linkId: r1.beacons!.linkId(0), seq: 1, timestamp: Date.now() },
        key,
      );
      flood.broadcast(
        encodeXip({
          dst: Dag.chain(r1.node.hid, WellKnownSid.XROUTE),
          src: Dag.chain(key.xid(XidType.HID), WellKnownSid.XROUTE),
          nextHeader: NextHeader.TRANSPORT,
          payload: Buffer.concat([Buffer.of(TransportType.DGRAM), register]),
        }),
      );
      if (i % 100 === 99) await new Promise((r) => setImmediate(r));
    }
    const registered = new Promise<void>((resolve) => a.join!.once('registered', () => resolve()));
    a.join!.register();
    await registered;
    const routes = r1.node.routes.table(XidType.HID).list().filter((r) => r.origin === 'register').length;
    // 50 at once and 20 a second per link, over however long the flood took (making 5,000 keys
    // took 28 s at load 20): far fewer than 5,000.
    const admissible = 50 + 20 * ((performance.now() - floodStarted) / 1000 + 1);
    expect(routes - registeredBefore).toBeLessThanOrEqual(Math.min(admissible, 2500));
    expect(r1.xroute.refusals.count('new-hid', 'rate')).toBeGreaterThanOrEqual(5000 - Math.min(admissible, 2500));
    expect(r1.node.routes.route(a.node.hid)?.origin).toBe('register');
  });
});
