/**
 * Full migration of a real guest on QEMU 10 (TCG): RAM and disk, A → B over xianet. The
 * guest runs from a busybox initramfs with an ext4 disk (256 MiB qcow2, made on the host
 * with mkfs.ext4 -d) that it keeps writing files to; the destination starts from an empty
 * image. At the destination the guest reads every file back from its disk (page cache
 * dropped) — the one written on the host before, those written at the source before and
 * during the move, those written at the destination — and each must have the checksum
 * it had when written; then it unmounts and e2fsck finds the destination image clean.
 *
 * And when the tunnel dies mid-mirror (its far end, xmig disk-target, killed), the
 * migration fails and the source guest runs on, on its own disk, which reads back right
 * and checks clean.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, openSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WellKnownSid } from '../../shared/xid.js';
import { QmpClient } from '../../mover/qmp-client.js';
import { commandExists, requirement } from '../support/requirements.js';
import { runXmig, startXmig, XMIG_ARGV, type XmigProcess } from '../support/processes.js';
import { MIGRATION_HOSTS, UdpNetwork } from '../support/udp-network.js';
import { waitFor } from '../support/wait.js';
import {
  buildInitramfs,
  DISK_CHECK,
  DISK_MODULES,
  DISK_UNMOUNTED,
  DISK_WROTE,
  diskLines,
  findBusybox,
  findKernel,
  kernelRelease,
  moduleFiles,
  QEMU_REMEDY,
  qemuArgs,
  qemuMajor,
  serialCounts,
  serialLog,
} from './guest.js';

const kernel = findKernel();
const busybox = findBusybox();
const modules = kernel ? moduleFiles(kernelRelease(kernel), DISK_MODULES) : undefined;
const hasQemu = requirement(
  (qemuMajor() ?? 0) >= 10 && kernel !== undefined && busybox !== undefined && modules !== undefined && commandExists('cpio') && commandExists('qemu-img') && commandExists('mkfs.ext4') && commandExists('e2fsck'),
  "QEMU 10 or later, qemu-img, a kernel in /boot with its virtio_blk and ext4 modules, static busybox, cpio, mkfs.ext4 and e2fsck",
  `${QEMU_REMEDY}; apt-get install -t bookworm-backports qemu-utils; apt-get install e2fsprogs`,
);

const MIB = 1024 * 1024;
const dir = mkdtempSync(join(tmpdir(), 'xmig-e2e-full-'));
process.env['XMIG_STATUS_DIR'] = join(dir, 'status');
const network = new UdpNetwork(MIGRATION_HOSTS);
const qemus: ChildProcess[] = [];
let initramfs = '';
/** The file put on the disk before the guest ever ran, and its checksum. */
let beforeSha1 = '';

function sh(command: string, args: string[]): string {
  const result = spawnSync(command, args, { encoding: 'utf8' });
  if (result.status !== 0) throw new Error(`${command} ${args.join(' ')}: ${result.stderr}`);
  return result.stdout;
}

/** The guest's disk: ext4 with before.bin in it, as a qcow2 image. */
function guestDisk(name: string): string {
  const raw = join(dir, `${name}.raw`);
  sh('mkfs.ext4', ['-q', '-F', '-d', join(dir, 'disk-root'), raw, '256M']);
  const image = join(dir, `${name}.qcow2`);
  sh('qemu-img', ['convert', '-O', 'qcow2', raw, image]);
  rmSync(raw);
  return image;
}

/** e2fsck of an image the guest has unmounted and QEMU has let go of: true if clean. */
function fsckClean(image: string): { clean: boolean; output: string } {
  const raw = `${image}.fsck.raw`;
  sh('qemu-img', ['convert', '-O', 'raw', image, raw]);
  const result = spawnSync('e2fsck', ['-f', '-n', raw], { encoding: 'utf8' });
  rmSync(raw);
  return { clean: result.status === 0, output: result.stdout + result.stderr };
}

interface Guest {
  log: string;
  qmp: string;
  observer: string;
  commands: string;
  process: ChildProcess;
}

