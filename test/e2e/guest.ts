/**
 * The e2e test guest: the distribution's kernel and a busybox initramfs whose init
 * counts on the serial console and dirties memory every tick, so a migration has
 * pages to move again and the count shows whether the guest ran on without a gap.
 *
 * With a disk (XMIG_DISK=1, and the initramfs built with DISK_MODULES), the guest also
 * mounts /dev/vda (ext4) at /data, prints the checksum of /data/before.bin, and writes a
 * small file every tick, printing each one's checksum as written. On the command
 * serial port (ttyS1) `finish` stops the writing, drops the page cache, prints the
 * checksum of every file as read back from the disk, and unmounts: what the disk holds
 * is then checked against what was written, and the image is clean for e2fsck.
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseLdd } from '../../lab/image/ldd.js';
import { moduleLoadOrder, parseModulesDep } from '../../lab/image/module-order.js';

export const COUNT_PREFIX = 'xmig-count';
/** Disk lines: `xmig-disk-wrote <file> <sha1>` as written, `xmig-disk-check <file> <sha1>` as read back. */
export const DISK_WROTE = 'xmig-disk-wrote';
export const DISK_CHECK = 'xmig-disk-check';
export const DISK_UNMOUNTED = 'xmig-disk-unmounted';
/** dbench's own output, line by line, while it runs on the disk (XMIG_DBENCH=<seconds>), then its exit. */
export const DBENCH_PREFIX = 'xmig-dbench';
export const DBENCH_EXIT = 'xmig-dbench-exit';
/** The kernel modules the guest needs for an ext4 disk on virtio-blk (their dependencies come along). */
export const DISK_MODULES = ['virtio_pci', 'virtio_blk', 'crc32c_generic', 'ext4'];
/** Printed once the working set (XMIG_WSS_MB) is in place. */
export const WSS_READY = 'xmig-wss-ready';

const INIT = `#!/bin/busybox sh
/bin/busybox mkdir -p /proc /tmp
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t devtmpfs devtmpfs /dev
/bin/busybox mount -t tmpfs -o size=90% tmpfs /tmp
# The kernel hands unknown command-line words of the form NAME=value to init as
# environment: XMIG_WSS_MB sets up a working set that a background loop rewrites
# (copies over itself) every XMIG_WSS_PAUSE_MS, the benchmark's "100 MB being dirtied".
if [ -n "\${XMIG_WSS_MB}" ]; then
  /bin/busybox dd if=/dev/urandom of=/tmp/wss-source bs=1048576 count=\${XMIG_WSS_MB} 2>/dev/null
  /bin/busybox cp /tmp/wss-source /tmp/wss
  echo "${WSS_READY} $(/bin/busybox du -sk /tmp | /bin/busybox cut -f1) KiB in /tmp"
  while true; do
    /bin/busybox dd if=/tmp/wss-source of=/tmp/wss bs=1048576 conv=notrunc 2>/dev/null
    /bin/busybox usleep $((\${XMIG_WSS_PAUSE_MS:-1000} * 1000))
  done &
fi
if [ -n "\${XMIG_DISK}" ]; then
  for m in $(/bin/busybox cat /modules/order); do /bin/busybox insmod /modules/$m; done
  /bin/busybox mkdir -p /data
  n=0
  while [ ! -b /dev/vda ] && [ $n -lt 200 ]; do /bin/busybox usleep 100000; n=$((n+1)); done
  if /bin/busybox mount -t ext4 /dev/vda /data; then echo "xmig-disk-mounted"; else echo "xmig-disk-mount-failed"; fi
  echo "${DISK_CHECK} before.bin $(/bin/busybox sha1sum /data/before.bin | /bin/busybox cut -d' ' -f1)"
  # dbench (the paper's I/O workload) on the disk, its output on the console as it goes.
  if [ -n "\${XMIG_DBENCH}" ] && [ -x /bin/dbench ]; then
    (
      /bin/busybox mkdir -p /data/dbench
      /bin/dbench -D /data/dbench -c /dbench/client.txt -t \${XMIG_DBENCH} \${XMIG_DBENCH_CLIENTS:-1} 2>&1 | while read -r line; do echo "${DBENCH_PREFIX} $line"; done
      echo "${DBENCH_EXIT}"
    ) &
  fi
  (
    j=0
    while [ ! -e /tmp/disk-stop ]; do
      /bin/busybox dd if=/dev/urandom of=/data/during-$j.bin bs=16384 count=4 2>/dev/null
      /bin/busybox sync
      echo "${DISK_WROTE} during-$j.bin $(/bin/busybox sha1sum /data/during-$j.bin | /bin/busybox cut -d' ' -f1)"
      j=$((j+1))
      /bin/busybox usleep 200000
    done
    /bin/busybox touch /tmp/disk-stopped
  ) &
  (
    /bin/busybox stty -F /dev/ttyS1 -echo clocal 2>/dev/null
    while read -r command < /dev/ttyS1; do
      [ "$command" = finish ] || continue
      /bin/busybox touch /tmp/disk-stop
      while [ ! -e /tmp/disk-stopped ]; do /bin/busybox usleep 50000; done
      /bin/busybox sync
      echo 3 > /proc/sys/vm/drop_caches
      for f in /data/*.bin; do
        echo "${DISK_CHECK} $(/bin/busybox basename $f) $(/bin/busybox sha1sum $f | /bin/busybox cut -d' ' -f1)"
      done
      if /bin/busybox umount /data; then echo "${DISK_UNMOUNTED}"; else echo "xmig-disk-umount-failed"; fi
    done
  ) &
fi
i=0
while true; do
  echo "${COUNT_PREFIX} $i"
  # Rewrite a few MiB of guest memory each tick: dirty pages for the pre-copy rounds.
  /bin/busybox dd if=/dev/urandom of=/tmp/dirty bs=65536 count=\${XMIG_DIRTY_BLOCKS:-32} 2>/dev/null
  i=$((i+1))
  /bin/busybox usleep 100000
done
`;

