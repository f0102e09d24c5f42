import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { commandExists, requirement } from '../support/requirements.js';

const dir = new URL('../../systemd/', import.meta.url).pathname;
const xmig = new URL('../../bin/xmig.js', import.meta.url).pathname;
const units = readdirSync(dir).filter((f) => f.endsWith('.service'));
const hasVerify = requirement(commandExists('systemd-analyze'), 'systemd-analyze', 'install systemd (.ci/run does)');

/** The exposure every unit must stay at or under (systemd-analyze security's 0-10 scale). */
const MAX_EXPOSURE = 1.5;

/**
 * The units name the installed /usr/bin/xmig (and man:xmig(1)); verify checks that the
 * command exists, so here it runs on a copy that names this checkout's bin/xmig.js.
 * The package test verifies the installed units as they are, with their man page.
 */
function checkoutCopies(): string {
  const copyDir = mkdtempSync(join(tmpdir(), 'xmig-units-'));
  for (const unit of units) {
    const text = readFileSync(`${dir}${unit}`, 'utf8').replaceAll('ExecStart=/usr/bin/xmig ', `ExecStart=${xmig} `);
    writeFileSync(join(copyDir, unit), text);
  }
  return copyDir;
}

describe.skipIf(!hasVerify)('systemd units', () => {
  const copies = hasVerify ? checkoutCopies() : '';
  it.each(units)('%s passes systemd-analyze verify without a warning', (unit) => {
    const result = spawnSync('systemd-analyze', ['verify', '--man=no', join(copies, unit)], { encoding: 'utf8' });
    expect(result.stderr.trim()).toBe('');
    expect(result.status).toBe(0);
  });

  it.each(units)(`%s has an exposure of at most ${MAX_EXPOSURE} (systemd-analyze security --offline)`, (unit) => {
    const threshold = String(Math.round(MAX_EXPOSURE * 10));
    const result = spawnSync('systemd-analyze', ['security', '--offline=yes', `--threshold=${threshold}`, `${dir}${unit}`], {
      encoding: 'utf8',
    });
    const level = /Overall exposure level for \S+: ([\d.]+)/.exec(result.stdout)?.[1];
    expect(Number(level), result.stdout).toBeLessThanOrEqual(MAX_EXPOSURE);
    expect(result.status, result.stdout).toBe(0);
  });

  it('are hardened: no new privileges, read-only system, private tmp, no capabilities, a syscall filter', () => {
    expect(units.sort()).toEqual(['xmig-agent.service', 'xmig-nameserver.service', 'xmig-node.service', 'xmig-router-plugin.service']);
    for (const unit of units) {
      const text = readFileSync(`${dir}${unit}`, 'utf8');
      for (const line of [
        'NoNewPrivileges=yes',
        'ProtectSystem=strict',
        'PrivateTmp=yes',
        'CapabilityBoundingSet=',
        'SystemCallFilter=@system-service',
        'Restart=on-failure',
        'StateDirectory=xmig',
      ]) {
        expect(text, `${unit}: ${line}`).toContain(line);
      }
    }
  });

  it('tell systemd they are ready from the main process, and are watched', () => {
    for (const unit of units) {
      const text = readFileSync(`${dir}${unit}`, 'utf8');
      expect(text, unit).toMatch(/^Type=notify$/m);
      // sd_notify is written by the daemon itself (shared/systemd-notify.ts), never a child.
      expect(text, unit).toMatch(/^NotifyAccess=main$/m);
      expect(text, unit).toMatch(/^WatchdogSec=\d+s$/m);
      expect(text, unit).toMatch(/^Documentation=man:xmig\(1\) file:\/\/\/usr\/share\/doc\/xmig\/README\.md$/m);
      expect(text, unit).toMatch(/^ExecStart=\/usr\/bin\/xmig /m);
    }
  });
});
