import { afterEach, describe, expect, it } from 'vitest';
import { Identity } from '../shared/identity.js';
import { XidType } from '../shared/xid.js';
import { InProcessNetwork, INTRA_AD, type Topology } from './topology.js';
import { encodeBeacon, decodeXhcp } from './xhcp.js';

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
    await new Promise((r) => setTimeout(r, 300));
    expect(a.node.ad?.equals(ad1.xid(XidType.AD))).toBe(true);
    expect(a.join!.stats.rejected).toBeGreaterThan(0);
    expect(a.join!.stats.changes).toBe(1);
  });
});