/** The guest's serial log so far ('' before QEMU has created it). */
export function serialLog(file: string): string {
  return existsSync(file) ? readFileSync(file, 'utf8') : '';
}

/** The counts the guest has printed on its serial console, in order. */
export function serialCounts(file: string): number[] {
  return [...serialLog(file).matchAll(new RegExp(`${COUNT_PREFIX} (\\d+)`, 'g'))].map((m) => Number(m[1]));
}

// The machine's kernel, busybox and QEMU are found the way the lab finds them.
export { findBusybox, findKernel } from '../../lab/image/host-inputs.js';
export { QEMU_REMEDY, qemuMajor } from '../../lab/qemu-command.js';

/** What the guest said about its disk's files: as written, and as read back from the disk. */
export function diskLines(file: string, prefix: typeof DISK_WROTE | typeof DISK_CHECK): Map<string, string> {
  const lines = new Map<string, string>();
  for (const m of serialLog(file).matchAll(new RegExp(`${prefix} (\\S+) ([0-9a-f]{40})`, 'g'))) lines.set(m[1]!, m[2]!);
  return lines;
}

/** The kernel release of a /boot/vmlinuz-<release>. */
export function kernelRelease(kernel: string): string {
  return kernel.replace(/^.*\/vmlinuz-/, '');
}

/**
 * The module files for `names` with their dependencies, in load order, from the kernel's
 * modules.dep (the lab's reading of it); undefined if this kernel has no such modules here.
 */
export function moduleFiles(release: string, names: readonly string[]): string[] | undefined {
  const base = join('/lib/modules', release);
  if (!existsSync(join(base, 'modules.dep'))) return undefined;
  let order: string[];
  try {
    order = moduleLoadOrder(parseModulesDep(readFileSync(join(base, 'modules.dep'), 'utf8')), names);
  } catch {
    return undefined;
  }
  if (order.some((path) => !/\.ko$/.test(path))) return undefined; // compressed: busybox insmod cannot load them
  return order.map((path) => join(base, path));
}

/** dbench and what it needs (its shared libraries, the loader, its loadfile), if this host has it. */
export function findDbench(): { binary: string; loadfile: string; libraries: string[] } | undefined {
  const binary = '/usr/bin/dbench';
  const loadfile = '/usr/share/dbench/client.txt';
  if (!existsSync(binary) || !existsSync(loadfile)) return undefined;
  const ldd = spawnSync('ldd', [binary], { encoding: 'utf8' });
  if (ldd.status !== 0) return undefined;
  // Read the way the lab reads it for Node.js: every library, and the loader, at its host path.
  const { libraries, loader } = parseLdd(ldd.stdout);
  return { binary, loadfile, libraries: [...new Set([...libraries, ...(loader ? [loader] : [])])] };
}

