/**
 * A libvirt-managed guest migrates live through xmig: Debian's libvirtd on a "source" and
 * a "destination" host (each in network, mount and UTS namespaces of its own, with its own
 * /etc/libvirt, /run, hostname and host UUID: test/e2e/libvirt-host.ts), a TCG guest defined in
 * libvirt (direct kernel boot, busybox initramfs counting on its serial console), and
 * `virsh migrate --live --p2p` over Unix sockets — libvirtd's connection, QEMU's migration
 * stream and the storage copy's NBD — that `xmig libvirt-proxy` carries as STREAMs over
 * xianet (hosts A and B behind router R1, `xmig node` daemons on UDP over loopback, whose
 * API sockets the proxies reach by path). The only way between the two libvirt hosts is
 * xmig: their sockets live in their own namespaces.
 *
 * Then the failure: the proxy target killed in the middle of a migration; libvirt must
 * report the migration failed and the guest go on running at the source.
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Dag } from '../../shared/dag.js';
import { virshMigrateCommand, DEFAULT_LIBVIRT_PROXY_DIR } from '../../mover/libvirt-proxy-paths.js';
import { commandExists, isRoot, requirement } from '../support/requirements.js';
import { startXmig, type XmigProcess } from '../support/processes.js';
import { MIGRATION_HOSTS, UdpNetwork } from '../support/udp-network.js';
import { waitFor } from '../support/wait.js';
import { buildInitramfs, COUNT_PREFIX, findBusybox, findKernel, qemuMajor, serialCounts, serialLog } from './guest.js';
import { domainXml, hasLibvirt, LibvirtHost, type VirshResult } from './libvirt-host.js';

const kernel = findKernel();
const busybox = findBusybox();
const ready = requirement(
  isRoot() && hasLibvirt() && (qemuMajor() ?? 0) >= 10 && kernel !== undefined && busybox !== undefined && commandExists('cpio'),
  "root, Debian's libvirt (libvirtd, virsh), unshare/nsenter/ip, QEMU 10 or later, a kernel in /boot, static busybox and cpio",
  'run as root on Debian 12 after .ci/run (it installs libvirt-daemon-system and QEMU 10 from bookworm-backports)',
);

const HOOK = new URL('../../tools/libvirt/qemu-hook', import.meta.url).pathname;
const DISK_BYTES = 16 * 1024 * 1024;

const dir = mkdtempSync(join(tmpdir(), 'xmig-libvirt-'));
// QEMU runs as libvirt-qemu: it must get to the kernel and initramfs in here.
chmodSync(dir, 0o755);
const network = new UdpNetwork(MIGRATION_HOSTS);
const source = new LibvirtHost('source', dir);
const destination = new LibvirtHost('destination', dir, HOOK);
let target: XmigProcess | undefined;
let initramfs = '';
let guestKernel = '';

/** The proxy target on the destination host: STREAMs on B's libvirt SID, only from host A. */
async function startTarget(): Promise<XmigProcess> {
  const proxy = startXmig(['libvirt-proxy', 'target', '--api', network.api('B'), '--from', network.hid('A').toString(), '--metrics-port', '0'], {
    prefix: destination.prefix(),
  });
  await proxy.waitForLog('libvirt-proxy.target-ready', 30_000);
  return proxy;
}

/** The source proxy for one domain, aimed at host B (its DAG: the command adds the libvirt SID). */
async function startSourceProxy(domain: string, stats: string): Promise<XmigProcess> {
  const to = Dag.hostAddress(network.ad('AD1'), network.hid('B')).toString();
  const proxy = startXmig(['libvirt-proxy', 'source', '--domain', domain, '--to', to, '--api', network.api('A'), '--stats', stats], { prefix: source.prefix() });
  await proxy.waitForLog('libvirt-proxy.ready', 30_000);
  return proxy;
}

/** The counts in a console's text, in order. */
function countsIn(text: string): number[] {
  return [...text.matchAll(new RegExp(`${COUNT_PREFIX} (\\d+)`, 'g'))].map((m) => Number(m[1]));
}

function serial(host: LibvirtHost, domain: string): string {
  return host.logPath('qemu', `${domain}.serial`);
}

