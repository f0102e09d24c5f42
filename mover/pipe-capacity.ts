/**
 * How much a pipe on the migration's path holds. Under `exec:` QEMU writes its stream into
 * a pipe, and the destination QEMU reads it from one; Linux gives a pipe 64 KiB, so when
 * one end is slower every 64 KiB costs the other a blocked write (or an empty read) and
 * a wake-up. Grown to 1 MiB where the mover opens QEMU's pipe, and read 256 KiB at a
 * time: `npm run bench mover` (FIFOs, as QEMU gives them; 3 interleaved A/B sets against
 * XMIG_PIPE_BYTES=0) moved the `--via-node` path at 289-298 MB/s against 227-271, with
 * 4.32-4.69 CPU-s/GB against 4.79-5.42, and the direct path at 8.05-8.38 against
 * 9.01-9.66; the QEMU benchmark moved within its spread (bench/README.md, 2026-12-07,
 * fourth session).
 *
 * Never shrinks a pipe; past what the kernel allows an unprivileged process
 * (/proc/sys/fs/pipe-max-size, 1 MiB by default) it takes that much. Without the native
 * addon, or with `XMIG_PIPE_BYTES=0` (for A/B runs), the pipe stays as it is and the
 * reason is reported. `XMIG_PIPE_BYTES=<n>` asks for another size.
 */
import { fstatSync, readFileSync } from 'node:fs';
import { constants } from 'node:os';
import { udpBatchAddon } from '../xianet/udp-batch.js';

export const DEFAULT_PIPE_BYTES = 1024 * 1024;
/** A read of a pipe's stream: 64 KiB, Node's (and a default pipe's) size, or a quarter of a grown pipe, up to 256 KiB. */
export const SMALL_READ_BYTES = 64 * 1024;
export const LARGE_READ_BYTES = 256 * 1024;

/** The read size for a pipe of `capacity`: fewer reads, and fewer wake-ups of the reader, once it is grown. */
export function readBytesFor(capacity: PipeCapacity | undefined): number {
  const bytes = capacity?.bytes ?? 0;
  return Math.max(SMALL_READ_BYTES, Math.min(LARGE_READ_BYTES, Math.floor(bytes / 4)));
}

/** What the pipe holds now (undefined: not known), and why that is not what was asked, if it is not. */
export interface PipeCapacity {
  bytes: number | undefined;
  reason?: string;
}

/** The addon's answer past pipe-max-size or the user's pipe quota (-EPERM). */
const EPERM = -constants.errno.EPERM;

/** The size asked for: XMIG_PIPE_BYTES, or DEFAULT_PIPE_BYTES; a reason when none is to be asked. */
function wanted(): number | string {
  const env = process.env['XMIG_PIPE_BYTES'];
  if (env === undefined || env === '') return DEFAULT_PIPE_BYTES;
  if (!/^\d+$/.test(env) || Number(env) > 2 ** 31 - 1) return `XMIG_PIPE_BYTES=${env} is not a byte count`;
  return Number(env) === 0 ? 'XMIG_PIPE_BYTES=0' : Number(env);
}

/** The most an unprivileged process may give a pipe, or undefined if it cannot be read. */
function pipeMaxSize(): number | undefined {
  try {
    const max = Number(readFileSync('/proc/sys/fs/pipe-max-size', 'utf8').trim());
    return Number.isSafeInteger(max) && max > 0 ? max : undefined;
  } catch {
    return undefined;
  }
}

/** Grows the pipe `fd` to `bytes` (default: XMIG_PIPE_BYTES or 1 MiB) if it holds less. */
export function growPipe(fd: number, bytes?: number): PipeCapacity {
  const want = bytes ?? wanted();
  if (typeof want === 'string') return { bytes: undefined, reason: want };
  const { addon, reason } = udpBatchAddon();
  if (!addon) return { bytes: undefined, reason: `no native addon: ${reason}` };
  if (!addon.pipeCapacity) return { bytes: undefined, reason: 'the addon was built before pipeCapacity (node native/udp-batch/build.js)' };
  const now = addon.pipeCapacity(fd, 0);
  if (now < 0) return { bytes: undefined, reason: `not a pipe (fcntl F_GETPIPE_SZ: ${now})` };
  if (now >= want) return { bytes: now };
  let got = addon.pipeCapacity(fd, want);
  if (got === EPERM) {
    // Past pipe-max-size (or the user's pipe quota): as much as is allowed, if that is more.
    const max = pipeMaxSize();
    if (max !== undefined && max > now && max < want) got = addon.pipeCapacity(fd, max);
  }
  if (got < 0) return { bytes: now, reason: `fcntl F_SETPIPE_SZ ${want}: ${got}` };
  return { bytes: got };
}

/** Grows `fd` (QEMU's exec: pipe on a command's stdin or stdout) if it is a pipe; undefined if it is not. */
export function growStdioPipe(fd: 0 | 1): PipeCapacity | undefined {
  let fifo: boolean;
  try {
    fifo = fstatSync(fd).isFIFO();
  } catch {
    return undefined;
  }
  return fifo ? growPipe(fd) : undefined;
}

/** A log line's fields for a pipe's capacity: pipeBytes, and pipeNote when it is not what was asked. */
export function pipeFields(capacity: PipeCapacity | undefined): { pipeBytes?: number; pipeNote?: string } {
  if (!capacity) return {};
  return { pipeBytes: capacity.bytes, ...(capacity.reason ? { pipeNote: capacity.reason } : {}) };
}
