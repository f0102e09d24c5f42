import { mkdirSync, mkdtempSync, rmSync, statSync, utimesSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { requirement } from '../../test/support/requirements.js';
import { buildImage, pruneCache, type ImageProgress } from './build-image.js';
import { findBusybox, findKernels, findWorkloads, IMAGE_REMEDY } from './host-inputs.js';

const dir = mkdtempSync(join(tmpdir(), 'xmig-image-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** An installed xmig as small as can be: package.json, bin/xmig.js and a dist/ (no sources, no dependencies). */
function fakePackage(): string {
  const root = join(dir, 'pkg');
  mkdirSync(join(root, 'bin'), { recursive: true });
  mkdirSync(join(root, 'dist', 'cli'), { recursive: true });
  writeFileSync(join(root, 'package.json'), JSON.stringify({ name: 'xmig', version: '0.0.1', dependencies: {} }));
  writeFileSync(join(root, 'bin', 'xmig.js'), "import '../dist/cli/main.js';\n");
  writeFileSync(join(root, 'dist', 'cli', 'main.js'), 'console.log("hello from the guest");\n');
  writeFileSync(join(root, 'dist', 'cli', 'main.js.map'), '{}');
  return root;
}

const machine = requirement(findKernels().length > 0 && findBusybox() !== undefined, 'a kernel with modules in /boot and a static busybox', IMAGE_REMEDY);

describe.skipIf(!machine)('xmig lab image', () => {
  it('builds from the inputs once, then finds the same image in its cache by hash', async () => {
    const root = fakePackage();
    const cacheDir = join(dir, 'cache');
    const progress: ImageProgress[] = [];
    const first = await buildImage({ root, cacheDir, compression: 'none', onProgress: (p) => progress.push(p) });
    expect(first.cached).toBe(false);
    expect(progress.filter((p) => p.state === 'end').map((p) => p.phase)).toEqual(['inputs', 'compile', 'hash', 'pack']);
    expect(statSync(first.initramfs).size).toBe(first.initramfsBytes);
    expect(first.modules).toContain('virtio_net');
    // The workloads the host has, and only those (apt-get install dbench iperf3 for both).
    expect(first.workloads).toEqual(findWorkloads().map((w) => w.name));
    expect(first.imageBytes).toBeGreaterThan(statSync(process.execPath).size);

    const second = await buildImage({ root, cacheDir, compression: 'none' });
    expect(second).toMatchObject({ cached: true, hash: first.hash, initramfs: first.initramfs });
    expect(second.phases.pack).toBeUndefined();

    // Any input changed is another image.
    writeFileSync(join(root, 'dist', 'cli', 'main.js'), 'console.log("changed");\n');
    const third = await buildImage({ root, cacheDir, compression: 'none' });
    expect(third.cached).toBe(false);
    expect(third.hash).not.toBe(first.hash);
  }, 120_000);

  it('refuses a kernel that is not there, in one line', async () => {
    await expect(buildImage({ root: fakePackage(), cacheDir: join(dir, 'cache2'), kernel: join(dir, 'vmlinuz-9.9.9') })).rejects.toThrow(/^no kernel at .*vmlinuz-9\.9\.9$/);
  });
});

describe('the image cache', () => {
  it('removes images unused for a day but keeps the newest four', () => {
    const cacheDir = join(dir, 'prune');
    const now = Date.now();
    for (let i = 0; i < 7; i++) {
      const image = join(cacheDir, 'images', `image${i}`);
      mkdirSync(image, { recursive: true });
      const used = new Date(now - i * 12 * 3600_000);
      utimesSync(image, used, used);
    }
    const removed = pruneCache(cacheDir, now).map((p) => p.split('/').pop());
    expect(removed.sort()).toEqual(['image4', 'image5', 'image6']);
    expect(existsSync(join(cacheDir, 'images', 'image3'))).toBe(true);
  });
});
