import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { XmigError } from '../../shared/errors.js';
import { Identity } from '../../shared/identity.js';
import { Xid, XidType } from '../../shared/xid.js';
import { checkWorkloads, guestCommandLine, MAX_COMMAND_LINE, MAX_DBENCH_CLIENTS, MAX_GUEST_FILES, parseGuestCommandLine, resolveGuestConfig, type GuestConfig } from './guest-config.js';

const key = Identity.generate();
const calKey = Identity.generate();
const hex40 = fc.uint8Array({ minLength: 20, maxLength: 20 }).map((b) => Buffer.from(b));
const name = fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,20}$/);

/** What a config means, with keys as their HIDs (Identity objects do not compare). */
function meaning(config: GuestConfig): unknown {
  const resolved = resolveGuestConfig(config);
  return {
    ...resolved,
    key: resolved.key.xid(XidType.HID).toString(),
    goldbach: resolved.goldbach && { ...resolved.goldbach, key: resolved.goldbach.key.xid(XidType.SID).toString() },
    trustedAds: resolved.trustedAds.map(String),
    names: resolved.names.map((n) => ({ name: n.name, sid: n.sid?.toString() })),
  };
}

const configs: fc.Arbitrary<GuestConfig> = fc.record(
  {
    name,
    key: fc.constant(key),
    port: fc.integer({ min: 1, max: 65535 }),
    group: fc.constantFrom('ff02::c0de', 'ff02::1:2', 'ff02::abcd'),
    mtu: fc.integer({ min: 1280, max: 9000 }),
    logLevel: fc.constantFrom('error', 'warn', 'info', 'debug'),
    trustedAds: fc.array(hex40.map((b) => Xid.of(XidType.AD, b)), { minLength: 1, maxLength: 3 }),
    goldbach: fc.record({ key: fc.constant(calKey), name, tcpPort: fc.integer({ min: 1, max: 65535 }) }, { requiredKeys: ['key'] }),
    names: fc.array(fc.record({ name, sid: hex40.map((b) => Xid.of(XidType.SID, b)) }, { requiredKeys: ['name'] }), { minLength: 1, maxLength: 3 }),
    ipv4: fc.tuple(fc.ipV4(), fc.integer({ min: 1, max: 32 })).map(([a, l]) => `${a}/${l}`),
    gateway4: fc.ipV4(),
    nodeMetricsPort: fc.integer({ min: 1, max: 65535 }),
    agentMetricsPort: fc.integer({ min: 1, max: 65535 }),
    controlPort: fc.integer({ min: 1, max: 65535 }),
    files: fc.integer({ min: 1, max: MAX_GUEST_FILES }),
    dbench: fc.integer({ min: 1, max: MAX_DBENCH_CLIENTS }),
    iperf3: fc.integer({ min: 1, max: 65535 }),
  },
  { requiredKeys: ['name', 'key'] },
);

