/**
 * Growing QEMU's exec: pipe: a real pipe (a FIFO) grows to 1 MiB, as the kernel then
 * reports it; one already as large is never shrunk; XMIG_PIPE_BYTES chooses another
 * size or (0) none; a file that is no pipe is left alone, saying why.
 */
import { spawnSync } from 'node:child_process';
import { closeSync, constants, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { udpBatchAddon } from '../xianet/udp-batch.js';
import { DEFAULT_PIPE_BYTES, growPipe, LARGE_READ_BYTES, pipeFields, readBytesFor, SMALL_READ_BYTES } from './pipe-capacity.js';

const { addon, reason } = udpBatchAddon();
if (!addon?.pipeCapacity) console.warn(`SKIPPED: pipe capacity tests that need the native addon (${reason})`);
const withAddon = addon?.pipeCapacity ? it : it.skip;

const dir = mkdtempSync(join(tmpdir(), 'xmig-pipe-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const opened: number[] = [];
const env = process.env['XMIG_PIPE_BYTES'];
afterEach(() => {
  for (const fd of opened.splice(0)) closeSync(fd);
  if (env === undefined) delete process.env['XMIG_PIPE_BYTES'];
  else process.env['XMIG_PIPE_BYTES'] = env;
});

let count = 0;
/** A fresh pipe (a FIFO opened for both ends, non-blocking), at the kernel's default size. */
function pipe(): number {
  const path = join(dir, `fifo-${count++}`);
  const made = spawnSync('mkfifo', [path]);
  if (made.status !== 0) throw new Error(`mkfifo ${path}: ${made.stderr?.toString()}`);
  const fd = openSync(path, constants.O_RDWR | constants.O_NONBLOCK);
  opened.push(fd);
  return fd;
}

const capacity = (fd: number): number => addon!.pipeCapacity!(fd, 0);
const pipeMax = Number(readFileSync('/proc/sys/fs/pipe-max-size', 'utf8'));

describe('growPipe', () => {
  withAddon('grows a 64 KiB pipe to 1 MiB, as the kernel then reports it', () => {
    delete process.env['XMIG_PIPE_BYTES'];
    const fd = pipe();
    expect(capacity(fd)).toBe(64 * 1024);
    const grown = growPipe(fd);
    expect(grown).toEqual({ bytes: DEFAULT_PIPE_BYTES });
    expect(capacity(fd)).toBe(DEFAULT_PIPE_BYTES);
    expect(pipeFields(grown)).toEqual({ pipeBytes: DEFAULT_PIPE_BYTES });
  });

  withAddon('never shrinks a pipe, and takes what the kernel allows past pipe-max-size', () => {
    const fd = pipe();
    growPipe(fd);
    expect(growPipe(fd, 64 * 1024)).toEqual({ bytes: DEFAULT_PIPE_BYTES });
    expect(capacity(fd)).toBe(DEFAULT_PIPE_BYTES);
    // Past the limit: more only with CAP_SYS_RESOURCE, else at most the limit, never an error.
    const big = growPipe(pipe(), 4 * pipeMax);
    expect([4 * pipeMax, pipeMax]).toContain(big.bytes);
  });

  withAddon('takes XMIG_PIPE_BYTES: another size, or 0 for none; a bad value changes nothing, saying why', () => {
    process.env['XMIG_PIPE_BYTES'] = String(256 * 1024);
    const fd = pipe();
    expect(growPipe(fd)).toEqual({ bytes: 256 * 1024 });
    expect(capacity(fd)).toBe(256 * 1024);
    for (const [value, why] of [
      ['0', 'XMIG_PIPE_BYTES=0'],
      ['1M', 'XMIG_PIPE_BYTES=1M is not a byte count'],
      ['-5', 'XMIG_PIPE_BYTES=-5 is not a byte count'],
    ] as const) {
      process.env['XMIG_PIPE_BYTES'] = value;
      const other = pipe();
      expect(growPipe(other)).toEqual({ bytes: undefined, reason: why });
      expect(capacity(other)).toBe(64 * 1024);
      expect(pipeFields(growPipe(other))).toEqual({ pipeBytes: undefined, pipeNote: why });
    }
  });

  withAddon('leaves a file that is no pipe alone, and says so', () => {
    const path = join(dir, 'plain');
    writeFileSync(path, 'not a pipe');
    const fd = openSync(path, 'r');
    opened.push(fd);
    const result = growPipe(fd);
    expect(result.bytes).toBeUndefined();
    expect(result.reason).toMatch(/not a pipe/);
  });

  withAddon('refuses a negative fd or size at the addon, as a TypeError', () => {
    expect(() => addon!.pipeCapacity!(-1, 0)).toThrow(TypeError);
    expect(() => addon!.pipeCapacity!(pipe(), -1)).toThrow(TypeError);
  });
});

describe('readBytesFor', () => {
  it("reads a quarter of a grown pipe, between Node's 64 KiB and 256 KiB", () => {
    expect(readBytesFor(undefined)).toBe(SMALL_READ_BYTES);
    expect(readBytesFor({ bytes: undefined, reason: 'XMIG_PIPE_BYTES=0' })).toBe(SMALL_READ_BYTES);
    expect(readBytesFor({ bytes: 64 * 1024 })).toBe(SMALL_READ_BYTES);
    expect(readBytesFor({ bytes: 512 * 1024 })).toBe(128 * 1024);
    expect(readBytesFor({ bytes: DEFAULT_PIPE_BYTES })).toBe(LARGE_READ_BYTES);
    expect(readBytesFor({ bytes: 16 * DEFAULT_PIPE_BYTES })).toBe(LARGE_READ_BYTES);
  });
});
