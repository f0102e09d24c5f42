import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { commandExists, requirement } from '../support/requirements.js';

const dir = new URL('../../systemd/', import.meta.url).pathname;
const units = readdirSync(dir).filter((f) => f.endsWith('.service'));
const hasVerify = requirement(commandExists('systemd-analyze'), 'systemd-analyze', 'install systemd (.ci/run does)');

describe.skipIf(!hasVerify)('systemd units', () => {
  it.each(units)('%s passes systemd-analyze verify without a warning', (unit) => {
    const result = spawnSync('systemd-analyze', ['verify', `${dir}${unit}`], { encoding: 'utf8' });
    expect(result.stderr.trim()).toBe('');
    expect(result.status).toBe(0);
  });

  it('are hardened: no new privileges, read-only system, private tmp, no capabilities', () => {
    expect(units.sort()).toEqual(['xmig-agent.service', 'xmig-nameserver.service', 'xmig-node.service', 'xmig-router-plugin.service']);
    for (const unit of units) {
      const text = readFileSync(`${dir}${unit}`, 'utf8');
      for (const line of ['NoNewPrivileges=yes', 'ProtectSystem=strict', 'PrivateTmp=yes', 'CapabilityBoundingSet=', 'Restart=on-failure', 'StateDirectory=xmig']) {
        expect(text, `${unit}: ${line}`).toContain(line);
      }
    }
  });
});