describe("the guest's kernel command line", () => {
  it('carries the name, the key and the defaults in a few hundred bytes', () => {
    const line = guestCommandLine({ name: 'vm1', key, goldbach: { key: calKey, name: 'goldbach.vm', tcpPort: 4000 }, ipv4: '10.0.0.2/24' });
    expect(line).toMatch(/^console=ttyS0 .* xmig\.name=vm1 xmig\.key=[A-Za-z0-9_-]{64} /);
    expect(line).toContain(`xmig.names=goldbach.vm@${calKey.xid(XidType.SID).id.toString('hex')}`);
    expect(line.length).toBeLessThan(600);
    expect(meaning(parseGuestCommandLine(line))).toEqual(meaning({ name: 'vm1', key, goldbach: { key: calKey, name: 'goldbach.vm', tcpPort: 4000 }, ipv4: '10.0.0.2/24' }));
  });

  it('reads back every config it writes, and stays under the kernel limit', () => {
    fc.assert(
      fc.property(configs, (config) => {
        const line = guestCommandLine(config);
        expect(line.length).toBeLessThanOrEqual(MAX_COMMAND_LINE);
        expect(line).not.toMatch(/["'$\\`]/);
        expect(meaning(parseGuestCommandLine(line))).toEqual(meaning(config));
      }),
      { numRuns: 200 },
    );
  });

  it('refuses, naming the field, what the guest would misread', () => {
    const bad: Array<[Partial<GuestConfig>, RegExp]> = [
      [{ name: 'vm 1' }, /name "vm 1"/],
      [{ name: 'vm$(reboot)' }, /name/],
      [{ port: 0 }, /port 0/],
      [{ controlPort: 70000 }, /control port 70000/],
      [{ files: 0 }, /files 0 is not 1-64/],
      [{ files: 65 }, /files 65/],
      [{ files: 1.5 }, /files 1.5/],
      [{ dbench: 0 }, /dbench clients 0/],
      [{ dbench: 100 }, /dbench clients 100/],
      [{ iperf3: 0 }, /iperf3 port 0/],
      [{ group: 'ff05::1' }, /link-local scope/],
      [{ mtu: 100 }, /mtu 100/],
      [{ ipv4: '10.0.0.300/24' }, /ipv4/],
      [{ ipv4: '10.0.0.3' }, /ipv4/],
      [{ gateway4: 'router' }, /gw4/],
      [{ names: [{ name: 'x', sid: Xid.of(XidType.HID, Buffer.alloc(20)) }] }, /not a SID/],
      [{ names: Array.from({ length: 40 }, (_, i) => ({ name: `name-${i}`, sid: Xid.of(XidType.SID, Buffer.alloc(20)) })) }, /at most/],
    ];
    for (const [change, message] of bad) {
      expect(() => guestCommandLine({ name: 'vm1', key, ...change })).toThrow(message);
    }
  });

  it('carries the workload words, and refuses a number with a leading zero (the guest would read it as octal)', () => {
    const line = guestCommandLine({ name: 'vm1', key, files: 4, dbench: 2, iperf3: 5201 });
    expect(line).toContain('xmig.files=4 xmig.dbench=2 xmig.iperf3=5201');
    expect(parseGuestCommandLine(line)).toMatchObject({ files: 4, dbench: 2, iperf3: 5201 });
    const tunnel = Identity.generate();
    const withTunnel = parseGuestCommandLine(guestCommandLine({ name: 'vm1', key, iperf3: 5201, tunnel: { key: tunnel, to: 5201 } }));
    expect(withTunnel.tunnel?.to).toBe(5201);
    expect(withTunnel.tunnel?.key.xid(XidType.SID).equals(tunnel.xid(XidType.SID))).toBe(true);
    expect(() => parseGuestCommandLine(`${line} xmig.tunnelto=5201`)).toThrow(/tunnelkey and xmig.tunnelto go together/);
    expect(() => parseGuestCommandLine(line.replace('xmig.files=4', 'xmig.files=010'))).toThrow(/xmig\.files=010 is not a number/);
    expect(() => parseGuestCommandLine(line.replace('xmig.dbench=2', 'xmig.dbench=-1'))).toThrow(/xmig\.dbench=-1/);
  });

  it('refuses, in one line naming the Debian package, a workload the image lacks', () => {
    expect(() => checkWorkloads({ workloads: ['dbench', 'iperf3'] }, { name: 'vm1', key, files: 3, dbench: 1, iperf3: 5201 })).not.toThrow();
    expect(() => checkWorkloads({ workloads: [] }, { name: 'vm1', key, files: 3 })).not.toThrow();
    const error = (() => {
      try {
        checkWorkloads({ workloads: ['iperf3'] }, { name: 'vm1', key, dbench: 1, iperf3: 5201 });
      } catch (e) {
        return e as XmigError;
      }
      return undefined;
    })();
    expect(error).toBeInstanceOf(XmigError);
    expect(error!.code).toBe('ERR_CONFIG');
    expect(error!.message).toMatch(/dbench .*apt-get install dbench/);
    expect(error!.message).not.toContain('\n');
    expect(() => checkWorkloads({}, { name: 'vm1', key, dbench: 1, iperf3: 5201 })).toThrow(/apt-get install dbench iperf3/);
  });

  it('never throws anything but ERR_CONFIG on a command line it did not write', () => {
    const good = guestCommandLine({ name: 'vm1', key });
    const words = fc.oneof(
      fc.string({ maxLength: 40 }),
      fc.tuple(fc.constantFrom('name', 'key', 'port', 'group', 'mtu', 'log', 'trust', 'calkey', 'calname', 'caltcp', 'names', 'ipv4', 'gw4', 'metrics', 'agentmetrics', 'files', 'dbench', 'iperf3', 'tunnelkey', 'tunnelto', 'other'), fc.string({ maxLength: 70 })).map(([w, v]) => `xmig.${w}=${v}`),
    );
    fc.assert(
      fc.property(fc.array(words, { maxLength: 6 }), fc.boolean(), (extra, keepGood) => {
        try {
          parseGuestCommandLine([keepGood ? good : '', ...extra].join(' '));
        } catch (error) {
          expect(error).toBeInstanceOf(XmigError);
          expect((error as XmigError).code).toBe('ERR_CONFIG');
        }
      }),
    );
  });
});
