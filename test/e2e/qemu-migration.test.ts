/**
 * Real QEMU (TCG), a real guest, migrated live between two QEMU processes through
 * `xmig send` / `xmig recv` over xianet (router R1, hosts A and B as daemons on
 * UDP). The guest counts on its serial console; the count must go on at the
 * destination where it stopped at the source. And when `xmig recv` is killed in
 * the middle, QEMU must report the migration failed and the source go on counting.
 * The same over QEMU's own `unix:` channel held by the nodes (`xmig migrate --channel
 * unix`, `xmig recv --qemu-socket`): no xmig process between QEMU and a node. The
 * source's `xmig send` runs in node A (`--via-node`, the default, which takes QEMU's
 * pipe over); the cancel test runs it in `xmig send` itself (`--no-via-node`).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, openSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { WellKnownSid } from '../../shared/xid.js';
import { QmpClient } from '../../mover/qmp-client.js';
import { commandExists, requirement } from '../support/requirements.js';
import { runXmig, XMIG_ARGV } from '../support/processes.js';
import { MIGRATION_HOSTS, UdpNetwork } from '../support/udp-network.js';
import { buildInitramfs, findBusybox, findKernel, QEMU_REMEDY, qemuArgs, qemuMajor, serialCounts } from './guest.js';
import { waitFor } from '../support/wait.js';

const kernel = findKernel();
const busybox = findBusybox();
const hasQemu = requirement(
  (qemuMajor() ?? 0) >= 10 && kernel !== undefined && busybox !== undefined && commandExists('cpio'),
  'QEMU 10 or later, a kernel in /boot, static busybox or cpio',
  QEMU_REMEDY,
);

const dir = mkdtempSync(join(tmpdir(), 'xmig-e2e-'));
// `xmig migrate` publishes its progress here, and `xmig migrate status` reads it (both inherit this).
process.env['XMIG_STATUS_DIR'] = join(dir, 'status');
const network = new UdpNetwork(MIGRATION_HOSTS);
const qemus: ChildProcess[] = [];
let initramfs = '';

function startQemu(name: string, incoming?: string): { log: string; qmp: string; observer: string; process: ChildProcess } {
  const log = join(dir, `${name}.log`);
  const qmp = join(dir, `${name}.qmp`);
  const observer = join(dir, `${name}.observer.qmp`);
  // QEMU's stderr, and that of the xmig it runs, goes to a file: a pipe nobody reads would
  // fill up and stall them, and the file is what to read when this test fails.
  const stderr = openSync(join(dir, `${name}.stderr`), 'w');
  const qemu = spawn('qemu-system-x86_64', qemuArgs({ kernel: kernel!, initramfs, memoryMb: 128, serialLog: log, qmpSocket: qmp, observerSocket: observer, incoming }), {
    stdio: ['ignore', 'ignore', stderr],
  });
  qemus.push(qemu);
  return { log, qmp, observer, process: qemu };
}

/** The destination: QEMU waiting for its migration stream from `xmig recv` on host B. */
function startDestination(name: string, statsFile: string): { log: string; qmp: string; observer: string } {
  const recv = `${[process.execPath, ...XMIG_ARGV].join(' ')} recv --api ${network.api('B')} --stats ${statsFile} --resume-deadline-ms 1000`;
  return startQemu(name, `exec:${recv}`);
}

/**
 * The destination over QEMU's unix: channel: QEMU listens on a socket, and `xmig recv
 * --qemu-socket` (alive for as long as the migration) has node B connect to it.
 */
function startUnixDestination(name: string, statsFile: string): { log: string; qmp: string; observer: string; recv: ReturnType<typeof runXmig> } {
  const socket = join(dir, `${name}.incoming.sock`);
  const qemu = startQemu(name, `unix:${socket}`);
  const recv = runXmig(['recv', '--api', network.api('B'), '--qemu-socket', socket, '--stats', statsFile, '--resume-deadline-ms', '1000'], 240_000);
  recv.catch(() => undefined);
  return { ...qemu, recv };
}

/** Waits until QEMU reports the migration under way. */
async function activeMigration(qmp: QmpClient): Promise<void> {
  let status = '';
  const deadline = Date.now() + 20_000;
  while (status !== 'active') {
    if (Date.now() > deadline) throw new Error(`the migration never became active (last status: ${status || 'none'})`);
    await new Promise((r) => setTimeout(r, 100));
    status = ((await qmp.execute('query-migrate')) as { status?: string }).status ?? '';
  }
}

