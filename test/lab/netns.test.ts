/**
 * The lab's registry of namespaces, bridges, veths, taps and processes: teardown takes
 * all of it and nothing else, an occupied name is refused in one line, and a process
 * started inside a namespace by someone else (as QEMU starts `xmig recv`) goes too.
 */
import { spawn } from 'node:child_process';
import { afterEach, describe, expect, it } from 'vitest';
import { activeResources, leftBehind } from '../../shared/startable.js';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { checkInterfaceName, cleanLeftovers, LAB_OWNERS_DIR, listNamespaces, NetnsRegistry, newRunPrefix, run } from '../../lab/netns.js';
import { commandExists, isRoot, requirement } from '../support/requirements.js';

const canRun = requirement(isRoot() && commandExists('ip'), 'root and iproute2 (network namespaces)', 'run the tests as root on Linux with iproute2 installed');
const registries: NetnsRegistry[] = [];
afterEach(async () => {
  for (const r of registries.splice(0)) await r.teardown(1000);
});

function registry(prefix?: string): NetnsRegistry {
  const r = new NetnsRegistry(prefix);
  registries.push(r);
  return r;
}

const ours = async (prefix: string): Promise<string[]> => (await listNamespaces()).filter((n) => n.startsWith(`${prefix}-`));

describe('interface names', () => {
  it('refuses names Linux would refuse', () => {
    expect(checkInterfaceName('brA')).toBe('brA');
    expect(() => checkInterfaceName('a-name-too-long-for-linux')).toThrow(/at most 15/);
    expect(() => checkInterfaceName('bad name')).toThrow(/interface name/);
  });
});

describe.skipIf(!canRun)('NetnsRegistry', () => {
  it('makes namespaces, a bridge, veths and a tap, and removes every one of them', async () => {
    const before = activeResources();
    const net = registry();
    const a = await net.addNamespace('A');
    const r = await net.addNamespace('R', { ipv4Forwarding: true });
    await net.addBridge(a, 'brA', { mtu: 1500, mac: '02:00:00:00:00:0a' });
    await net.addVeth({ ns: r, name: 'ethA' }, { ns: a, name: 'toR', options: { master: 'brA', mtu: 1500 } });
    await net.addTap(a, 'tap0', { master: 'brA' });
    await net.addAddress(a, 'brA', 'fe80::a/64');
    const links = (await net.ip(a, ['-json', 'link', 'show', 'master', 'brA'])).stdout;
    expect((JSON.parse(links) as Array<{ ifname: string }>).map((l) => l.ifname).sort()).toEqual(['tap0', 'toR']);
    expect((await run('ip', ['netns', 'exec', r, 'sysctl', '-n', 'net.ipv4.ip_forward'])).stdout.trim()).toBe('1');
    expect(await ours(net.prefix)).toHaveLength(2);
    const report = await net.teardown();
    expect(report.errors).toEqual([]);
    expect(await ours(net.prefix)).toEqual([]);
    // A child's handles close a loop turn after its callback: wait for that, not for time.
    for (let turn = 0; turn < 100 && Object.keys(leftBehind(before, activeResources())).length > 0; turn++) await new Promise((r) => setTimeout(r, 20));
    expect(leftBehind(before, activeResources())).toEqual({});
  });

  it('refuses a namespace name that exists, in one line, and leaves that namespace alone', async () => {
    const first = registry();
    await first.addNamespace('A');
    const second = registry(first.prefix);
    const error = await second.addNamespace('A').catch((e: unknown) => e as Error);
    expect(error).toBeInstanceOf(Error);
    expect((error as Error).message).toMatch(new RegExp(`^network namespace ${first.prefix}-A already exists`));
    expect((error as Error).message).not.toContain('\n');
    await second.teardown();
    expect(await ours(first.prefix)).toEqual([`${first.prefix}-A`]);
  });

  it('stops its own processes and any stray one inside its namespaces at teardown', async () => {
    const net = registry();
    const a = await net.addNamespace('A');
    const own = net.spawn(a, ['sleep', '600'], { stdio: 'ignore' });
    // Started past the registry, as QEMU starts its exec: migration helper.
    const stray = spawn('ip', ['netns', 'exec', a, 'sh', '-c', 'trap "" TERM; sleep 600'], { stdio: 'ignore', detached: true });
    stray.unref();
    await expect.poll(async () => (await net.pidsIn(a)).length).toBeGreaterThanOrEqual(2);
    const report = await net.teardown(500);
    expect(report.processesStopped).toBe(1);
    expect(report.strays).toBeGreaterThanOrEqual(1);
    expect(own.exitCode !== null || own.signalCode !== null).toBe(true);
    expect(await ours(net.prefix)).toEqual([]);
  });

  it('keeps everything with keep(), for --keep, and says how to enter it', async () => {
    const net = registry();
    const a = await net.addNamespace('A');
    expect(net.enterHints()).toEqual([`ip netns exec ${a} bash`]);
    net.keep();
    await net.teardown();
    expect(await ours(net.prefix)).toEqual([a]);
    await run('ip', ['netns', 'del', a]);
  });

  it('xmig lab clean: removes a kept run, leaves a live one alone, forgets owners that left nothing', async () => {
    // A family of our own, so that a clean of every run never meets another test's namespaces.
    const family = `${newRunPrefix().replace('xmig-lab-', 'xmig-labt-')}-`;
    const kept = registry(`${family}k`);
    const a = await kept.addNamespace('A');
    kept.keep();
    await kept.teardown();
    // A run whose owner is alive (here a sleeping child) is not a leftover.
    const live = registry(`${family}l`);
    await live.addNamespace('A');
    const owner = spawn('sleep', ['600'], { stdio: 'ignore' });
    writeFileSync(join(LAB_OWNERS_DIR, `${live.prefix}.pid`), `${owner.pid}\n`);
    // The owner file of a run killed before it made anything, its owner gone.
    const ghost = `${family}g`;
    writeFileSync(join(LAB_OWNERS_DIR, `${ghost}.pid`), '2147483646\n');
    try {
      expect(await cleanLeftovers(undefined, family)).toEqual([a]);
      expect(await ours(kept.prefix)).toEqual([]);
      expect(await ours(live.prefix)).toEqual([`${live.prefix}-A`]);
      expect(existsSync(join(LAB_OWNERS_DIR, `${kept.prefix}.pid`))).toBe(false);
      expect(existsSync(join(LAB_OWNERS_DIR, `${live.prefix}.pid`))).toBe(true);
      expect(existsSync(join(LAB_OWNERS_DIR, `${ghost}.pid`))).toBe(false);
      // Named, a live run goes too.
      expect(await cleanLeftovers(live.prefix)).toEqual([`${live.prefix}-A`]);
    } finally {
      owner.kill('SIGKILL');
    }
  });
});
