/**
 * What `xmig lab` needs from the machine, checked before it touches anything: root
 * (namespaces, bridges, taps), iproute2, /dev/net/tun, and QEMU 10 or later (asked of the
 * binary itself). Whatever is missing is one line naming it and the exact command that
 * installs it; the kernel and busybox are the image builder's to check (same style).
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { XmigError } from '../shared/errors.js';
import { DISK_TOOLS, DISK_TOOLS_REMEDY } from './lab-disk.js';
import { QEMU_BINARY } from './qemu-command.js';

export const QEMU_INSTALL = 'apt-get install -t bookworm-backports qemu-system-x86';

export interface Probe {
  isRoot: () => boolean;
  hasCommand: (command: string) => boolean;
  hasFile: (path: string) => boolean;
  /** The QEMU version as `qemu-system-x86_64 --version` prints it, or undefined. */
  qemuVersion: (binary: string) => string | undefined;
}

export const systemProbe: Probe = {
  isRoot: () => process.getuid?.() === 0,
  hasCommand: (command) => spawnSync('sh', ['-c', `command -v ${command}`], { stdio: 'ignore' }).status === 0,
  hasFile: (path) => existsSync(path),
  qemuVersion: (binary) => {
    const result = spawnSync(binary, ['--version'], { encoding: 'utf8' });
    return result.status === 0 ? /version (\d+\.\d+(\.\d+)?)/.exec(result.stdout)?.[1] : undefined;
  },
};

/**
 * Throws one ERR_STATE line if the lab cannot run here (with `disk`: also what makes and
 * checks the VM's disk; with `iperf3`: iperf3's client on host C).
 */
export function checkLabRequirements(probe: Probe = systemProbe, qemu = QEMU_BINARY, needs: { disk?: boolean; iperf3?: boolean } = {}): void {
  const missing: string[] = [];
  const installs: string[] = [];
  if (!probe.isRoot()) missing.push('root (network namespaces, bridges and taps)');
  if (!probe.hasCommand('ip')) {
    missing.push('iproute2 (ip)');
    installs.push('apt-get install iproute2');
  }
  if (!probe.hasFile('/dev/net/tun')) missing.push('/dev/net/tun (the tun module: modprobe tun)');
  const version = probe.qemuVersion(qemu);
  const major = version ? Number(version.split('.')[0]) : 0;
  if (major < 10) {
    missing.push(version ? `QEMU 10 or later (found ${version})` : `QEMU 10 or later (no ${qemu})`);
    installs.push(QEMU_INSTALL);
  }
  const tools = needs.disk ? DISK_TOOLS.filter((t) => !probe.hasCommand(t)) : [];
  if (tools.length) {
    missing.push(`${tools.join(', ')} (the VM's disk)`);
    installs.push(DISK_TOOLS_REMEDY);
  }
  if (needs.iperf3 && !probe.hasCommand('iperf3')) {
    missing.push("iperf3 (the network workload's client on host C)");
    installs.push('apt-get install iperf3');
  }
  if (missing.length === 0) return;
  const how = [...(probe.isRoot() ? [] : ['run it as root']), ...installs].join('; then ');
  throw new XmigError('ERR_STATE', `xmig lab cannot run here: missing ${missing.join(', ')}${how ? ` — ${how}` : ''}`);
}
