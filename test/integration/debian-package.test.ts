/**
 * The Debian package as an operator gets it: packaging/build-deb.sh builds it, dpkg installs
 * it into a clean Debian 12 chroot (debootstrap's minbase and systemd), and each role is set
 * up (`xmig setup ROLE`) and run without systemctl, as the units would run it (user xmig),
 * in a network namespace of its own: every daemon of the role starts and serves /metrics,
 * which promtool accepts. Then `xmig setup --remove` and `dpkg --purge` leave nothing.
 *
 * The chroot's base is debootstrapped once and kept as a tarball (XMIG_CHROOT_CACHE,
 * default /var/cache/xmig-test); every run unpacks a fresh copy. Node.js 20 comes from
 * this machine's own nodejs package (dpkg-repack), as an operator's would from the same
 * repository. The test needs root, debootstrap, dpkg-repack and network access to
 * deb.debian.org the first time; it runs in CI (CI=true) or with XMIG_PACKAGE_TEST=1, and
 * takes a minute or two once the base is cached (several the first time).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { commandExists, isRoot, requirement } from '../support/requirements.js';
import { waitFor } from '../support/wait.js';

const repo = new URL('../../', import.meta.url).pathname;
const wanted = process.env['CI'] === 'true' || process.env['XMIG_PACKAGE_TEST'] === '1';
const able =
  wanted &&
  requirement(
    isRoot() && ['debootstrap', 'dpkg-deb', 'dpkg-repack', 'chroot', 'ip'].every(commandExists),
    'root with debootstrap, dpkg-repack and iproute2 (the Debian package test)',
    'run as root; apt-get install debootstrap dpkg-repack (.ci/run does)',
  );
if (!wanted) {
  requirement(false, 'the Debian package test (it is slow: CI runs it)', 'set XMIG_PACKAGE_TEST=1 to run it here (CI=true does)');
}
const hasPromtool = commandExists('promtool');

const cacheDir = process.env['XMIG_CHROOT_CACHE'] ?? '/var/cache/xmig-test';
const SUITE = 'bookworm';
const MIRROR = 'http://deb.debian.org/debian';

function sh(command: string, args: string[], options: { cwd?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): string {
  const result = spawnSync(command, args, { encoding: 'utf8', maxBuffer: 64 << 20, timeout: options.timeoutMs ?? 600_000, ...options });
  if (result.status !== 0) {
    throw new Error(`${command} ${args.join(' ')} exited ${result.status ?? result.signal}:\n${result.stdout}\n${result.stderr}`);
  }
  return result.stdout;
}

function timed<T>(what: string, f: () => T): T {
  const start = Date.now();
  const value = f();
  process.stderr.write(`debian-package: ${what} took ${((Date.now() - start) / 1000).toFixed(1)} s\n`);
  return value;
}

/** A tarball of a minbase bookworm with systemd and the packages nodejs depends on. */
function baseTarball(): string {
  const tarball = join(cacheDir, `${SUITE}-minbase-systemd.tar`);
  if (existsSync(tarball)) return tarball;
  mkdirSync(cacheDir, { recursive: true });
  const dir = mkdtempSync(join(cacheDir, 'debootstrap-'));
  try {
    timed('debootstrap (first run; cached after)', () =>
      sh('debootstrap', ['--variant=minbase', '--include=systemd,python3,ca-certificates,libstdc++6', SUITE, dir, MIRROR], { timeoutMs: 1_200_000 }),
    );
    sh('find', [join(dir, 'var/cache/apt/archives'), '-name', '*.deb', '-delete']);
    sh('tar', ['-C', dir, '-cf', `${tarball}.tmp`, '.']);
    sh('mv', [`${tarball}.tmp`, tarball]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  return tarball;
}

/** This machine's nodejs package, rebuilt as a .deb (cached per version). */
function nodejsDeb(): string {
  const version = sh('dpkg-query', ['-W', '-f=${Version}', 'nodejs']).trim();
  const dir = join(cacheDir, `nodejs-${version.replace(/[^A-Za-z0-9.+~-]/g, '_')}`);
  const existing = existsSync(dir) ? readdirSync(dir).find((f) => f.endsWith('.deb')) : undefined;
  if (existing) return join(dir, existing);
  // Built aside and renamed into the cache, so a run killed mid-way leaves no truncated .deb
  // to be taken next time; gzip -1, not xz: the default took over 10 min at load 20 (killed).
  mkdirSync(cacheDir, { recursive: true });
  const building = mkdtempSync(join(cacheDir, 'nodejs-repack-'));
  try {
    timed('dpkg-repack nodejs (first run; cached after)', () =>
      sh('dpkg-repack', ['--deb-option=-Zgzip', '--deb-option=-z1', 'nodejs'], { cwd: building, timeoutMs: 1_200_000 }),
    );
    const deb = readdirSync(building).find((f) => f.endsWith('.deb'))!;
    mkdirSync(dir, { recursive: true });
    renameSync(join(building, deb), join(dir, deb));
    return join(dir, deb);
  } finally {
    rmSync(building, { recursive: true, force: true });
  }
}

interface Daemon {
  child: ChildProcess;
  output: () => string;
  exited: Promise<number | null>;
}

describe.skipIf(!able)('the Debian package', () => {
  let root = '';
  let netns = '';
  let deb = '';
  const mounts: string[] = [];
  const daemons: Daemon[] = [];

  const chroot = (...args: string[]): string => sh('chroot', [root, ...args], { env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', LANG: 'C' } });

  /** A daemon as its unit starts it: user xmig, in the role's network namespace, stdout piped. */
  function startDaemon(args: string[]): Daemon {
    const child = spawn('ip', ['netns', 'exec', netns, 'chroot', '--userspec=xmig:xmig', root, '/usr/bin/xmig', ...args], {
      env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', LANG: 'C', HOME: '/var/lib/xmig' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout!.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (output += d.toString()));
    const daemon = { child, output: () => output, exited: new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code))) };
    daemons.push(daemon);
    return daemon;
  }

  async function stopDaemons(): Promise<void> {
    for (const daemon of daemons.splice(0).reverse()) {
      if (daemon.child.exitCode === null && daemon.child.signalCode === null) daemon.child.kill('SIGTERM');
      expect(await daemon.exited, daemon.output()).toBe(0);
    }
  }

  /** /metrics as seen inside the namespace. */
  function metrics(port: number): string {
    const script = `fetch('http://127.0.0.1:${port}/metrics').then(async (r) => { process.stdout.write(await r.text()); process.exitCode = r.ok ? 0 : 1; })`;
    return sh('ip', ['netns', 'exec', netns, process.execPath, '-e', script]);
  }

  function promtool(text: string): { status: number | null; output: string } {
    const result = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
    return { status: result.status, output: `${result.stdout}${result.stderr}` };
  }

  beforeAll(() => {
    deb = timed('packaging/build-deb.sh', () => sh('bash', [join(repo, 'packaging/build-deb.sh'), mkdtempSync(join(tmpdir(), 'xmig-deb-'))]).trim().split('\n').pop()!);
    const tarball = baseTarball();
    root = mkdtempSync(join(tmpdir(), 'xmig-chroot-'));
    timed('unpacking the clean chroot', () => sh('tar', ['-C', root, '-xf', tarball]));
    // mkdtemp made it (and debootstrap's directory, which the tarball's "." keeps) 0700:
    // the chroot's / must be a / to user xmig too.
    chmodSync(root, 0o755);
    for (const [source, target, type] of [
      ['proc', 'proc', 'proc'],
      ['/dev', 'dev', 'bind'],
    ] as const) {
      sh('mount', type === 'bind' ? ['--bind', source, join(root, target)] : ['-t', type, source, join(root, target)]);
      mounts.unshift(join(root, target));
    }
    sh('cp', [nodejsDeb(), join(root, 'tmp/nodejs.deb')]);
    sh('cp', [deb, join(root, 'tmp/xmig.deb')]);
    timed('dpkg -i nodejs xmig', () => chroot('dpkg', '-i', '/tmp/nodejs.deb', '/tmp/xmig.deb'));
    netns = `xmig-pkg-${process.pid}`;
    sh('ip', ['netns', 'add', netns]);
    sh('ip', ['-n', netns, 'link', 'set', 'lo', 'up', 'multicast', 'on']);
    // The roles' nodes meet on a multicast group: on loopback here.
    sh('ip', ['-n', netns, 'route', 'add', '224.0.0.0/4', 'dev', 'lo']);
  }, 1_500_000);

  afterAll(async () => {
    for (const daemon of daemons) daemon.child.kill('SIGKILL');
    await Promise.all(daemons.map((d) => d.exited));
    if (netns) spawnSync('ip', ['netns', 'del', netns]);
    for (const mount of mounts) spawnSync('umount', ['-l', mount]);
    // Only once nothing is mounted under it.
    if (root && mounts.every((m) => !readFileSync('/proc/mounts', 'utf8').includes(` ${m} `))) rmSync(root, { recursive: true, force: true });
  });

  it('installs the command, units, user, directories, man page, dissector and license', () => {
    expect(chroot('xmig', '--version').trim()).toBe(JSON.parse(readFileSync(join(repo, 'package.json'), 'utf8')).version);
    expect(chroot('getent', 'passwd', 'xmig')).toMatch(/^xmig:x:\d+:\d+:xmig daemons:\/var\/lib\/xmig:\/usr\/sbin\/nologin/);
    const mode = (path: string): string => (statSync(join(root, path)).mode & 0o7777).toString(8);
    expect([mode('etc/xmig'), mode('var/lib/xmig'), mode('run/xmig')]).toEqual(['750', '700', '750']);
    for (const unit of ['xmig-node', 'xmig-agent', 'xmig-router-plugin', 'xmig-nameserver']) {
      expect(existsSync(join(root, `lib/systemd/system/${unit}.service`)), unit).toBe(true);
    }
    // The units as installed: their command exists (verify checks it); man:xmig(1) is checked below.
    chroot('systemd-analyze', 'verify', '--man=no', ...['node', 'agent', 'router-plugin', 'nameserver'].map((u) => `/lib/systemd/system/xmig-${u}.service`));
    const man = spawnSync('man', ['--warnings', '-l', join(root, 'usr/share/man/man1/xmig.1.gz')], { encoding: 'utf8', env: { ...process.env, MANWIDTH: '100' } });
    expect(man.status, man.stderr).toBe(0);
    expect(man.stderr).toBe('');
    expect(man.stdout).toMatch(/EXIT STATUS/);
    expect(existsSync(join(root, 'usr/share/xmig/wireshark/xmig.lua'))).toBe(true);
    expect(readFileSync(join(root, 'usr/share/doc/xmig/copyright'), 'utf8')).toMatch(/License: MIT/);
  });

  const roles = [
    { role: 'router', args: ['--name', 'R1'], daemons: [['node', '--config', '/etc/xmig/node.json']], ports: [9560], files: ['node.json', 'router-plugin.env'], keys: ['node.key', 'ad.key'] },
    { role: 'hypervisor', args: ['--name', 'H1'], daemons: [['node', '--config', '/etc/xmig/node.json']], ports: [9560], files: ['node.json'], keys: ['node.key'] },
    {
      role: 'vm',
      args: ['--name', 'vm1'],
      daemons: [['node', '--config', '/etc/xmig/node.json'], ['agent', '--config', '/etc/xmig/agent.json']],
      ports: [9560, 9561],
      files: ['node.json', 'agent.json'],
      keys: ['node.key'],
    },
  ];

  it.each(roles)('sets up the $role role, runs its daemons as xmig, serves /metrics, and removes it again', async (spec) => {
    const out = chroot('xmig', 'setup', spec.role, ...spec.args, '--no-enable');
    expect(out).toMatch(/units not started/);
    const ids = chroot('id', '-u', 'xmig').trim();
    for (const file of spec.files) {
      const stat = statSync(join(root, 'etc/xmig', file));
      expect([(stat.mode & 0o777).toString(8), stat.uid], file).toEqual(['640', 0]);
    }
    for (const key of spec.keys) {
      const stat = statSync(join(root, 'var/lib/xmig', key));
      expect([(stat.mode & 0o777).toString(8), String(stat.uid)], key).toEqual(['600', ids]);
    }
    try {
      for (const args of spec.daemons) {
        const daemon = startDaemon(args);
        const ready = args[0] === 'node' ? '"node.ready"' : '"agent.started"';
        await waitFor(() => daemon.output().includes(ready) || daemon.child.exitCode !== null, 60_000, `${spec.role}: xmig ${args[0]} to start`);
        expect(daemon.child.exitCode, daemon.output()).toBeNull();
      }
      for (const port of spec.ports) {
        const text = metrics(port);
        expect(text, `${spec.role} :${port}`).toMatch(/^process_cpu_user_seconds_total[{ ]/m);
        if (hasPromtool) {
          const check = promtool(text);
          expect(check.output, `promtool on ${spec.role} :${port}`).toBe('');
          expect(check.status).toBe(0);
        }
      }
    } finally {
      await stopDaemons();
    }
    chroot('xmig', 'setup', '--remove', spec.role, '--purge');
    expect(readdirSync(join(root, 'var/lib/xmig'))).toEqual([]);
    expect(existsSync(join(root, 'etc/xmig/node.json'))).toBe(false);
  }, 180_000);

  it('purges cleanly', () => {
    chroot('dpkg', '--purge', 'xmig');
    for (const path of ['usr/bin/xmig', 'usr/lib/xmig', 'etc/xmig', 'var/lib/xmig', 'lib/systemd/system/xmig-node.service']) {
      expect(existsSync(join(root, path)), path).toBe(false);
    }
  });
});
