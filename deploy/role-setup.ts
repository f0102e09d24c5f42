/**
 * `xmig setup ROLE`: after the package (or packaging/install.sh) put xmig, its units, its
 * system user and its directories in place, make this machine one of the deployment's
 * roles: config files (root:xmig 0640), keys (xmig 0600), the role's units enabled and
 * started when systemd runs. `xmig setup --remove ROLE` undoes it; `--purge` also drops
 * the keys and state.
 *
 * Everything takes a `root` so that tests (and image builders) can set up a tree that is
 * not the running system.
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdirSync, readFileSync, readdirSync, rmSync, rmdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { XmigError } from '../shared/errors.js';
import { Identity } from '../shared/identity.js';
import { XidType } from '../shared/xid.js';
import { INSTALL, ROLE_UNITS, roleConfig, type Role, type RoleConfigOptions } from './role-config.js';

export const SYSTEM_USER = 'xmig';

export interface SetupOptions extends RoleConfigOptions {
  /** Install into this tree instead of / (the units are not enabled then). */
  root?: string;
  /** Enable and start the role's units when systemd runs here (default true). */
  enable?: boolean;
  /** Overwrite config files that exist. */
  force?: boolean;
  /** Runs systemctl (tests replace it by what records the calls). */
  systemctl?: (args: string[]) => void;
}

export interface SetupReport {
  written: string[];
  kept: string[];
  keys: Array<{ file: string; xid: string; created: boolean }>;
  units: string[];
  /** Whether the units were enabled and started, or why not. */
  started: boolean | string;
}

function under(root: string, path: string): string {
  return root === '/' ? path : join(root, path);
}

/** uid and gid of a user and group by name, from the tree's /etc/passwd and /etc/group. */
export function lookupIds(root: string, user: string): { uid: number; gid: number } {
  const field = (file: string, name: string, column: number): number | undefined => {
    let text: string;
    try {
      text = readFileSync(under(root, file), 'utf8');
    } catch {
      return undefined;
    }
    for (const line of text.split('\n')) {
      const parts = line.split(':');
      if (parts[0] === name && parts[column] !== undefined) return Number(parts[column]);
    }
    return undefined;
  };
  const uid = field('/etc/passwd', user, 2);
  const gid = field('/etc/group', user, 2);
  if (uid === undefined || gid === undefined) {
    throw new XmigError(
      'ERR_CONFIG',
      `no system user and group "${user}" in ${under(root, '/etc/passwd')}: install the xmig package first (its sysusers.d file makes them: systemd-sysusers xmig.conf)`,
    );
  }
  return { uid, gid };
}

function systemdRuns(root: string): boolean {
  return root === '/' && existsSync('/run/systemd/system');
}

function defaultSystemctl(args: string[]): void {
  const result = spawnSync('systemctl', args, { encoding: 'utf8' });
  if (result.status !== 0) throw new XmigError('ERR_STATE', `systemctl ${args.join(' ')} failed: ${(result.stderr || result.error?.message || '').trim()}`);
}

export function setupRole(options: SetupOptions): SetupReport {
  const root = options.root ?? '/';
  const ids = lookupIds(root, SYSTEM_USER);
  const config = roleConfig(options);
  const report: SetupReport = { written: [], kept: [], keys: [], units: config.units, started: false };

  const configDir = under(root, INSTALL.configDir);
  mkdirSync(configDir, { recursive: true, mode: 0o750 });
  chownSync(configDir, 0, ids.gid);
  chmodSync(configDir, 0o750);
  const stateDir = under(root, INSTALL.stateDir);
  mkdirSync(stateDir, { recursive: true, mode: 0o700 });
  chownSync(stateDir, ids.uid, ids.gid);
  chmodSync(stateDir, 0o700);

  for (const file of config.files) {
    const path = under(root, file.path);
    if (existsSync(path) && !options.force) {
      report.kept.push(file.path);
      continue;
    }
    mkdirSync(dirname(path), { recursive: true });
    writeFileSync(path, file.content, { mode: file.mode });
    chownSync(path, 0, ids.gid);
    chmodSync(path, file.mode);
    report.written.push(file.path);
  }

  const keys: Array<{ file: string; type: number }> = [{ file: INSTALL.nodeKey, type: XidType.HID }];
  if (options.role === 'router') keys.push({ file: INSTALL.adKey, type: XidType.AD });
  for (const key of keys) {
    const path = under(root, key.file);
    const created = !existsSync(path);
    const identity = Identity.loadOrCreate(path);
    chownSync(path, ids.uid, ids.gid);
    chmodSync(path, 0o600);
    report.keys.push({ file: key.file, xid: identity.xid(key.type).toString(), created });
  }

  if (options.enable === false) {
    report.started = 'not asked to (--no-enable)';
  } else if (!systemdRuns(root)) {
    report.started = root === '/' ? 'systemd is not running here' : `installed under ${root}`;
  } else {
    (options.systemctl ?? defaultSystemctl)(['enable', '--now', ...config.units]);
    report.started = true;
  }
  return report;
}

export interface RemoveOptions {
  role: Role;
  root?: string;
  /** Also delete keys and state (/var/lib/xmig). */
  purge?: boolean;
  systemctl?: (args: string[]) => void;
}

export interface RemoveReport {
  removed: string[];
  units: string[];
  stopped: boolean | string;
}

/** The reverse of setupRole: units stopped and disabled, the role's config files gone (and, with purge, keys and state). */
export function removeRole(options: RemoveOptions): RemoveReport {
  const root = options.root ?? '/';
  const units = [...ROLE_UNITS[options.role], 'xmig-nameserver.service', 'xmig-router-plugin.service'].filter((u, i, all) => all.indexOf(u) === i);
  const report: RemoveReport = { removed: [], units, stopped: false };
  if (systemdRuns(root)) {
    (options.systemctl ?? defaultSystemctl)(['disable', '--now', ...units]);
    report.stopped = true;
  } else {
    report.stopped = root === '/' ? 'systemd is not running here' : `tree under ${root}`;
  }
  for (const name of ['node.json', 'agent.json', 'router-plugin.env']) {
    const path = join(INSTALL.configDir, name);
    if (existsSync(under(root, path))) {
      rmSync(under(root, path));
      report.removed.push(path);
    }
  }
  const configDir = under(root, INSTALL.configDir);
  if (existsSync(configDir) && readdirSync(configDir).length === 0) rmdirSync(configDir);
  if (options.purge) {
    const stateDir = under(root, INSTALL.stateDir);
    if (existsSync(stateDir)) {
      for (const entry of readdirSync(stateDir)) {
        rmSync(join(stateDir, entry), { recursive: true, force: true });
        report.removed.push(join(INSTALL.stateDir, entry));
      }
    }
  }
  return report;
}
