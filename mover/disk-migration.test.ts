import { describe, expect, it } from 'vitest';
import { Dag } from '../shared/dag.js';
import { WellKnownSid, Xid } from '../shared/xid.js';
import { diskTargetAddress } from './disk-migration.js';

describe('diskTargetAddress', () => {
  const ad = Xid.parse('AD:1000000000000000000000000000000000000001');
  const hid = Xid.parse('HID:2000000000000000000000000000000000000002');

  it('is the receiver\'s host on the disk SID, the AD and fallback kept', () => {
    expect(diskTargetAddress(Dag.hostAddress(ad, hid, WellKnownSid.MIGRATION)).equals(Dag.hostAddress(ad, hid, WellKnownSid.DISK))).toBe(true);
    expect(diskTargetAddress(Dag.hostAddress(ad, hid)).equals(Dag.hostAddress(ad, hid, WellKnownSid.DISK))).toBe(true);
  });
});
