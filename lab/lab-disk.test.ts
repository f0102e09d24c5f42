import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { commandExists, requirement } from '../test/support/requirements.js';
import { checkDiskSizes, checkLabDisk, DISK_TOOLS, DISK_TOOLS_REMEDY, emptyDisk, makeLabDisk } from './lab-disk.js';

const tools = requirement(DISK_TOOLS.every(commandExists), DISK_TOOLS.join(', '), DISK_TOOLS_REMEDY);
const dir = mkdtempSync(join(tmpdir(), 'xmig-lab-disk-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function qemuImgInfo(file: string): { format: string; 'virtual-size': number; 'actual-size': number } {
  return JSON.parse(spawnSync('qemu-img', ['info', '--output=json', file], { encoding: 'utf8' }).stdout) as never;
}

describe('the lab VM disk', () => {
  it('refuses sizes that cannot hold the seed data, in one line', () => {
    expect(() => checkDiskSizes(32, 0)).toThrow('at least 64 MB');
    expect(() => checkDiskSizes(64, 60)).toThrow('60 MB of seed data do not fit a 64 MB disk');
    expect(() => checkDiskSizes(4096, 300)).not.toThrow();
  });

  it.runIf(tools)('makes a sparse qcow2 holding the seed files, and the host reads them back right and the file system clean', async () => {
    const disk = await makeLabDisk(join(dir, 'a.qcow2'), { sizeMb: 256, seedMb: 20 });
    expect(disk.seeds.map((s) => s.path)).toEqual(['/seed/s000', '/seed/s001']);
    const info = qemuImgInfo(disk.file);
    expect(info.format).toBe('qcow2');
    expect(info['virtual-size']).toBe(256 * 1048576);
    // Sparse: the 20 MB of files and the file system's metadata, not the 256 MB.
    expect(info['actual-size']).toBeLessThan(80 * 1048576);
    expect(await checkLabDisk(disk.file, disk.seeds)).toEqual({ clean: true, checked: 2, bad: [] });

    const missing = await checkLabDisk(disk.file, [{ path: '/xmig-files/f00', sha1: '0'.repeat(40) }]);
    expect(missing.bad).toHaveLength(1);
    expect(missing.bad[0]!.got).toMatch(/^unreadable: .*not found/i);
  });

  it.runIf(tools)('finds the bytes of a file changed inside the image', async () => {
    const disk = await makeLabDisk(join(dir, 'b.qcow2'), { sizeMb: 128, seedMb: 1 });
    // The block the seed file starts at, as the file system has it; then 4 KiB of other bytes there.
    const raw = join(dir, 'b.raw');
    spawnSync('qemu-img', ['convert', '-O', 'raw', disk.file, raw]);
    const bmap = spawnSync('debugfs', ['-R', 'bmap /seed/s000 0', raw], { encoding: 'utf8' }).stdout.trim();
    const blockSize = Number(/Block size:\s+(\d+)/.exec(spawnSync('dumpe2fs', ['-h', raw], { encoding: 'utf8' }).stdout)?.[1]);
    rmSync(raw);
    expect(Number(bmap)).toBeGreaterThan(0);
    const written = spawnSync('qemu-io', ['-f', 'qcow2', '-c', `write -P 0x55 ${Number(bmap) * blockSize} 4096`, disk.file], { encoding: 'utf8' });
    expect(written.status, written.stderr).toBe(0);
    const check = await checkLabDisk(disk.file, disk.seeds);
    expect(check.clean).toBe(true);
    expect(check.bad.map((b) => b.path)).toEqual(['/seed/s000']);
  });

  it.runIf(tools)("gives a destination an empty image of the source's size", async () => {
    await emptyDisk(join(dir, 'c.qcow2'), 4096 * 1048576);
    const info = qemuImgInfo(join(dir, 'c.qcow2'));
    expect(info['virtual-size']).toBe(4096 * 1048576);
    expect(info['actual-size']).toBeLessThan(1048576);
  });
});
