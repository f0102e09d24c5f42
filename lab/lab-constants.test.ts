import { isIPv6 } from 'node:net';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { isLabMac, linkLocalFromMac } from './lab-constants.js';

describe('the lab VM link-local address', () => {
  it('is the one the kernel makes from the MAC (EUI-64), as seen in a guest', () => {
    // Both read off a booted guest (its agent's agent.host event) and a veth here.
    expect(linkLocalFromMac('52:54:00:12:34:56')).toBe('fe80::5054:ff:fe12:3456');
    expect(linkLocalFromMac('52:54:00:00:00:01')).toBe('fe80::5054:ff:fe00:1');
    expect(linkLocalFromMac('02:00:00:00:00:00')).toBe('fe80::ff:fe00:0');
    expect(linkLocalFromMac('EA:BE:44:25:0F:85')).toBe('fe80::e8be:44ff:fe25:f85');
  });

  it('is a valid IPv6 address in shortest form for every MAC, and refuses what is not a MAC', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 6, maxLength: 6 }), (bytes) => {
        const mac = [...bytes].map((b) => b.toString(16).padStart(2, '0')).join(':');
        const address = linkLocalFromMac(mac);
        expect(isIPv6(address)).toBe(true);
        expect(address.startsWith('fe80::')).toBe(true);
        expect(address).not.toMatch(/(^|:)0[0-9a-f]/);
        expect(isLabMac(mac)).toBe((bytes[0]! & 1) === 0);
      }),
    );
    expect(() => linkLocalFromMac('52:54:00:12:34')).toThrow(/not a MAC/);
    expect(isLabMac('01:00:5e:00:00:01')).toBe(false);
  });
});
