/**
 * Recycled reads: a buffer is read into again only when nobody holds its last read,
 * so what a listener kept (with a hold) is never overwritten, and an unheld stream
 * runs in one buffer. Driven first as Node drives `onread` (buffer, callback, buffer,
 * ...), then through a real FIFO.
 */
import { closeSync, mkdtempSync, openSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Writable } from 'node:stream';
import fc from 'fast-check';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { Fifos } from '../test/support/fifo.js';
import { openInput, POOL_BYTES, RecycledInput, RecycledReads } from './recycled-reads.js';

/** Node's side of `onread`: one buffer up front, then callback and a fresh ask per read. */
function drive(reads: RecycledReads, pieces: Buffer[]): void {
  const { onread } = reads;
  let buffer = (onread.buffer as () => Uint8Array)();
  for (const piece of pieces) {
    const n = Math.min(piece.length, buffer.length);
    buffer.set(piece.subarray(0, n));
    onread.callback(n, buffer);
    buffer = (onread.buffer as () => Uint8Array)();
  }
}

describe('RecycledReads', () => {
  it('never overwrites a held read, reuses unheld ones, and gives released buffers back', () => {
    fc.assert(
      fc.property(
        fc.array(fc.record({ bytes: fc.uint8Array({ minLength: 1, maxLength: 64 }), hold: fc.boolean(), releaseAfter: fc.nat({ max: 5 }) }), { minLength: 1, maxLength: 60 }),
        (steps) => {
          const kept: { view: Buffer; copy: Buffer; release: () => void; due: number }[] = [];
          let index = 0;
          const reads = new RecycledReads(
            (data) => {
              const step = steps[index]!;
              expect(data.equals(Buffer.from(step.bytes))).toBe(true);
              if (step.hold) kept.push({ view: data, copy: Buffer.from(data), release: reads.hold(), due: index + step.releaseAfter });
              for (const entry of kept.filter((k) => k.due <= index)) {
                entry.release();
                entry.release(); // twice is once
              }
              index += 1;
              return true;
            },
            { bufferBytes: 64 },
          );
          drive(
            reads,
            steps.map((s) => Buffer.from(s.bytes)),
          );
          // What is still held was never written over; released or not, every copy matched when taken.
          for (const entry of kept.filter((k) => k.due >= steps.length)) expect(entry.view.equals(entry.copy)).toBe(true);
          const heldAtOnce = steps.filter((s) => s.hold).length;
          expect(reads.stats.reads).toBe(steps.length);
          expect(reads.stats.allocated).toBeLessThanOrEqual(heldAtOnce + 1);
        },
      ),
    );
  });

  it('runs an unheld stream in one buffer', () => {
    const reads = new RecycledReads(() => true, { bufferBytes: 16 });
    drive(
      reads,
      Array.from({ length: 100 }, (_, i) => Buffer.alloc(16, i)),
    );
    expect(reads.stats).toEqual({ reads: 100, allocated: 1, holds: 0 });
  });

  it('keeps at most POOL_BYTES of free buffers, whatever their size (256 KiB reads of a grown pipe too)', () => {
    const releases: Array<() => void> = [];
    const reads = new RecycledReads(
      () => {
        releases.push(reads.hold());
        return true;
      },
      { bufferBytes: POOL_BYTES / 4 },
    );
    const round = (): void => drive(reads, Array.from({ length: 10 }, (_, i) => Buffer.alloc(8, i)));
    round();
    for (const release of releases.splice(0)) release();
    const before = reads.stats.allocated;
    // Eleven buffers asked for (one up front, one after each read), every read held: four
    // come back from the pool, not the ten released, and seven are new.
    round();
    expect(reads.stats.allocated - before).toBe(7);
  });

  it('refuses a hold outside a listener', () => {
    const reads = new RecycledReads(() => true);
    expect(() => reads.hold()).toThrow(/inside a read listener/);
    drive(reads, [Buffer.from('x')]);
    expect(() => reads.hold()).toThrow(/inside a read listener/);
  });
});

