import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { XmigError } from '../../shared/errors.js';
import { commandExists } from '../../test/support/requirements.js';
import { cpioDataPadding, cpioTrailer, encodeCpioHeader, readCpio, S_IFDIR, S_IFREG } from './cpio-newc.js';

interface File {
  name: string;
  mode: number;
  data: Buffer;
}

function archive(files: File[]): Buffer {
  const parts: Buffer[] = [];
  files.forEach((f, i) => {
    parts.push(encodeCpioHeader(f.name, { ino: i + 1, mode: f.mode, nlink: 1, filesize: f.data.length }), f.data, cpioDataPadding(f.data.length));
  });
  parts.push(cpioTrailer());
  return Buffer.concat(parts);
}

const name = fc.stringMatching(/^[a-z0-9_.-]{1,20}(\/[a-z0-9_.-]{1,20}){0,3}$/);

describe('cpio newc', () => {
  it('reads back what it writes, every entry 4-byte aligned', () => {
    fc.assert(
      fc.property(fc.uniqueArray(fc.record({ name, mode: fc.constantFrom(S_IFREG | 0o644, S_IFREG | 0o755), data: fc.uint8Array({ maxLength: 600 }).map((b) => Buffer.from(b)) }), { selector: (f) => f.name, maxLength: 12 }), (files) => {
        const bytes = archive(files);
        expect(bytes.length % 4).toBe(0);
        expect(readCpio(bytes).map((e) => ({ name: e.name, mode: e.mode, data: Buffer.from(e.data) }))).toEqual(files);
      }),
    );
  });

  it('writes archives cpio(1) extracts, byte for byte', () => {
    if (!commandExists('cpio')) return;
    const dir = mkdtempSync(join(tmpdir(), 'xmig-cpio-'));
    try {
      const files: File[] = [
        { name: 'etc', mode: S_IFDIR | 0o755, data: Buffer.alloc(0) },
        { name: 'etc/a', mode: S_IFREG | 0o644, data: Buffer.from('one') },
        { name: 'etc/b.bin', mode: S_IFREG | 0o755, data: Buffer.from(Array.from({ length: 1027 }, (_, i) => i & 0xff)) },
      ];
      const result = spawnSync('cpio', ['-idm', '--quiet'], { cwd: dir, input: archive(files) });
      expect(result.status, result.stderr.toString()).toBe(0);
      expect(readFileSync(join(dir, 'etc/a'), 'utf8')).toBe('one');
      expect(readFileSync(join(dir, 'etc/b.bin')).equals(files[2]!.data)).toBe(true);
      expect(statSync(join(dir, 'etc/b.bin')).mode & 0o777).toBe(0o755);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('refuses a truncated or corrupt archive with a typed error, never anything else', () => {
    const good = archive([{ name: 'x', mode: S_IFREG | 0o644, data: Buffer.from('hello') }]);
    expect(() => readCpio(good.subarray(0, 50))).toThrow(/truncated header at offset 0/);
    expect(() => readCpio(good.subarray(0, good.length - 8))).toThrow(XmigError);
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 400 }), fc.nat(), (noise, at) => {
        const corrupt = Buffer.from(good);
        Buffer.from(noise).copy(corrupt, at % corrupt.length);
        try {
          readCpio(corrupt);
        } catch (error) {
          expect(error).toBeInstanceOf(XmigError);
        }
      }),
    );
  });

  it('refuses values that do not fit a header field', () => {
    expect(() => encodeCpioHeader('x', { ino: 1, mode: 0, nlink: 1, filesize: 2 ** 32 })).toThrow(/filesize/);
  });
});