/** Defines and starts the guest on the source host, and waits for it to count. */
async function startGuest(domain: string, disk?: string): Promise<void> {
  const xml = join(dir, `${domain}.xml`);
  writeFileSync(
    xml,
    domainXml({
      name: domain,
      kernel: guestKernel,
      initramfs,
      memoryMb: 128,
      serial: `/var/log/libvirt/qemu/${domain}.serial`,
      // 256 KiB dirtied a tick, not 2 MiB: this test is about libvirt's path through xmig, and
      // pre-copy must converge however slowly a loaded machine moves the bytes.
      guestEnv: { XMIG_DIRTY_BLOCKS: 4 },
      ...(disk ? { disk } : {}),
    }),
  );
  const created = await source.virsh('create', xml);
  expect(created.code, created.stderr + source.daemonOutput()).toBe(0);
  await waitFor(() => serialCounts(serial(source, domain)).length >= 10, 120_000, `${domain} to count on the source`);
}

/** What to read when a migration fails: virsh's error, both libvirtds' logs, both proxies' events. */
function trail(virsh: VirshResult, proxy: XmigProcess): string {
  const events = (p: XmigProcess | undefined): string => (p?.logs ?? []).map((l) => JSON.stringify(l)).join('\n');
  return [
    virsh.stderr,
    `source libvirtd:\n${source.daemonOutput()}`,
    `destination libvirtd:\n${destination.daemonOutput()}`,
    `source proxy:\n${events(proxy)}\n${proxy.stderr.join('\n')}`,
    `proxy target:\n${events(target)}`,
  ].join('\n');
}

/** How much of its memory the source says it has sent so far. */
async function memoryProcessedMiB(domain: string): Promise<number> {
  const info = await source.virsh('domjobinfo', domain);
  const match = /Memory processed:\s+([\d.]+) (KiB|MiB|GiB)/.exec(info.stdout);
  if (!match) return 0;
  return Number(match[1]) * ({ KiB: 1 / 1024, MiB: 1, GiB: 1024 } as const)[match[2] as 'KiB' | 'MiB' | 'GiB'];
}

beforeAll(async () => {
  if (!ready) return;
  initramfs = buildInitramfs(dir, busybox!);
  guestKernel = join(dir, 'vmlinuz');
  copyFileSync(kernel!, guestKernel);
  for (const file of [initramfs, guestKernel]) chmodSync(file, 0o644);
  const started = Date.now();
  await Promise.all([network.start(), source.start(), destination.start()]);
  target = await startTarget();
  console.log(`libvirt e2e: two libvirtds and the XIA network up in ${Date.now() - started} ms`);
}, 180_000);

afterAll(async () => {
  await target?.stop();
  await Promise.all([source.stop(), destination.stop()]);
  if (ready) await network.stop();
  if (process.env['XMIG_KEEP_E2E']) console.error(`kept ${dir}`);
  else rmSync(dir, { recursive: true, force: true });
}, 120_000);