type Parameters = Record<string, unknown>;
type Capabilities = Array<{ capability: string; state: boolean }>;

/** What `xmig migrate` changes on the source QEMU: it must put all of it back. */
async function tuningOf(qmp: QmpClient): Promise<{ parameters: Parameters; capabilities: Record<string, boolean> }> {
  const p = await qmp.execute<Parameters>('query-migrate-parameters');
  const c = await qmp.execute<Capabilities>('query-migrate-capabilities');
  return {
    parameters: { 'max-bandwidth': p['max-bandwidth'], 'downtime-limit': p['downtime-limit'], 'xbzrle-cache-size': p['xbzrle-cache-size'] },
    capabilities: Object.fromEntries(c.filter((x) => ['events', 'auto-converge', 'xbzrle'].includes(x.capability)).map((x) => [x.capability, x.state])),
  };
}

/** The migration did not happen: the source VM is running and its guest goes on counting. */
async function expectSourceRunsOn(qmp: QmpClient, log: string): Promise<void> {
  expect(((await qmp.execute('query-status')) as { status: string }).status).toBe('running');
  const before = Math.max(...serialCounts(log));
  await waitFor(() => Math.max(...serialCounts(log)) > before + 3, 20_000, 'the source guest to go on counting');
  await qmp.close();
}

beforeAll(async () => {
  if (!hasQemu) return;
  initramfs = buildInitramfs(dir, busybox!);
  await network.start();
}, 60_000);

/**
 * Each test's guests end with it: left running, they kept counting and rewriting memory
 * under TCG, and by the third test four guests starved the one that had to boot (3 of 5
 * tests timed out waiting for its first counts, at load 10).
 */
async function killQemus(): Promise<void> {
  const running = qemus.splice(0).filter((q) => q.exitCode === null && q.signalCode === null);
  await Promise.all(running.map((q) => new Promise((resolve) => {
    q.once('exit', resolve);
    q.kill('SIGKILL');
  })));
}

afterEach(killQemus);

afterAll(async () => {
  await killQemus();
  if (hasQemu) await network.stop();
  if (process.env['XMIG_KEEP_E2E']) console.error(`kept ${dir}`);
  else rmSync(dir, { recursive: true, force: true });
});

