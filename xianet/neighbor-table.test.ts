import { describe, expect, it } from 'vitest';
import { Identity } from '../shared/identity.js';
import { XidType } from '../shared/xid.js';
import { NeighborTable } from './neighbor-table.js';

const hid = Identity.generate().xid(XidType.HID);

describe('NeighborTable', () => {
  it('keeps the longest hold granted: a hello does not cut short what a registration granted', () => {
    const table = new NeighborTable();
    expect(table.learn({ hid, port: 0, address: 'a', role: 'host', expiresAt: 60_000 })).toEqual({ isNew: true, moved: false });
    expect(table.learn({ hid, port: 0, address: 'b', role: 'host', expiresAt: 3_500 })).toEqual({ isNew: false, moved: true });
    expect(table.get(0, hid)).toMatchObject({ address: 'b', expiresAt: 60_000 });
    expect(table.expire(59_999)).toEqual([]);
    expect(table.addressOf(0, hid)).toBe('b');
    expect(table.expire(60_000).map((n) => n.address)).toEqual(['b']);
    expect(table.addressOf(0, hid)).toBeUndefined();
  });

  it('extends a hold, and holds each port on its own', () => {
    const table = new NeighborTable();
    table.learn({ hid, port: 0, address: 'a', expiresAt: 1_000 });
    table.learn({ hid, port: 0, address: 'a', expiresAt: 2_000 });
    table.learn({ hid, port: 1, address: 'c', expiresAt: 500 });
    expect(table.expire(1_000).map((n) => n.port)).toEqual([1]);
    expect(table.portsOf(hid)).toEqual([0]);
    expect(table.expire(2_000)).toHaveLength(1);
  });
});
