/**
 * The lab VM's disk, the paper's: a 4 GB virtual disk, sparse, with a few hundred MB used.
 * Made on the host before the VM ever boots — an ext4 file system (`mkfs.ext4 -d`) holding
 * seed files of random bytes whose SHA-1s the lab keeps, converted to a sparse qcow2 — and
 * read back on the host after the last move, with the guest's file system unmounted and
 * QEMU gone: e2fsck must find it clean, and every file the lab knows (the seeds, and the
 * last version of each file the guest wrote) must have the checksum it had when written.
 * debugfs reads the files out of the image without mounting it.
 *
 * Two storage modes, as the paper's testbed has them:
 *
 * | mode | the hosts' images | what moves |
 * |---|---|---|
 * | `shared` | one image file both QEMUs open (shared storage, as NFS would give) | RAM only |
 * | `full` | each host its own; the destination's starts empty ({@link emptyDisk}) | RAM and disk (`xmig migrate --disk`) |
 */
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, posix } from 'node:path';
import { ConfigError, XmigError } from '../shared/errors.js';

export type LabStorage = 'none' | 'shared' | 'full';
export const LAB_STORAGE_MODES: readonly LabStorage[] = ['none', 'shared', 'full'];

/** Debian packages of the tools this file runs (qemu-img from backports, as the QEMU it goes with). */
export const DISK_TOOLS_REMEDY = 'apt-get install e2fsprogs; apt-get install -t bookworm-backports qemu-utils';
export const DISK_TOOLS: readonly string[] = ['qemu-img', 'mkfs.ext4', 'e2fsck', 'debugfs'];

const MiB = 1024 * 1024;
/** Seed files are this big (the last one smaller): few enough to check one by one. */
const SEED_FILE_BYTES = 16 * MiB;
/** Where the seed files are in the guest's file system (the guest mounts it at /data). */
export const SEED_DIR = '/seed';
/** Tools read whole images; a stuck one is ended. */
const TOOL_DEADLINE_MS = 300_000;

export interface LabDiskOptions {
  /** The virtual disk's size (default 4096: the paper's 4 GB). */
  sizeMb?: number;
  /** Random bytes put in seed files before the VM boots (default 300). */
  seedMb?: number;
  signal?: AbortSignal;
}

export interface KnownFile {
  /** Absolute path inside the file system (not the guest's mount point). */
  path: string;
  sha1: string;
}

export interface LabDisk {
  file: string;
  format: 'qcow2';
  sizeBytes: number;
  seeds: KnownFile[];
}

export interface DiskCheck {
  /** e2fsck -f -n found nothing to fix. */
  clean: boolean;
  /** e2fsck's last lines when it did. */
  fsck?: string;
  /** Files read back and compared. */
  checked: number;
  /** Files whose bytes were not what was written (or that could not be read). */
  bad: Array<{ path: string; want: string; got: string }>;
}

function tool(command: string, args: readonly string[], signal?: AbortSignal, binary = false): Promise<{ stdout: Buffer | string; stderr: string; code: number }> {
  return new Promise((resolve, reject) => {
    execFile(command, args, { timeout: TOOL_DEADLINE_MS, maxBuffer: 64 * MiB, encoding: binary ? 'buffer' : 'utf8', ...(signal ? { signal } : {}) }, (error, stdout, stderr) => {
      const code = error && typeof (error as { code?: unknown }).code === 'number' ? ((error as { code: number }).code) : error ? -1 : 0;
      if (error && (error as NodeJS.ErrnoException).code === 'ENOENT') {
        reject(new XmigError('ERR_STATE', `${command} is not installed (${DISK_TOOLS_REMEDY})`));
        return;
      }
      if (error && code === -1) {
        reject(new XmigError('ERR_STATE', `${command} ${args.join(' ')}: ${error.message.split('\n')[0]}`, { cause: error }));
        return;
      }
      resolve({ stdout, stderr: String(stderr), code });
    });
  });
}

async function must(command: string, args: readonly string[], signal?: AbortSignal): Promise<void> {
  const result = await tool(command, args, signal);
  if (result.code !== 0) throw new XmigError('ERR_STATE', `${command} ${args.join(' ')}: ${(result.stderr.trim() || String(result.stdout).trim()).split('\n')[0]}`);
}

