import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { parseConfig } from '../shared/config.js';
import { silentLogger } from '../shared/logger.js';
import { DEFAULT_KEEP_FREED_MEMORY_BYTES, describeAllocator, keepFreedMemory } from './allocator.js';
import { nodeConfigSchema } from './node-config.js';
import { NodeDaemon } from './node-daemon.js';
import { udpBatchAddon } from './udp-batch.js';
import { reservePortBlock } from '../test/support/ports.js';

const { addon, reason } = udpBatchAddon();
const glibc = process.platform === 'linux' && Boolean((process.report?.getReport() as { header?: { glibcVersionRuntime?: string } } | undefined)?.header?.glibcVersionRuntime);
if (!addon) console.warn(`SKIPPED: allocator tests that need the native addon (${reason})`);
else if (!glibc) console.warn('SKIPPED: allocator tests that need glibc');
const withGlibc = addon && glibc ? it : it.skip;

/** This file's UDP ports (test/support/ports.ts). */
const ports = reservePortBlock();
const dir = mkdtempSync(join(tmpdir(), 'xmig-allocator-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function nodeConfig(extra: Record<string, unknown> = {}) {
  return parseConfig(nodeConfigSchema, {
    name: 'alloc',
    role: 'host',
    keyFile: join(dir, 'node.key'),
    interfaces: [{ name: 'eth0', bind: '127.0.0.1', port: ports.base }],
    logLevel: 'error',
    ...extra,
  });
}

describe('what the allocator keeps of freed memory', () => {
  const env = process.env['XMIG_KEEP_FREED_MEMORY'];
  afterEach(() => {
    if (env === undefined) delete process.env['XMIG_KEEP_FREED_MEMORY'];
    else process.env['XMIG_KEEP_FREED_MEMORY'] = env;
  });

  withGlibc('sets glibc trim threshold through the addon, and refuses what is not a size', () => {
    expect(addon!.keepFreedMemory!(DEFAULT_KEEP_FREED_MEMORY_BYTES)).toBe(0);
    expect(() => addon!.keepFreedMemory!(0)).toThrow(TypeError);
    expect(() => addon!.keepFreedMemory!(-1)).toThrow(TypeError);
    expect(() => (addon!.keepFreedMemory as unknown as () => number)()).toThrow(TypeError);
  });

  withGlibc('keeps what it is asked to, unless told not to', () => {
    delete process.env['XMIG_KEEP_FREED_MEMORY'];
    expect(keepFreedMemory(32 << 20)).toEqual({ keptBytes: 32 << 20 });
    expect(describeAllocator(keepFreedMemory(32 << 20))).toBe(`keeps ${32 << 20} freed bytes`);
    expect(keepFreedMemory(0)).toEqual({ keptBytes: undefined, reason: 'keepFreedMemoryBytes is 0' });
    process.env['XMIG_KEEP_FREED_MEMORY'] = '0';
    const off = keepFreedMemory(32 << 20);
    expect(off).toEqual({ keptBytes: undefined, reason: 'XMIG_KEEP_FREED_MEMORY=0' });
    expect(describeAllocator(off)).toBe('glibc default (XMIG_KEEP_FREED_MEMORY=0)');
  });

  withGlibc('a node daemon sets it as it starts: 64 MiB unless its config says otherwise', async () => {
    delete process.env['XMIG_KEEP_FREED_MEMORY'];
    for (const [extra, expected] of [
      [{}, { keptBytes: DEFAULT_KEEP_FREED_MEMORY_BYTES }],
      [{ keepFreedMemoryBytes: 8 << 20 }, { keptBytes: 8 << 20 }],
      [{ keepFreedMemoryBytes: 0 }, { keptBytes: undefined, reason: 'keepFreedMemoryBytes is 0' }],
    ] as const) {
      const daemon = new NodeDaemon(nodeConfig(extra), { logger: silentLogger() });
      expect(daemon.allocator).toBeUndefined();
      await daemon.start();
      try {
        expect(daemon.allocator).toEqual(expected);
      } finally {
        await daemon.stop();
      }
    }
  });

  it('the config refuses a size that is not one', () => {
    for (const bad of [-1, 1.5, 2 ** 31, '64M']) {
      expect(() => nodeConfig({ keepFreedMemoryBytes: bad }), String(bad)).toThrow(/keepFreedMemoryBytes/);
    }
    expect(nodeConfig({ keepFreedMemoryBytes: 1 << 30 }).keepFreedMemoryBytes).toBe(1 << 30);
  });
});
