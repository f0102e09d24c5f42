/**
 * `xmig lab` on bad input and interrupted: an unknown topology, a missing kernel, a
 * namespace name that is taken, a guest that does not come up in time, Ctrl-C during the
 * boot — each one line on stderr, a non-zero exit, and nothing of the run left: no
 * namespace with its prefix, no QEMU.
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ExitCode } from '../../cli/exit-codes.js';
import { findBusybox, findKernels } from '../../lab/image/host-inputs.js';
import { listNamespaces, newRunPrefix, run } from '../../lab/netns.js';
import { qemuMajor, QEMU_REMEDY } from '../../lab/qemu-command.js';
import { isRoot, requirement } from '../support/requirements.js';
import { XMIG_ARGV } from '../support/processes.js';

const ready = requirement(
  isRoot() && (qemuMajor() ?? 0) >= 10 && findKernels().length > 0 && findBusybox() !== undefined,
  'root, QEMU 10 or later, a kernel with modules in /boot and a static busybox',
  QEMU_REMEDY,
);
const dir = mkdtempSync(join(tmpdir(), 'xmig-lab-errors-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

interface Ran {
  code: number | null;
  stderr: string;
}

function lab(args: string[], timeoutMs = 600_000): Promise<Ran> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [...XMIG_ARGV, 'lab', '--no-progress', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    child.stdout.resume();
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`xmig lab ${args.join(' ')} did not end within ${timeoutMs} ms`));
    }, timeoutMs);
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stderr });
    });
  });
}

const left = async (prefix: string): Promise<string[]> => (await listNamespaces()).filter((n) => n.startsWith(`${prefix}-`));
/** QEMUs whose files are under `path` (the run directory): none may outlive the run. */
const qemusUnder = (path: string): string => spawnSync('pgrep', ['-af', `qemu-system.*${path}`], { encoding: 'utf8' }).stdout.trim();

function oneLine(ran: Ran, pattern: RegExp): void {
  const lines = ran.stderr.trim().split('\n');
  expect(lines, ran.stderr).toHaveLength(1);
  expect(lines[0]).toMatch(pattern);
}

describe('xmig lab refuses bad input in one line', () => {
  it('an unknown topology', async () => {
    const prefix = newRunPrefix();
    const ran = await lab(['--topology', 'mesh', '--prefix', prefix], 60_000);
    expect(ran.code).toBe(ExitCode.CONFIG);
    oneLine(ran, /^xmig: unknown topology "mesh" \(known: intra-ad, inter-ad\)$/);
    expect(await left(prefix)).toEqual([]);
  }, 90_000);

  it('dbench without a disk, and a disk too small for its data', async () => {
    const prefix = newRunPrefix();
    const dbench = await lab(['--workload', 'dbench', '--prefix', prefix], 60_000);
    expect(dbench.code).toBe(ExitCode.CONFIG);
    oneLine(dbench, /^xmig: the dbench workload writes to the VM's disk: give it one \(--disk, or --storage shared\)$/);
    const small = await lab(['--disk', '--disk-size', '100', '--disk-data', '200', '--prefix', prefix], 60_000);
    expect(small.code).toBe(ExitCode.CONFIG);
    oneLine(small, /^xmig: 200 MB of seed data do not fit a 100 MB disk$/);
    expect(await left(prefix)).toEqual([]);
  }, 90_000);
});

describe.skipIf(!ready)('xmig lab fails cleanly', () => {
  it('a missing kernel: one line, and the namespaces it had made are gone', async () => {
    const prefix = newRunPrefix();
    const ran = await lab(['--kernel', '/nonexistent/vmlinuz-0.0', '--prefix', prefix, '--dir', join(dir, 'kernel')], 120_000);
    expect(ran.code).not.toBe(0);
    oneLine(ran, /^xmig: no kernel at \/nonexistent\/vmlinuz-0\.0$/);
    expect(await left(prefix)).toEqual([]);
  }, 150_000);

  it('a namespace name that is taken: one line, its own namespaces gone, the other left alone', async () => {
    const prefix = newRunPrefix();
    await run('ip', ['netns', 'add', `${prefix}-B`]);
    try {
      const ran = await lab(['--prefix', prefix, '--dir', join(dir, 'taken')], 120_000);
      expect(ran.code).not.toBe(0);
      oneLine(ran, new RegExp(`^xmig: network namespace ${prefix}-B already exists`));
      expect(await left(prefix)).toEqual([`${prefix}-B`]);
    } finally {
      await run('ip', ['netns', 'del', `${prefix}-B`]);
    }
  }, 150_000);

  it('a guest that does not come up in time: one line naming what it last printed, nothing left', async () => {
    const prefix = newRunPrefix();
    const ran = await lab(['--topology', 'intra-ad', '--boot-timeout', '3', '--prefix', prefix, '--dir', join(dir, 'late')]);
    expect(ran.code).not.toBe(0);
    oneLine(ran, /^xmig: guest vm did not come up: no guest vm ready within 3 s; /);
    expect(await left(prefix)).toEqual([]);
    expect(qemusUnder(join(dir, 'late'))).toBe('');
  }, 600_000);

  it('Ctrl-C during the boot: stops, and removes every namespace and process it made', async () => {
    const prefix = newRunPrefix();
    const child = spawn(process.execPath, [...XMIG_ARGV, 'lab', '--topology', 'intra-ad', '--prefix', prefix, '--dir', join(dir, 'interrupted')], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    // Progress lines (not a terminal): interrupt once the hosts are up, as QEMU boots.
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no hosts phase: ${stderr}`)), 480_000);
      child.stderr!.on('data', (c: Buffer) => {
        stderr += c.toString();
        if (/lab: hosts /.test(stderr)) {
          clearTimeout(timer);
          resolve();
        }
      });
    });
    child.kill('SIGINT');
    const code = await exited;
    expect(code, stderr).not.toBe(0);
    expect(stderr).toMatch(/lab: SIGINT: stopping/);
    expect(await left(prefix)).toEqual([]);
    expect(qemusUnder(join(dir, 'interrupted'))).toBe('');
  }, 600_000);
});
