import { describe, expect, it } from 'vitest';
import { labQemuArgs, type LabQemuArgs } from './qemu-command.js';

const common = { kernel: '/c/vmlinuz', initramfs: '/c/initramfs.cpio.zst', append: 'console=ttyS0 xmig.name=vm1', mac: '52:54:00:00:00:01' };

function files(dir: string, tap: string): Pick<LabQemuArgs, 'serialLog' | 'eventLog' | 'commandSocket' | 'qmpSocket' | 'observerQmpSocket' | 'tap'> {
  return { tap, serialLog: `${dir}/console.log`, eventLog: `${dir}/events.log`, commandSocket: `${dir}/command.sock`, qmpSocket: `${dir}/qmp.sock`, observerQmpSocket: `${dir}/observer.qmp.sock` };
}

describe("the lab VM's QEMU command line", () => {
  it('gives source and destination the same machine: they differ only in their own files, tap and -incoming', () => {
    const source = labQemuArgs({ ...common, ...files('/a', 'tap-a'), disk: { file: '/shared/disk.img' } });
    const destination = labQemuArgs({ ...common, ...files('/b', 'tap-b'), disk: { file: '/shared/disk.img' }, incoming: 'exec:xmig recv' });
    const own = (args: string[]): string[] =>
      args.map((a) => a.replace(/^file:\/[ab]\//, 'file:/X/').replace(/^unix:\/[ab]\//, 'unix:/X/').replace(/path=\/[ab]\//, 'path=/X/').replace(/ifname=tap-[ab]/, 'ifname=TAP'));
    expect(own(destination).slice(0, -2)).toEqual(own(source));
    expect(destination.slice(-2)).toEqual(['-incoming', 'exec:xmig recv']);
  });

  it("is the paper's VM under TCG: 640 MB, virtio-net with a fixed MAC, three serial ports, two QMP monitors", () => {
    const args = labQemuArgs({ ...common, ...files('/a', 'tap0') }).join(' ');
    expect(args).toContain('-machine pc,accel=tcg -m 640 -smp 1');
    expect(args).toContain('-netdev tap,id=net0,ifname=tap0,script=no,downscript=no -device virtio-net-pci,netdev=net0,mac=52:54:00:00:00:01,romfile=');
    expect(args).toContain('-serial file:/a/console.log -serial file:/a/events.log -chardev socket,id=cmd0,path=/a/command.sock,server=on,wait=off -serial chardev:cmd0');
    expect(args).toContain('-qmp unix:/a/qmp.sock,server=on,wait=off -qmp unix:/a/observer.qmp.sock,server=on,wait=off');
    expect(args).toContain('-no-reboot');
    expect(args).not.toContain('virtio-blk');
    expect(labQemuArgs({ ...common, ...files('/a', 'tap0'), memoryMb: 256, cpus: 2, disk: { file: '/d.qcow2', format: 'qcow2' } }).join(' ')).toMatch(
      /-m 256 -smp 2 .*-drive file=\/d\.qcow2,if=none,id=disk0,format=qcow2 -device virtio-blk-pci,drive=disk0/,
    );
  });
});
