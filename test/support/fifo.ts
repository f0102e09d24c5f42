/**
 * Real pipes for a child's stdin or stdout, as QEMU's `exec:` gives them (Node's
 * spawn gives socket pairs). A named pipe (mkfifo) opened twice: the child's end
 * blocking, as QEMU's is, ours non-blocking inside a net.Socket, on Node's event loop.
 */
import { spawnSync } from 'node:child_process';
import { closeSync, constants, mkdtempSync, openSync, rmSync } from 'node:fs';
import { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface PipeEnds {
  /** The fd to give the child (close it here once it is spawned). */
  child: number;
  /** Our end: writable if the child reads, readable if it writes. */
  ours: Socket;
}

export class Fifos {
  private readonly dir = mkdtempSync(join(tmpdir(), 'xmig-fifo-'));
  private count = 0;

  /** A pipe the child reads (its stdin) or writes (its stdout). */
  open(childReads: boolean): PipeEnds {
    const path = join(this.dir, `fifo-${this.count++}`);
    const made = spawnSync('mkfifo', [path]);
    if (made.status !== 0) throw new Error(`mkfifo ${path}: ${made.stderr?.toString() ?? made.error?.message}`);
    // A FIFO's open waits for the other end: the first end opened is non-blocking.
    if (childReads) {
      const first = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
      const ours = openSync(path, constants.O_WRONLY | constants.O_NONBLOCK);
      const child = openSync(path, constants.O_RDONLY);
      closeSync(first);
      return { child, ours: new Socket({ fd: ours, readable: false, writable: true }) };
    }
    const ours = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
    return { child: openSync(path, constants.O_WRONLY), ours: new Socket({ fd: ours, readable: true, writable: false }) };
  }

  /** Removes the FIFOs' files (open ends stay usable). */
  remove(): void {
    rmSync(this.dir, { recursive: true, force: true });
  }
}
