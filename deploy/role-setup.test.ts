import { mkdirSync, mkdtempSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { Identity } from '../shared/identity.js';
import { XidType } from '../shared/xid.js';
import { lookupIds, removeRole, setupRole } from './role-setup.js';

/** A tree with an xmig user of our own uid and gid (so the test needs no root). */
function tree(): string {
  const root = mkdtempSync(join(tmpdir(), 'xmig-setup-'));
  mkdirSync(join(root, 'etc'));
  const uid = process.getuid!();
  const gid = process.getgid!();
  writeFileSync(join(root, 'etc/passwd'), `root:x:0:0:root:/root:/bin/sh\nxmig:x:${uid}:${gid}:xmig daemons:/var/lib/xmig:/usr/sbin/nologin\n`);
  writeFileSync(join(root, 'etc/group'), `root:x:0:\nxmig:x:${gid}:\n`);
  return root;
}

const mode = (path: string): string => (statSync(path).mode & 0o777).toString(8);

describe('setupRole and removeRole', () => {
  it('write the role config (0640), keys (0600), leave units alone outside /, and undo it all', () => {
    if (process.getuid!() !== 0) return; // chown to root:xmig needs root; CI and the helpers run as root
    const root = tree();
    const report = setupRole({ role: 'router', name: 'R7', root, systemctl: () => expect.unreachable('systemctl outside /') });
    expect(report.written).toEqual(['/etc/xmig/node.json', '/etc/xmig/router-plugin.env']);
    expect(report.keys.map((k) => [k.file, k.created])).toEqual([
      ['/var/lib/xmig/node.key', true],
      ['/var/lib/xmig/ad.key', true],
    ]);
    expect(report.keys[0]!.xid).toBe(Identity.load(join(root, 'var/lib/xmig/node.key')).xid(XidType.HID).toString());
    expect(report.started).toBe(`installed under ${root}`);
    expect([mode(join(root, 'etc/xmig')), mode(join(root, 'etc/xmig/node.json')), mode(join(root, 'var/lib/xmig')), mode(join(root, 'var/lib/xmig/node.key'))]).toEqual(['750', '640', '700', '600']);
    expect(statSync(join(root, 'etc/xmig/node.json')).uid).toBe(0);
    expect(JSON.parse(readFileSync(join(root, 'etc/xmig/node.json'), 'utf8'))).toMatchObject({ name: 'R7', role: 'router' });

    // Again: configs and keys are kept (the HID does not change under a running deployment).
    const again = setupRole({ role: 'router', name: 'R7', root });
    expect(again.written).toEqual([]);
    expect(again.kept).toHaveLength(2);
    expect(again.keys.map((k) => [k.xid, k.created])).toEqual(report.keys.map((k) => [k.xid, false]));

    const removed = removeRole({ role: 'router', root });
    expect(removed.removed).toEqual(['/etc/xmig/node.json', '/etc/xmig/router-plugin.env']);
    expect(readdirSync(join(root, 'var/lib/xmig')).sort()).toEqual(['ad.key', 'node.key']);
    removeRole({ role: 'router', root, purge: true });
    expect(readdirSync(join(root, 'var/lib/xmig'))).toEqual([]);
  });

  it('refuses to set up a machine without the package\'s system user', () => {
    const root = mkdtempSync(join(tmpdir(), 'xmig-setup-'));
    expect(() => lookupIds(root, 'xmig')).toThrow(/install the xmig package first/);
    expect(() => setupRole({ role: 'vm', root })).toThrow(expect.objectContaining({ code: 'ERR_CONFIG' }) as Error);
  });
});