describe('RecycledInput over a FIFO', () => {
  const fifos = new Fifos();
  const dirs: string[] = [];
  afterAll(() => fifos.remove());
  afterEach(() => {
    for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
  });

  /** A FIFO's read end, as QEMU gives `xmig send`, and a stream writing into it. */
  function fifoPair(): { readFd: number; writer: Writable } {
    const { child, ours } = fifos.open(true);
    return { readFd: child, writer: ours };
  }

  async function writeAll(writer: Writable, data: Buffer): Promise<void> {
    for (let at = 0; at < data.length; at += 50_000) {
      if (!writer.write(data.subarray(at, at + 50_000))) await new Promise((resolve) => writer.once('drain', () => resolve(undefined)));
    }
    await new Promise<void>((resolve) => writer.end(() => resolve()));
  }

  it('delivers a stream intact, in one buffer when nothing is held, and pauses and resumes', async () => {
    const { readFd, writer } = fifoPair();
    const input = new RecycledInput(readFd);
    const data = Buffer.from(Array.from({ length: 4 * 1024 * 1024 }, (_, i) => (i * 7 + (i >> 12)) & 0xff));
    const got: Buffer[] = [];
    let pauses = 0;
    const ended = new Promise<void>((resolve) => input.once('end', resolve));
    input.on('data', (chunk) => {
      got.push(Buffer.from(chunk));
      if (got.length % 10 === 0) {
        pauses += 1;
        input.pause();
        setTimeout(() => input.resume(), 1);
      }
    });
    await Promise.all([writeAll(writer, data), ended]);
    input.destroy();
    expect(Buffer.concat(got).equals(data)).toBe(true);
    expect(pauses).toBeGreaterThan(0);
    expect(input.stats.allocated).toBe(1);
  });

  it('keeps held reads unchanged until released', async () => {
    const { readFd, writer } = fifoPair();
    const input = new RecycledInput(readFd);
    const data = Buffer.from(Array.from({ length: 1024 * 1024 }, (_, i) => (i * 13) & 0xff));
    const views: Buffer[] = [];
    const releases: (() => void)[] = [];
    const ended = new Promise<void>((resolve) => input.once('end', resolve));
    input.on('data', (chunk) => {
      views.push(chunk);
      releases.push(input.hold());
      // Keep at most 4 reads at a time, as a writer with a few writes in flight does.
      if (releases.length > 4) releases.shift()!();
    });
    await Promise.all([writeAll(writer, data), ended]);
    input.destroy();
    // The last four are still held: each is what was read.
    const tail = Buffer.concat(views.slice(-4));
    expect(tail.equals(data.subarray(data.length - tail.length))).toBe(true);
    expect(input.stats.allocated).toBeLessThanOrEqual(6);
  });

  it("passes a read error to its listeners, and with none listening does not throw it", async () => {
    const heard = fifoPair();
    const input = new RecycledInput(heard.readFd);
    const error = new Promise<Error>((resolve) => input.once('error', resolve));
    input.destroy(new Error('EIO, say'));
    expect((await error).message).toBe('EIO, say');
    heard.writer.destroy();
    const unheard = fifoPair();
    const alone = new RecycledInput(unheard.readFd);
    const closed = new Promise<void>((resolve) => alone.once('close', () => resolve()));
    alone.destroy(new Error('nobody listens'));
    // An 'error' nobody listens to would be thrown here (and vitest fail the run on it).
    await closed;
    unheard.writer.destroy();
  });

  it('openInput takes a FIFO and refuses a regular file on another fd', () => {
    const { readFd, writer } = fifoPair();
    const opened = openInput(readFd);
    expect(opened.input).toBeInstanceOf(RecycledInput);
    opened.destroy();
    writer.destroy();
    const dir = mkdtempSync(join(tmpdir(), 'xmig-recycled-'));
    dirs.push(dir);
    writeFileSync(join(dir, 'file'), 'x');
    const fd = openSync(join(dir, 'file'), 'r');
    expect(() => openInput(fd)).toThrow(/neither a pipe nor a socket/);
    closeSync(fd);
  });
});