describe.skipIf(!ready)('libvirt migration over xianet (virsh migrate through xmig libvirt-proxy)', () => {
  it('moves a running libvirt guest and its disk from the source host to the destination: it counts on there, and is gone here', async () => {
    const domain = 'xmig-lv1';
    // The disk: random data at the source, zeros at the destination (as libvirt wants it, pre-created).
    const image = `/var/lib/libvirt/images/${domain}.raw`;
    const data = Buffer.concat([randomBytes(4 * 1024 * 1024), Buffer.alloc(DISK_BYTES - 4 * 1024 * 1024)]);
    writeFileSync(source.libPath('images', `${domain}.raw`), data);
    writeFileSync(destination.libPath('images', `${domain}.raw`), Buffer.alloc(DISK_BYTES));
    await startGuest(domain, image);
    const stats = join(dir, `${domain}-proxy.json`);
    const proxy = await startSourceProxy(domain, stats);

    const started = Date.now();
    // --timeout: should pre-copy still not converge in 120 s, libvirt suspends the guest to finish.
    const migrate = await source.virsh(...virshMigrateCommand(DEFAULT_LIBVIRT_PROXY_DIR, domain, { storage: true }).slice(1), '--timeout', '120');
    const tookMs = Date.now() - started;
    expect(migrate.code, trail(migrate, proxy)).toBe(0);
    console.log(`libvirt e2e: virsh migrate --live --p2p --copy-storage-all took ${tookMs} ms`);

    // Gone from the source (a transient domain leaves no definition behind), running at the destination.
    expect(await source.domains()).not.toContain(domain);
    expect(await destination.domainState(domain)).toBe('running');
    const atSource = serialLog(serial(source, domain));
    const lastAtSource = Math.max(...countsIn(atSource));
    await waitFor(() => countsIn(serialLog(serial(destination, domain))).length >= 5, 60_000, `${domain} to count at the destination`);
    // The count goes on where it stopped, nothing lost or repeated: read across both consoles, as
    // one, so that a line the switchover cut in two (begun at the source, ended here) reads whole.
    const across = countsIn(atSource + serialLog(serial(destination, domain)));
    const from = across.lastIndexOf(lastAtSource);
    expect(across.slice(from, from + 6)).toEqual([0, 1, 2, 3, 4, 5].map((n) => lastAtSource + n));
    // The disk came across through the NBD channel, byte for byte.
    expect(readFileSync(destination.libPath('images', `${domain}.raw`)).equals(data)).toBe(true);

    // Every byte went over xianet: the source proxy counted each channel.
    expect(await proxy.stop()).toBe(0);
    const carried = JSON.parse(readFileSync(stats, 'utf8')) as { channels: Record<string, { toRemote: number; fromRemote: number; connections: number }> };
    expect(carried.channels['libvirtd']!.connections).toBeGreaterThanOrEqual(1);
    expect(carried.channels['libvirtd']!.fromRemote).toBeGreaterThan(0);
    expect(carried.channels['migration']!.toRemote).toBeGreaterThan(1024 * 1024);
    expect(carried.channels['nbd']!.toRemote).toBeGreaterThan(4 * 1024 * 1024);
    const joined = target!.logs.filter((l) => l['event'] === 'libvirt-proxy.joined' && l['vm'] === domain).map((l) => l['channel']);
    expect(new Set(joined)).toEqual(new Set(['libvirtd', 'migration', 'nbd']));
    // The target counted them too, on a /metrics that promtool takes. Its port is in the
    // destination's network namespace: fetched from in there.
    const url = (await target!.waitForLog('metrics.listening', 5000))['url'] as string;
    const scraped = await destination.run([process.execPath, '-e', `fetch(${JSON.stringify(url)}).then((r) => r.text()).then((t) => process.stdout.write(t))`], 30_000);
    expect(scraped.code, scraped.stderr).toBe(0);
    const fromSource = /^xmig_libvirt_proxy_bytes_total\{channel="migration",direction="from_source"\} (\d+)$/m.exec(scraped.stdout);
    expect(Number(fromSource?.[1])).toBe(carried.channels['migration']!.toRemote);
    if (commandExists('promtool')) {
      const check = spawnSync('promtool', ['check', 'metrics'], { input: scraped.stdout, encoding: 'utf8' });
      expect(`${check.stdout}${check.stderr}`).toBe('');
    }
  }, 300_000);

  it('fails the migration and keeps the guest running at the source when the proxy target dies in the middle', async () => {
    const domain = 'xmig-lv2';
    await startGuest(domain);
    const proxy = await startSourceProxy(domain, join(dir, `${domain}-proxy.json`));
    // 1 MiB/s: a migration with a middle to kill it in.
    const migration = source.virsh(...virshMigrateCommand(DEFAULT_LIBVIRT_PROXY_DIR, domain).slice(1), '--bandwidth', '1');
    await waitFor(async () => (await memoryProcessedMiB(domain)) >= 1, 90_000, 'the migration to move some memory');
    target!.child.kill('SIGKILL');
    const result = await migration;
    expect(result.code, trail(result, proxy)).not.toBe(0);
    expect(result.stderr).toMatch(/error/i);
    console.log(`libvirt e2e: virsh migrate after the proxy target was killed: ${result.stderr.trim()}`);
    // libvirt gave the guest back to the source, and it goes on counting there.
    expect(await source.domainState(domain)).toBe('running');
    const before = Math.max(...serialCounts(serial(source, domain)));
    await waitFor(() => Math.max(...serialCounts(serial(source, domain))) > before + 3, 60_000, `${domain} to go on counting at the source`);
    // The destination dropped its half-made copy.
    await waitFor(async () => !(await destination.domains()).includes(domain), 60_000, `the destination to drop ${domain}`);
    expect(await proxy.stop()).toBe(0);
    target = undefined;
  }, 300_000);
});
