/**
 * The lab VM's QEMU command line. Source and destination of a migration must present the
 * guest the same machine — same machine type, CPU, RAM, devices with the same ids and
 * options, in the same order — so both are made by this one function and differ only in
 * their own files (logs, sockets), their tap and `-incoming`.
 *
 * The machine: TCG (/dev/kvm does not boot guests here), the `pc` machine, QEMU's
 * default CPU, one vCPU and 640 MB (the paper's VM) by default; the distribution kernel
 * with the lab initramfs and the guest config on its command line; virtio-net on a tap
 * with a fixed MAC and no option ROM (direct kernel boot needs none); optionally a data
 * disk on virtio-blk; ttyS0 = console, ttyS1 = the guest's event log, ttyS2 = the host's
 * commands to the guest (a Unix socket QEMU listens on; always there, on both ends of a
 * migration, since the devices must match — only the socket's path differs); two QMP monitors
 * (QMP serves one client per monitor: one for `xmig migrate`, one for observers);
 * `-no-reboot`, so a guest that panics ends its QEMU instead of booting again.
 */
import { spawnSync } from 'node:child_process';

export const QEMU_BINARY = 'qemu-system-x86_64';

export const QEMU_REMEDY =
  'apt-get install -t bookworm-backports qemu-system-x86 linux-image-amd64 busybox-static (.ci/run adds the suite and does)';

/** The guest's NIC, the same on both ends of a migration. */
export const NETDEV_ID = 'net0';
export const DISK_ID = 'disk0';
/** The chardev behind ttyS2, the command channel into the guest. */
export const COMMAND_CHARDEV_ID = 'cmd0';

export interface DataDisk {
  file: string;
  format?: 'raw' | 'qcow2';
}

export interface LabQemuArgs {
  kernel: string;
  initramfs: string;
  /** The whole kernel command line (guestCommandLine). */
  append: string;
  memoryMb?: number;
  cpus?: number;
  tap: string;
  mac: string;
  disk?: DataDisk;
  serialLog: string;
  eventLog: string;
  /** The Unix socket QEMU listens on for ttyS2 (the guest reads commands there). */
  commandSocket: string;
  qmpSocket: string;
  observerQmpSocket: string;
  incoming?: string;
  name?: string;
}

export const DEFAULT_MEMORY_MB = 640;

export function labQemuArgs(args: LabQemuArgs): string[] {
  return [
    ...(args.name ? ['-name', args.name] : []),
    '-machine', 'pc,accel=tcg',
    '-m', String(args.memoryMb ?? DEFAULT_MEMORY_MB),
    '-smp', String(args.cpus ?? 1),
    '-kernel', args.kernel,
    '-initrd', args.initramfs,
    '-append', args.append,
    '-display', 'none',
    '-nodefaults',
    '-no-user-config',
    '-no-reboot',
    '-netdev', `tap,id=${NETDEV_ID},ifname=${args.tap},script=no,downscript=no`,
    '-device', `virtio-net-pci,netdev=${NETDEV_ID},mac=${args.mac},romfile=`,
    ...(args.disk
      ? ['-drive', `file=${args.disk.file},if=none,id=${DISK_ID},format=${args.disk.format ?? 'raw'}`, '-device', `virtio-blk-pci,drive=${DISK_ID}`]
      : []),
    '-serial', `file:${args.serialLog}`,
    '-serial', `file:${args.eventLog}`,
    '-chardev', `socket,id=${COMMAND_CHARDEV_ID},path=${args.commandSocket},server=on,wait=off`,
    '-serial', `chardev:${COMMAND_CHARDEV_ID}`,
    '-qmp', `unix:${args.qmpSocket},server=on,wait=off`,
    '-qmp', `unix:${args.observerQmpSocket},server=on,wait=off`,
    ...(args.incoming ? ['-incoming', args.incoming] : []),
  ];
}

/**
 * The major version of the QEMU on PATH. QEMU 7.2 under CPU load sent stale guest pages in
 * 1-2 of 5 migrations (its own tcp: too) and the guest oopsed; 10.x did not in 12 runs: the
 * lab and the e2e tests need 10 or later (Debian's bookworm-backports has it).
 */
export function qemuMajor(binary = QEMU_BINARY): number | undefined {
  const result = spawnSync(binary, ['--version'], { encoding: 'utf8' });
  const match = result.status === 0 ? /version (\d+)\./.exec(result.stdout) : null;
  return match ? Number(match[1]) : undefined;
}
