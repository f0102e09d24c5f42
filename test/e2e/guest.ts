/**
 * The e2e test guest: the distribution's kernel and a busybox initramfs whose init
 * counts on the serial console and dirties memory every tick, so a migration has
 * pages to move again and the count shows whether the guest ran on without a gap.
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export const COUNT_PREFIX = 'xmig-count';
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

/** Builds the initramfs (newc cpio) in `dir` and returns its path. */
export function buildInitramfs(dir: string, busybox: string): string {
  const root = join(dir, 'root');
  mkdirSync(join(root, 'bin'), { recursive: true });
  mkdirSync(join(root, 'dev'), { recursive: true });
  copyFileSync(busybox, join(root, 'bin', 'busybox'));
  chmodSync(join(root, 'bin', 'busybox'), 0o755);
  writeFileSync(join(root, 'init'), INIT, { mode: 0o755 });
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
    ...(args.incoming ? ['-incoming', args.incoming] : []),
  ];
}
