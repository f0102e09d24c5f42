import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { afterAll, describe, expect, it } from 'vitest';
import { commandExists } from '../../test/support/requirements.js';
import { readCpio, S_IFCHR, S_IFDIR, S_IFREG } from './cpio-newc.js';
import { hashImage, writeInitramfs, type Compression } from './image-pack.js';
import type { ImageEntry } from './image-tree.js';

const dir = mkdtempSync(join(tmpdir(), 'xmig-pack-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const kernel = join(dir, 'vmlinuz');
writeFileSync(kernel, 'not really a kernel');
const source = join(dir, 'tool');
writeFileSync(source, Buffer.alloc(4097, 7));

const entries = (overrides: Partial<{ data: string; mode: number; path: string }> = {}): ImageEntry[] => [
  { kind: 'dir', path: '/bin', mode: 0o755 },
  { kind: 'file', path: '/bin/tool', mode: 0o755, source },
  { kind: 'char', path: '/dev/console', mode: 0o600, major: 5, minor: 1 },
  { kind: 'data', path: overrides.path ?? '/init', mode: overrides.mode ?? 0o755, data: Buffer.from(overrides.data ?? '#!/bin/sh\n') },
];

describe('image hash and initramfs', () => {
  it('hashes the same inputs to the same hash, and any changed input to another', async () => {
    const base = await hashImage(kernel, entries(), 'gzip');
    expect(await hashImage(kernel, entries(), 'gzip')).toBe(base);
    const others = await Promise.all([
      hashImage(kernel, entries({ data: '#!/bin/sh \n' }), 'gzip'),
      hashImage(kernel, entries({ mode: 0o644 }), 'gzip'),
      hashImage(kernel, entries({ path: '/init2' }), 'gzip'),
      hashImage(kernel, entries(), 'zstd'),
      hashImage(source, entries(), 'gzip'),
    ]);
    expect(new Set([base, ...others]).size).toBe(6);
  });

  it.each(['none', 'gzip', 'zstd'] as Compression[])('writes a newc archive (%s) that reads back as the entries', async (compression) => {
    if (compression === 'zstd' && !commandExists('zstd')) return;
    const file = join(dir, `initramfs.${compression}`);
    const written = await writeInitramfs(entries(), file, compression);
    const raw = readFileSync(file);
    const archive = compression === 'none' ? raw : compression === 'gzip' ? gunzipSync(raw) : spawnSync('zstd', ['-dc', file], { maxBuffer: 1 << 26 }).stdout;
    expect(archive.length).toBe(written.archiveBytes);
    expect(written.fileBytes).toBe(raw.length);
    const read = readCpio(archive);
    expect(read.map((e) => [e.name, e.mode])).toEqual([
      ['bin', S_IFDIR | 0o755],
      ['bin/tool', S_IFREG | 0o755],
      ['dev/console', S_IFCHR | 0o600],
      ['init', S_IFREG | 0o755],
    ]);
    expect(Buffer.from(read[1]!.data).equals(readFileSync(source))).toBe(true);
    expect(Buffer.from(read[3]!.data).toString()).toBe('#!/bin/sh\n');
  });

  it('refuses a file that changes size while it is packed', async () => {
    const growing = join(dir, 'growing');
    writeFileSync(growing, 'abc');
    const list: ImageEntry[] = [{ kind: 'file', path: '/g', mode: 0o644, source: growing }];
    const hashing = hashImage(kernel, [...list, { kind: 'data', path: '/h', mode: 0o644, data: Buffer.alloc(0) }], 'none', {
      onBytes: () => writeFileSync(growing, 'abcdef'),
    });
    await expect(hashing).rejects.toThrow(/changed while the image was being made/);
  });
});