function startGuest(name: string, image: string, incoming?: string): Guest {
  const log = join(dir, `${name}.log`);
  const qmp = join(dir, `${name}.qmp`);
  const observer = join(dir, `${name}.observer.qmp`);
  const commands = join(dir, `${name}.cmd`);
  const stderr = openSync(join(dir, `${name}.stderr`), 'w');
  const args = qemuArgs({ kernel: kernel!, initramfs, memoryMb: 128, serialLog: log, qmpSocket: qmp, observerSocket: observer, incoming, commandSocket: commands, disk: { image, format: 'qcow2' }, guestEnv: { XMIG_DISK: 1, XMIG_DIRTY_BLOCKS: 8 } });
  const qemu = spawn('qemu-system-x86_64', args, { stdio: ['ignore', 'ignore', stderr] });
  qemus.push(qemu);
  return { log, qmp, observer, commands, process: qemu };
}

/** Tells the guest to stop writing, read every file back from its disk, and unmount. */
async function finish(guest: Guest): Promise<void> {
  const socket = connect(guest.commands);
  await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
  socket.on('error', () => undefined);
  await waitFor(
    () => {
      socket.write('finish\n');
      return serialLog(guest.log).includes(DISK_UNMOUNTED);
    },
    60_000,
    'the guest to read its files back and unmount',
    1000,
  );
  socket.destroy();
}

async function quit(guest: Guest): Promise<void> {
  const qmp = await QmpClient.connect(guest.observer);
  const exited = new Promise<void>((resolve) => guest.process.once('exit', () => resolve()));
  await qmp.execute('quit').catch(() => undefined);
  await qmp.close();
  await exited;
}

function destination(name: string, image: string): Guest {
  const recv = `${[process.execPath, ...XMIG_ARGV].join(' ')} recv --api ${network.api('B')} --resume-deadline-ms 1000`;
  return startGuest(name, image, `exec:${recv}`);
}

async function diskTarget(qmp: string): Promise<XmigProcess> {
  const target = startXmig(['disk-target', '--qmp', qmp, '--api', network.api('B')]);
  await target.waitForLog('disk-target.listening', 30_000);
  return target;
}

const receiver = (): string => network.serviceDag('B', 'AD1', WellKnownSid.MIGRATION).toString();

beforeAll(async () => {
  if (!hasQemu) return;
  initramfs = buildInitramfs(dir, busybox!, modules);
  mkdirSync(join(dir, 'disk-root'));
  const before = randomBytes(2 * MIB);
  writeFileSync(join(dir, 'disk-root', 'before.bin'), before);
  beforeSha1 = createHash('sha1').update(before).digest('hex');
  await network.start();
}, 60_000);

afterAll(async () => {
  for (const q of qemus) q.kill('SIGKILL');
  if (hasQemu) await network.stop();
  if (process.env['XMIG_KEEP_E2E']) console.error(`kept ${dir}`);
  else rmSync(dir, { recursive: true, force: true });
});

