/**
 * The destination's image file, seen from outside QEMU with QEMU's own tools
 * (qemu-utils): what format the file really is, and wiping what a failed disk
 * migration wrote into it.
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { XmigError } from '../shared/errors.js';

export const QEMU_UTILS_REMEDY = 'apt-get install -t bookworm-backports qemu-utils';
const TOOL_TIMEOUT_MS = 60_000;

function run(tool: string, args: string[]): Promise<{ stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    execFile(tool, args, { timeout: TOOL_TIMEOUT_MS, maxBuffer: 4 * 1024 * 1024 }, (error, stdout, stderr) => {
      if (!error) return resolve({ stdout, stderr });
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return reject(new XmigError('ERR_CONFIG', `${tool} is not installed (${QEMU_UTILS_REMEDY})`));
      // qemu-img's own reason is its first line, "qemu-img: <file>: <why>".
      const reason = (stderr.split('\n').find((l) => l.trim()) ?? error.message).replace(/^qemu-(img|io): /, '').trim();
      reject(new XmigError('ERR_CONFIG', reason));
    });
  });
}

export interface ImageFacts {
  /** The format qemu-img finds the file to be (it probes; nothing is assumed). */
  format: string;
  bytes: number;
  backingFile?: string;
}

/** A local image file's real format, asked of qemu-img without opening it for writing (QEMU holds it). */
export async function probeImage(file: string): Promise<ImageFacts> {
  const { stdout } = await run('qemu-img', ['info', '--force-share', '--output=json', file]);
  let info: { format?: unknown; 'virtual-size'?: unknown; 'backing-filename'?: unknown };
  try {
    info = JSON.parse(stdout) as typeof info;
  } catch {
    throw new XmigError('ERR_CONFIG', `qemu-img info ${file}: not the JSON it should print`);
  }
  if (typeof info.format !== 'string' || typeof info['virtual-size'] !== 'number') throw new XmigError('ERR_CONFIG', `qemu-img info ${file}: no format or size`);
  return { format: info.format, bytes: info['virtual-size'], ...(typeof info['backing-filename'] === 'string' ? { backingFile: info['backing-filename'] } : {}) };
}

/** Whether `file` is a local image file qemu-img can look at (not an nbd: or other network URI). */
export function isLocalImage(file: string): boolean {
  return file.startsWith('/') && existsSync(file);
}

/**
 * Wipes the guest-visible contents of an image QEMU no longer holds: zeroes with unmap,
 * so a sparse image stays sparse (raw: holes punched; qcow2: clusters freed). An image
 * on a backing file is discarded instead, back to showing its backing file, as it was
 * before the migration wrote into it.
 */
export async function discardImage(file: string, format: string, bytes: number, hasBacking: boolean): Promise<void> {
  // qemu-io takes at most 2 GiB a request: a 4 GB disk is wiped in steps.
  const commands: string[] = [];
  for (let at = 0; at < bytes; at += DISCARD_STEP) {
    const length = Math.min(DISCARD_STEP, bytes - at);
    commands.push('-c', hasBacking ? `discard ${at} ${length}` : `write -z -u ${at} ${length}`);
  }
  if (!commands.length) return;
  // A QEMU that has just died may not have let go of its lock on the image yet.
  for (let attempt = 0; ; attempt++) {
    try {
      await run('qemu-io', ['-f', format, ...commands, file]);
      return;
    } catch (error) {
      if (!/lock/i.test((error as Error).message) || attempt >= LOCK_RETRIES) throw error;
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  }
}

/** 200 ms apart: ten seconds for the image's lock to be released. */
const LOCK_RETRIES = 50;

const DISCARD_STEP = 1024 * 1024 * 1024;
