import { describe, expect, it } from 'vitest';
import { BROADCAST_HID, WellKnownSid, Xid, XidType } from './xid.js';
import { AddressError } from './errors.js';

const HEX = '0123456789abcdef0123456789abcdef01234567';

describe('Xid', () => {
  it('parses and prints the text form, case-insensitively, printing lowercase', () => {
    const xid = Xid.parse(`hid:${HEX.toUpperCase()}`);
    expect(xid.type).toBe(XidType.HID);
    expect(xid.toString()).toBe(`HID:${HEX}`);
  });

  it('reads 4ID as the IP principal', () => {
    expect(Xid.parse(`4ID:${HEX}`).type).toBe(XidType.IP);
  });

  it('round-trips the 24-byte wire form with a big-endian type', () => {
    const xid = Xid.parse(`SID:${HEX}`);
    const wire = xid.toWire();
    expect(wire.length).toBe(24);
    expect(wire.readUInt32BE(0)).toBe(0x13);
    expect(Xid.read(wire).equals(xid)).toBe(true);
    expect(xid.matches(wire, 0)).toBe(true);
  });

  it.each([
    ['no colon', 'HID0123'],
    ['unknown type', `FOO:${HEX}`],
    ['short id', 'AD:0123'],
    ['non-hex id', `AD:${'g'.repeat(40)}`],
    ['empty', ''],
  ])('rejects %s with ERR_XID_PARSE', (_, text) => {
    expect(() => Xid.parse(text)).toThrow(AddressError);
    try {
      Xid.parse(text);
    } catch (error) {
      expect((error as AddressError).code).toBe('ERR_XID_PARSE');
    }
  });

  it('rejects reading past the buffer', () => {
    expect(() => Xid.read(Buffer.alloc(23))).toThrow(/runs past/);
  });

  it('has the well-known values of xia-core', () => {
    expect(BROADCAST_HID.toString()).toBe(`HID:${'f'.repeat(40)}`);
    expect(WellKnownSid.XHCP.toString()).toBe('SID:1110000000000000000000000000000000001111');
    expect(WellKnownSid.XROUTE.toString()).toBe('SID:1110000000000000000000000000000000001112');
    expect(WellKnownSid.NAME_SERVER.toString()).toBe('SID:1110000000000000000000000000000000001113');
  });

  it('hashes content to a CID with SHA-1', () => {
    const cid = Xid.hashOf(XidType.CID, Buffer.from('abc'));
    expect(cid.toString()).toBe('CID:a9993e364706816aba3e25717850c26c9cd0d89d');
  });
});