export function checkDiskSizes(sizeMb: number, seedMb: number): void {
  if (!Number.isInteger(sizeMb) || sizeMb < 64) throw new ConfigError(`the VM's disk must be a whole number of at least 64 MB (got ${sizeMb})`);
  if (!Number.isInteger(seedMb) || seedMb < 0) throw new ConfigError(`the disk's seed data must be a whole number of MB (got ${seedMb})`);
  // ext4's own metadata (inode tables, journal) takes about 5 % and at least 8 MB.
  if (seedMb > Math.floor(sizeMb * 0.9) - 8) throw new ConfigError(`${seedMb} MB of seed data do not fit a ${sizeMb} MB disk`);
}

/**
 * The source's disk: ext4 over the whole (sparse) disk with `seedMb` of random files in
 * /seed, as qcow2 at `file`. Returns what the files hold.
 */
export async function makeLabDisk(file: string, options: LabDiskOptions = {}): Promise<LabDisk> {
  const sizeMb = options.sizeMb ?? 4096;
  const seedMb = options.seedMb ?? 300;
  checkDiskSizes(sizeMb, seedMb);
  mkdirSync(dirname(file), { recursive: true });
  const work = mkdtempSync(join(dirname(file), '.disk-'));
  try {
    const root = join(work, 'root');
    mkdirSync(join(root, SEED_DIR), { recursive: true });
    const seeds: KnownFile[] = [];
    for (let left = seedMb * MiB, n = 0; left > 0; n++) {
      const bytes = Math.min(SEED_FILE_BYTES, left);
      const data = randomBytes(bytes);
      const path = posix.join(SEED_DIR, `s${String(n).padStart(3, '0')}`);
      writeFileSync(join(root, path), data);
      seeds.push({ path, sha1: createHash('sha1').update(data).digest('hex') });
      left -= bytes;
      options.signal?.throwIfAborted();
    }
    const raw = join(work, 'disk.raw');
    await must('mkfs.ext4', ['-q', '-F', '-E', 'root_owner=0:0', '-d', root, raw, `${sizeMb}M`], options.signal);
    await must('qemu-img', ['convert', '-q', '-f', 'raw', '-O', 'qcow2', raw, file], options.signal);
    return { file, format: 'qcow2', sizeBytes: sizeMb * MiB, seeds };
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

/** A destination's disk for full migration: empty (all holes), as big as the source's. */
export async function emptyDisk(file: string, sizeBytes: number, signal?: AbortSignal): Promise<void> {
  mkdirSync(dirname(file), { recursive: true });
  await must('qemu-img', ['create', '-q', '-f', 'qcow2', file, String(sizeBytes)], signal);
}

/**
 * Reads a disk the guest has unmounted and no QEMU holds: e2fsck (read-only) and every
 * `files` entry's bytes, out of a sparse raw copy of the image that goes afterwards.
 */
export async function checkLabDisk(file: string, files: readonly KnownFile[], signal?: AbortSignal): Promise<DiskCheck> {
  const work = mkdtempSync(join(dirname(file), '.check-'));
  try {
    const raw = join(work, 'disk.raw');
    await must('qemu-img', ['convert', '-q', '-O', 'raw', file, raw], signal);
    const fsck = await tool('e2fsck', ['-f', '-n', raw], signal);
    const bad: DiskCheck['bad'] = [];
    for (const known of files) {
      const read = await tool('debugfs', ['-R', `cat ${known.path}`, raw], signal, true);
      const stderr = read.stderr.split('\n').filter((l) => l.trim() && !/^debugfs [\d.]+ \(/.test(l));
      const got = stderr.length ? `unreadable: ${stderr[0]!.trim()}` : createHash('sha1').update(read.stdout as Buffer).digest('hex');
      if (got !== known.sha1) bad.push({ path: known.path, want: known.sha1, got });
    }
    const clean = fsck.code === 0;
    return {
      clean,
      ...(clean ? {} : { fsck: `${String(fsck.stdout)}${fsck.stderr}`.trim().split('\n').slice(-6).join(' | ') }),
      checked: files.length,
      bad,
    };
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}
