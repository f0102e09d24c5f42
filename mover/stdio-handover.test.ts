/**
 * Handing QEMU's pipe to the node: a process's pipe, named by pid, fd and identity, is
 * opened here as that very pipe (bytes written into it come out of ours), and anything
 * else is refused with why: another pipe under that fd, no pipe at all, no such
 * process. A child process stands in for `xmig send` / `xmig recv`.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, fstatSync, openSync } from 'node:fs';
import { Socket } from 'node:net';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { Fifos } from '../test/support/fifo.js';
import { describePipe, HandoverRefused, takePipe, type PipeIdentity } from './stdio-handover.js';

const fifos = new Fifos();
afterAll(() => fifos.remove());
const children: ChildProcess[] = [];
afterEach(() => {
  for (const child of children.splice(0)) child.kill('SIGKILL');
});

/** A child holding `fd` as its stdin (0) or stdout (1), as QEMU's exec: child does. */
async function holder(stdio: [number | 'ignore', number | 'ignore']): Promise<ChildProcess> {
  const child = spawn('sleep', ['30'], { stdio: [stdio[0], stdio[1], 'ignore'] });
  children.push(child);
  await new Promise<void>((resolve, reject) => {
    child.once('spawn', () => resolve());
    child.once('error', reject);
  });
  return child;
}

function identity(pid: number, fd: number): PipeIdentity {
  const stat = fstatSync(fd, { bigint: true });
  return { pid, dev: stat.dev.toString(), ino: stat.ino.toString() };
}

describe('stdio handover', () => {
  it("opens a process's stdin pipe as that pipe: what QEMU writes comes out here", async () => {
    const { child, ours } = fifos.open(true);
    const holding = await holder([child, 'ignore']);
    const pipe = identity(holding.pid!, child);
    closeSync(child);
    const fd = takePipe(pipe, 0);
    const taken = new Socket({ fd, readable: true, writable: false });
    const got: Buffer[] = [];
    const ended = new Promise<void>((resolve) => taken.once('end', resolve));
    taken.on('data', (d: Buffer) => got.push(d));
    ours.end(Buffer.from('the migration stream'));
    // The holder keeps its read end, but EOF comes when the writer is gone.
    await ended;
    expect(Buffer.concat(got).toString()).toBe('the migration stream');
    taken.destroy();
  });

  it("opens a process's stdout pipe for writing: what we write reaches QEMU's end", async () => {
    const { child, ours } = fifos.open(false);
    const holding = await holder(['ignore', child]);
    const pipe = identity(holding.pid!, child);
    closeSync(child);
    const taken = new Socket({ fd: takePipe(pipe, 1), readable: false, writable: true });
    const got = new Promise<string>((resolve) => ours.once('data', (d: Buffer) => resolve(d.toString())));
    taken.write('to the destination QEMU');
    expect(await got).toBe('to the destination QEMU');
    taken.destroy();
    ours.destroy();
  });

  it('refuses another pipe, no pipe, and no process, saying which', async () => {
    const { child, ours } = fifos.open(true);
    const holding = await holder([child, 'ignore']);
    const pipe = identity(holding.pid!, child);
    closeSync(child);
    expect(() => takePipe({ ...pipe, ino: (BigInt(pipe.ino) + 1n).toString() }, 0)).toThrow(/another pipe/);
    expect(() => takePipe(pipe, 1)).toThrow(HandoverRefused);
    const nul = openSync('/dev/null', 'r');
    const plain = await holder([nul, 'ignore']);
    closeSync(nul);
    expect(() => takePipe({ ...pipe, pid: plain.pid! }, 0)).toThrow(/not a pipe/);
    expect(() => takePipe({ ...pipe, pid: 2 ** 31 - 1 }, 0)).toThrow(/cannot open/);
    ours.destroy();
  });

  it('describes only a pipe, and nothing when handover is off', () => {
    // The test runner's stdin is not a pipe we were given by QEMU: whatever it is, the answer matches fstat.
    const stat = fstatSync(0);
    expect(describePipe(0) === undefined).toBe(!stat.isFIFO());
    const saved = process.env.XMIG_STDIO_HANDOVER;
    process.env.XMIG_STDIO_HANDOVER = '0';
    try {
      expect(describePipe(0)).toBeUndefined();
      expect(describePipe(1)).toBeUndefined();
    } finally {
      if (saved === undefined) delete process.env.XMIG_STDIO_HANDOVER;
      else process.env.XMIG_STDIO_HANDOVER = saved;
    }
  });
});