describe.skipIf(!hasQemu)('live migration of a real QEMU guest over xianet', () => {
  const receiver = (): string => network.serviceDag('B', 'AD1', WellKnownSid.MIGRATION).toString();

  it('moves the running guest from A to B: the count goes on where it stopped', async () => {
    const source = startQemu('source');
    const destination = startDestination('destination', join(dir, 'recv-ok.json'));
    await waitFor(() => serialCounts(source.log).length >= 10, 120_000, 'the source guest to count');
    const observer = await QmpClient.connect(source.observer);
    const before = await tuningOf(observer);
    const result = await runXmig(['migrate', '--qmp', source.qmp, '--to', receiver(), '--api', network.api('A'), '--report', join(dir, 'report.json'), '--json', '--no-progress'], 120_000);
    expect(result.code, result.stderr + result.stdout).toBe(0);
    const report = JSON.parse(result.stdout) as { status: string; downtimeMs: number; totalTimeMs: number; qemuVersion: string; passes: number; mover: { bytes: number } };
    expect(report.status).toBe('completed');
    expect(report.mover.bytes).toBeGreaterThan(0);
    expect(Number(report.qemuVersion.split('.')[0])).toBeGreaterThanOrEqual(10);
    expect(report.passes).toBeGreaterThanOrEqual(1);
    // By default the sender runs in node A, which took QEMU's exec: pipe over from xmig send.
    expect(network.processes.get('A')!.logs.some((l) => l['event'] === 'mover.pipe-taken' && l['fd'] === 0)).toBe(true);
    // The bandwidth cap and downtime limit it lifted for the migration are QEMU's own again.
    expect(await tuningOf(observer)).toEqual(before);
    await observer.close();
    const status = await runXmig(['migrate', 'status', '--qmp', source.qmp, '--json']);
    expect(JSON.parse(status.stdout)).toMatchObject({ status: 'completed', finished: true, qmp: source.qmp });
    const lastAtSource = Math.max(...serialCounts(source.log));
    await waitFor(() => serialCounts(destination.log).length >= 5, 30_000, 'the destination guest to count');
    const atDestination = serialCounts(destination.log);
    // The first count printed at B follows the last one at A: nothing was lost or repeated
    // beyond the line that was being printed at the switchover.
    expect(atDestination[0]!).toBeGreaterThanOrEqual(lastAtSource);
    expect(atDestination[0]!).toBeLessThanOrEqual(lastAtSource + 1);
    expect(atDestination[atDestination.length - 1]!).toBeGreaterThan(atDestination[0]!);
    const qmp = await QmpClient.connect(source.observer);
    expect(((await qmp.execute('query-status')) as { status: string }).status).toBe('postmigrate');
    await qmp.close();
    expect(existsSync(join(dir, 'report.svg'))).toBe(true);
  }, 300_000);

  it('fails the migration and keeps the source guest running when xmig recv dies', async () => {
    const source = startQemu('source2');
    startDestination('destination2', join(dir, 'recv-killed.json'));
    await waitFor(() => serialCounts(source.log).length >= 10, 120_000, 'the source guest to count');
    // Slow the migration down so there is a middle to kill it in.
    const migration = runXmig(['migrate', '--qmp', source.qmp, '--to', receiver(), '--api', network.api('A'), '--max-bandwidth', '1', '--json', '--no-progress'], 120_000);
    const qmp = await QmpClient.connect(source.observer);
    await activeMigration(qmp);
    await new Promise((r) => setTimeout(r, 500));
    const killed = spawnSync('pkill', ['-KILL', '-f', 'recv-killed.json']);
    expect(killed.status).toBe(0);
    const result = await migration;
    expect(result.code, result.stdout).toBe(1);
    const report = JSON.parse(result.stdout) as { status: string; error?: string };
    expect(report.status).toBe('failed');
    // The sender's own reason, not QEMU's "Broken pipe".
    expect(report.error).toMatch(/receiver|resum|connection/);
    await expectSourceRunsOn(qmp, source.log);
  }, 300_000);

  it("moves the running guest over QEMU's unix: channel into the nodes: the count goes on where it stopped", async () => {
    const source = startQemu('unix-source');
    const destination = startUnixDestination('unix-destination', join(dir, 'unix-recv-ok.json'));
    await waitFor(() => serialCounts(source.log).length >= 10, 120_000, 'the source guest to count');
    const result = await runXmig(['migrate', '--qmp', source.qmp, '--to', receiver(), '--api', network.api('A'), '--channel', 'unix', '--json', '--no-progress'], 120_000);
    expect(result.code, result.stderr + result.stdout).toBe(0);
    const report = JSON.parse(result.stdout) as { status: string; mover: { bytes: number } };
    expect(report.status).toBe('completed');
    expect(report.mover.bytes).toBeGreaterThan(0);
    const recv = await destination.recv;
    expect(recv.code, recv.stderr).toBe(0);
    const lastAtSource = Math.max(...serialCounts(source.log));
    await waitFor(() => serialCounts(destination.log).length >= 5, 30_000, 'the destination guest to count');
    const atDestination = serialCounts(destination.log);
    expect(atDestination[0]!).toBeGreaterThanOrEqual(lastAtSource);
    expect(atDestination[0]!).toBeLessThanOrEqual(lastAtSource + 1);
    // No socket of ours is left behind on the source host.
    expect(readdirSync(tmpdir()).filter((f) => f.startsWith(`xmig-qemu-`) && f.endsWith('.sock'))).toEqual([]);
  }, 300_000);

  it('fails a unix: channel migration and keeps the source guest running when xmig recv --qemu-socket dies', async () => {
    const source = startQemu('unix-source2');
    const destination = startUnixDestination('unix-destination2', join(dir, 'unix-recv-killed.json'));
    await waitFor(() => serialCounts(source.log).length >= 10, 120_000, 'the source guest to count');
    const migration = runXmig(['migrate', '--qmp', source.qmp, '--to', receiver(), '--api', network.api('A'), '--channel', 'unix', '--max-bandwidth', '1', '--json', '--no-progress'], 120_000);
    const qmp = await QmpClient.connect(source.observer);
    await activeMigration(qmp);
    await new Promise((r) => setTimeout(r, 500));
    expect(spawnSync('pkill', ['-KILL', '-f', 'unix-recv-killed.json']).status).toBe(0);
    const result = await migration;
    expect(result.code, result.stdout).toBe(1);
    const report = JSON.parse(result.stdout) as { status: string; error?: string };
    expect(report.status).toBe('failed');
    // The node's own reason (its receiver went away), not QEMU's broken channel: the node says
    // why on its socket before it breaks QEMU's.
    expect(report.error).toMatch(/receiver|resum|connection|went away/);
    expect((await destination.recv).code).not.toBe(0);
    await expectSourceRunsOn(qmp, source.log);
  }, 300_000);

  it('cancels the migration on Ctrl-C of xmig migrate: the source guest keeps running', async () => {
    const source = startQemu('source3');
    startDestination('destination3', join(dir, 'recv-cancelled.json'));
    await waitFor(() => serialCounts(source.log).length >= 10, 120_000, 'the source guest to count');
    const migration = runXmig(['migrate', '--qmp', source.qmp, '--to', receiver(), '--api', network.api('A'), '--max-bandwidth', '1', '--report', join(dir, 'cancel-report.json'), '--json', '--no-progress', '--no-via-node'], 120_000);
    const qmp = await QmpClient.connect(source.observer);
    await activeMigration(qmp);
    // Another shell sees it running.
    await waitFor(async () => (await runXmig(['migrate', 'status', '--json'])).stdout.includes('"status":"active"'), 20_000, 'xmig migrate status to show it active');
    await waitFor(async () => (((await qmp.execute('query-migrate')) as { ram?: { transferred: number } }).ram?.transferred ?? 0) > 0, 20_000, 'some RAM to move');
    expect(spawnSync('pkill', ['-INT', '-f', 'cancel-report.json']).status).toBe(0);
    const result = await migration;
    expect(result.code, result.stdout).toBe(130);
    const report = JSON.parse(result.stdout) as { status: string; cancelReason: string; bytes: number };
    expect(report).toMatchObject({ status: 'cancelled', cancelReason: 'signal' });
    expect(report.bytes).toBeGreaterThan(0);
    await expectSourceRunsOn(qmp, source.log);
  }, 300_000);

  it('forces the switchover at --timeout: the migration completes and the guest runs on at B', async () => {
    const source = startQemu('source4');
    const destination = startDestination('destination4', join(dir, 'recv-forced.json'));
    await waitFor(() => serialCounts(source.log).length >= 10, 120_000, 'the source guest to count');
    const result = await runXmig(['migrate', '--qmp', source.qmp, '--to', receiver(), '--api', network.api('A'), '--max-bandwidth', '1', '--timeout', '1', '--timeout-action', 'switchover', '--json', '--no-progress'], 120_000);
    expect(result.code, result.stderr + result.stdout).toBe(0);
    const report = JSON.parse(result.stdout) as { status: string; forcedSwitchoverAtMs: number };
    expect(report.status).toBe('completed');
    expect(report.forcedSwitchoverAtMs).toBeGreaterThanOrEqual(1000);
    const lastAtSource = Math.max(...serialCounts(source.log));
    await waitFor(() => serialCounts(destination.log).some((n) => n > lastAtSource), 30_000, 'the destination guest to count on');
  }, 300_000);

  it('aborts at --timeout with auto-converge and XBZRLE on: the source runs on, every setting as it was', async () => {
    const source = startQemu('source5');
    startDestination('destination5', join(dir, 'recv-aborted.json'));
    await waitFor(() => serialCounts(source.log).length >= 10, 120_000, 'the source guest to count');
    const qmp = await QmpClient.connect(source.observer);
    const before = await tuningOf(qmp);
    const result = await runXmig(['migrate', '--qmp', source.qmp, '--to', receiver(), '--api', network.api('A'), '--max-bandwidth', '1', '--auto-converge', '--compress', 'xbzrle', '--timeout', '1', '--timeout-action', 'abort', '--json', '--no-progress'], 120_000);
    expect(result.code, result.stderr + result.stdout).toBe(1);
    const report = JSON.parse(result.stdout) as { status: string; cancelReason: string; error: string; tuning: { capabilities: Record<string, boolean> } };
    expect(report).toMatchObject({ status: 'cancelled', cancelReason: 'timeout' });
    expect(report.tuning.capabilities).toMatchObject({ 'auto-converge': true, xbzrle: true });
    expect(report.error).toMatch(/not completed within 1000 ms/);
    expect(await tuningOf(qmp)).toEqual(before);
    await expectSourceRunsOn(qmp, source.log);
  }, 300_000);
});