describe.skipIf(!hasQemu)('full migration (RAM and disk) of a real QEMU guest over xianet', () => {
  it('moves the guest with its disk: every file reads back right at B, and B\'s image checks clean', async () => {
    const source = startGuest('full-src', guestDisk('full-src'));
    const destImage = join(dir, 'full-dst.qcow2');
    sh('qemu-img', ['create', '-f', 'qcow2', destImage, '256M']);
    const dest = destination('full-dst', destImage);
    await waitFor(() => diskLines(source.log, DISK_WROTE).size >= 3, 120_000, 'the source guest to mount its disk and write to it');
    expect(diskLines(source.log, DISK_CHECK).get('before.bin')).toBe(beforeSha1);
    const target = await diskTarget(dest.qmp);
    const writtenBefore = diskLines(source.log, DISK_WROTE).size;
    const result = await runXmig(['migrate', '--qmp', source.qmp, '--to', receiver(), '--api', network.api('A'), '--disk', '--report', join(dir, 'full-report.json'), '--json', '--no-progress'], 240_000);
    expect(result.code, result.stderr + result.stdout).toBe(0);
    const report = JSON.parse(result.stdout) as { status: string; bytes: number; downtimeMs: number; disk: { status: string; wire: { toTarget: number }; phases: Array<{ phase: string }> } };
    expect(report).toMatchObject({ status: 'completed', disk: { status: 'completed' } });
    expect(report.disk.phases.map((p) => p.phase)).toEqual(['mirror-sync', 'ready', 'ram', 'switchover', 'complete']);
    expect(report.bytes).toBeGreaterThan(0);
    // What crossed is what the guest's filesystem holds, not its 256 MiB.
    expect(report.disk.wire.toTarget).toBeLessThan(64 * MIB);
    expect(await target.exited).toBe(0);
    const atSource = diskLines(source.log, DISK_WROTE);
    // Written during the move: after the migration was started, before the source stopped.
    expect(atSource.size).toBeGreaterThan(writtenBefore);
    await waitFor(() => diskLines(dest.log, DISK_WROTE).size >= 2, 60_000, 'the guest to write on at B');
    await finish(dest);
    const readBack = diskLines(dest.log, DISK_CHECK);
    expect(readBack.get('before.bin')).toBe(beforeSha1);
    const written = new Map([...atSource, ...diskLines(dest.log, DISK_WROTE)]);
    for (const [file, sha1] of written) expect(readBack.get(file), file).toBe(sha1);
    expect([...readBack.keys()].sort()).toEqual([...written.keys(), 'before.bin'].sort());
    await quit(dest);
    const fsck = fsckClean(destImage);
    expect(fsck.clean, fsck.output).toBe(true);
  }, 360_000);

  it('fails the migration when the tunnel dies mid-mirror: the source guest runs on, on its intact disk', async () => {
    const sourceImage = guestDisk('cut-src');
    const source = startGuest('cut-src', sourceImage);
    const destImage = join(dir, 'cut-dst.qcow2');
    sh('qemu-img', ['create', '-f', 'qcow2', destImage, '256M']);
    const dest = destination('cut-dst', destImage);
    await waitFor(() => diskLines(source.log, DISK_WROTE).size >= 3, 120_000, 'the source guest to mount its disk and write to it');
    const target = await diskTarget(dest.qmp);
    // 1 MiB/s (QEMU counts the holes in the rate too): the mirror is still copying when the tunnel goes.
    const migration = runXmig(['migrate', '--qmp', source.qmp, '--to', receiver(), '--api', network.api('A'), '--disk', '--disk-max-bandwidth', '1', '--json', '--no-progress'], 240_000);
    const observer = await QmpClient.connect(source.observer);
    await waitFor(async () => (((await observer.execute('query-block-jobs')) as Array<{ offset: number; ready: boolean }>)[0]?.offset ?? 0) > MIB, 120_000, 'the mirror to be under way');
    target.child.kill('SIGKILL');
    const result = await migration;
    expect(result.code, result.stderr + result.stdout).toBe(1);
    const report = JSON.parse(result.stdout) as { status: string; error: string; disk: { status: string } };
    expect(report).toMatchObject({ status: 'failed', disk: { status: 'failed' } });
    expect(report.error).toMatch(/disk|tunnel|control connection/);
    // The source: running on its own disk, no job, no NBD node of ours.
    expect(((await observer.execute('query-status')) as { status: string }).status).toBe('running');
    expect(await observer.execute('query-block-jobs')).toEqual([]);
    expect(((await observer.execute('query-named-block-nodes')) as Array<{ 'node-name': string }>).map((n) => n['node-name']).filter((n) => n.startsWith('xmig'))).toEqual([]);
    await observer.close();
    const counted = Math.max(...serialCounts(source.log));
    const wrote = diskLines(source.log, DISK_WROTE).size;
    await waitFor(() => Math.max(...serialCounts(source.log)) > counted + 3 && diskLines(source.log, DISK_WROTE).size > wrote + 2, 60_000, 'the source guest to count and write on');
    await finish(source);
    const readBack = diskLines(source.log, DISK_CHECK);
    expect(readBack.get('before.bin')).toBe(beforeSha1);
    for (const [file, sha1] of diskLines(source.log, DISK_WROTE)) expect(readBack.get(file), file).toBe(sha1);
    await quit(source);
    const fsck = fsckClean(sourceImage);
    expect(fsck.clean, fsck.output).toBe(true);
    dest.process.kill('SIGKILL');
  }, 360_000);
});