/** Builds the initramfs (newc cpio) in `dir` and returns its path; `modules` (in load order) go into /modules. */
export function buildInitramfs(dir: string, busybox: string, modules: readonly string[] = [], extras: { dbench?: ReturnType<typeof findDbench> } = {}): string {
  const root = join(dir, 'root');
  mkdirSync(join(root, 'bin'), { recursive: true });
  mkdirSync(join(root, 'dev'), { recursive: true });
  copyFileSync(busybox, join(root, 'bin', 'busybox'));
  chmodSync(join(root, 'bin', 'busybox'), 0o755);
  writeFileSync(join(root, 'init'), INIT, { mode: 0o755 });
  if (modules.length) {
    mkdirSync(join(root, 'modules'), { recursive: true });
    for (const module of modules) copyFileSync(module, join(root, 'modules', module.replace(/^.*\//, '')));
    writeFileSync(join(root, 'modules', 'order'), `${modules.map((m) => m.replace(/^.*\//, '')).join('\n')}\n`);
  }
  if (extras.dbench) {
    copyFileSync(extras.dbench.binary, join(root, 'bin', 'dbench'));
    chmodSync(join(root, 'bin', 'dbench'), 0o755);
    mkdirSync(join(root, 'dbench'), { recursive: true });
    copyFileSync(extras.dbench.loadfile, join(root, 'dbench', 'client.txt'));
    // Shared libraries where the loader looks for them: the same paths as on the host.
    for (const library of extras.dbench.libraries) {
      mkdirSync(join(root, library, '..'), { recursive: true });
      copyFileSync(library, join(root, library));
    }
  }
  const image = join(dir, 'initramfs.cpio');
  const result = spawnSync('sh', ['-c', `cd "${root}" && find . | cpio -o -H newc --quiet > "${image}"`], { encoding: 'utf8' });
  if (result.status !== 0) throw new Error(`cpio failed: ${result.stderr}`);
  return image;
}

export interface QemuArgs {
  kernel: string;
  initramfs: string;
  memoryMb: number;
  serialLog: string;
  qmpSocket: string;
  /** A second QMP monitor, for whoever watches while \`xmig migrate\` holds the first (QMP serves one client per monitor). */
  observerSocket?: string;
  incoming?: string;
  /** NAME=value words for the kernel command line, which reach init as environment. */
  guestEnv?: Record<string, string | number>;
  /** The guest's disk: an image as virtio-blk (vda). */
  disk?: { image: string; format: string };
  /** A Unix socket on the guest's second serial port (ttyS1), where it takes commands. */
  commandSocket?: string;
}

/** The same machine on both ends (as migration requires), under TCG: /dev/kvm does not boot guests here. */
export function qemuArgs(args: QemuArgs): string[] {
  return [
    '-machine', 'pc,accel=tcg',
    '-m', String(args.memoryMb),
    '-kernel', args.kernel,
    '-initrd', args.initramfs,
    '-append', ['console=ttyS0 quiet panic=-1 rdinit=/init', ...Object.entries(args.guestEnv ?? {}).map(([k, v]) => `${k}=${v}`)].join(' '),
    '-display', 'none',
    '-nodefaults',
    '-no-user-config',
    '-serial', `file:${args.serialLog}`,
    '-qmp', `unix:${args.qmpSocket},server=on,wait=off`,
    ...(args.observerSocket ? ['-qmp', `unix:${args.observerSocket},server=on,wait=off`] : []),
    ...(args.commandSocket ? ['-serial', `unix:${args.commandSocket},server=on,wait=off`] : []),
    ...(args.disk ? ['-blockdev', `driver=${args.disk.format},node-name=disk0,file.driver=file,file.filename=${args.disk.image}`, '-device', 'virtio-blk-pci,drive=disk0,id=vda'] : []),
    ...(args.incoming ? ['-incoming', args.incoming] : []),
  ];
}
