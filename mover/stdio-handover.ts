/**
 * QEMU's pipe handed to the node. Under `exec:` QEMU's stream is a pipe: the source
 * QEMU writes into `xmig send`'s stdin, the destination QEMU reads `xmig recv`'s
 * stdout. Copied through the command, every byte costs a read, a framed write, and
 * the node's read again; handed over, the node opens the same pipe itself (as
 * `/proc/<pid>/fd/<n>`: a new open file description of it, so the node's non-blocking
 * mode is its own and the command's stays as it was) and the command only waits for
 * the result. What QEMU sees is unchanged: a child that takes the stream or gives it,
 * and exits non-zero if the migration failed.
 *
 * The command names the pipe by its process, its fd and the pipe's identity (device
 * and inode); the node takes it only if what it opened is that pipe, so a pid that
 * is not the caller's any more (or never was) gets nothing but a refusal. Who may ask
 * at all is the mover socket's business: its mode (0600) admits the node's own user
 * only, who can open these files without the node.
 */
import { closeSync, constants, fstatSync, openSync } from 'node:fs';
import { errorMessage } from '../shared/errors.js';

/** A pipe of this process, as the node is told of it. */
export interface PipeIdentity {
  pid: number;
  /** st_dev and st_ino, in decimal (an inode may pass 2^53). */
  dev: string;
  ino: string;
}

/** The pipe on `fd` (0: QEMU writes it; 1: QEMU reads it), or undefined if it is no pipe or handover is off. */
export function describePipe(fd: 0 | 1): PipeIdentity | undefined {
  if (process.env.XMIG_STDIO_HANDOVER === '0') return undefined;
  try {
    const stat = fstatSync(fd, { bigint: true });
    if (!stat.isFIFO()) return undefined;
    return { pid: process.pid, dev: stat.dev.toString(), ino: stat.ino.toString() };
  } catch {
    return undefined;
  }
}

export class HandoverRefused extends Error {
  override readonly name = 'HandoverRefused';
}

/**
 * Opens the pipe `pipe` names on its owner's `fd` for this process: for reading
 * (fd 0, send) or writing (fd 1, recv), non-blocking. Returns the new fd; throws
 * HandoverRefused saying why if it cannot be opened or is not that pipe.
 */
export function takePipe(pipe: PipeIdentity, fd: 0 | 1): number {
  const path = `/proc/${pipe.pid}/fd/${fd}`;
  let opened: number;
  try {
    // O_NONBLOCK: a FIFO's open waits for the other end otherwise; libuv wants it anyway.
    opened = openSync(path, (fd === 0 ? constants.O_RDONLY : constants.O_WRONLY) | constants.O_NONBLOCK);
  } catch (error) {
    throw new HandoverRefused(`cannot open ${path}: ${errorMessage(error)}`);
  }
  try {
    const stat = fstatSync(opened, { bigint: true });
    if (!stat.isFIFO()) throw new HandoverRefused(`${path} is not a pipe`);
    if (stat.dev.toString() !== pipe.dev || stat.ino.toString() !== pipe.ino) throw new HandoverRefused(`${path} is another pipe than the one named (${pipe.dev}:${pipe.ino})`);
    return opened;
  } catch (error) {
    closeSync(opened);
    throw error instanceof HandoverRefused ? error : new HandoverRefused(`checking ${path}: ${errorMessage(error)}`);
  }
}
