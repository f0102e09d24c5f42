/**
 * A libvirt "host" for the e2e tests: Debian's system libvirtd (root, qemu:///system, QEMU
 * as libvirt-qemu, Debian's default access rules) in network, mount and UTS namespaces of
 * its own, so two of them on one machine are two hosts as far as libvirt can tell:
 *
 *  - its own /etc/libvirt, /var/lib/libvirt, /var/log/libvirt and /var/cache/libvirt
 *    (directories of the test, bound over those paths), its own host_uuid (libvirt
 *    refuses to migrate to a host with its own UUID), hostname and hooks;
 *  - a private tmpfs on /run: its sockets (/run/libvirt, /run/xmig-libvirt) exist in
 *    this namespace only, so the other host cannot reach them except through xmig;
 *  - a network namespace with nothing in it but its loopback (and its own sysfs, which
 *    shows that): no TCP path between the two either.
 *
 * The machine's own libvirt (if any) is not touched. Without systemd in the namespace
 * (its /run is empty) libvirt uses no machined, and `cgroup_controllers = []` keeps it
 * out of the cgroup tree. QEMU's output goes to files (`stdio_handler = "file"`: no
 * virtlogd here, which a real host's systemd starts). */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, openSync, readFileSync, readdirSync, readlinkSync, writeFileSync } from 'node:fs';
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { waitFor } from '../support/wait.js';

/** What runs a command inside a host's namespaces: prefix for spawn. */
export type NsPrefix = [string, ...string[]];

export interface VirshResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

export class LibvirtHost {
  readonly base: string;
  readonly uuid = randomUUID();
  private daemon: ChildProcess | undefined;
  private namespace: string | undefined;

  /** `hook`: a file to install as the host's /etc/libvirt/hooks/qemu. */
  constructor(
    readonly name: string,
    dir: string,
    private readonly hook?: string,
  ) {
    this.base = join(dir, name);
  }

  /** Where the host's /var/log/libvirt is, seen from outside. */
  logPath(...parts: string[]): string {
    return join(this.base, 'log', ...parts);
  }

  /** Where the host's /var/lib/libvirt is, seen from outside. */
  libPath(...parts: string[]): string {
    return join(this.base, 'lib', ...parts);
  }

  get pid(): number {
    if (!this.daemon?.pid) throw new Error(`libvirt host ${this.name} is not started`);
    return this.daemon.pid;
  }

  /** A path inside the host's namespaces (its private /run included), seen from outside. */
  inside(path: string): string {
    return `/proc/${this.pid}/root${path}`;
  }

  /** Runs `command` in the host's mount and network namespaces. */
  prefix(): NsPrefix {
    return ['nsenter', '-t', String(this.pid), '-m', '-n', '-u', '--'];
  }

  async start(): Promise<void> {
    for (const sub of ['etc/hooks', 'lib/images', 'log/qemu', 'cache']) mkdirSync(join(this.base, sub), { recursive: true });
    writeFileSync(
      join(this.base, 'etc', 'libvirtd.conf'),
      [
        `host_uuid = "${this.uuid}"`,
        'log_outputs = "3:file:/var/log/libvirt/libvirtd.log"',
        '',
      ].join('\n'),
    );
    writeFileSync(join(this.base, 'etc', 'qemu.conf'), ['cgroup_controllers = [ ]', 'stdio_handler = "file"', ''].join('\n'));
    if (this.hook) copyFileSync(this.hook, join(this.base, 'etc', 'hooks', 'qemu'));
    const binds = [
      ['etc', '/etc/libvirt'],
      ['lib', '/var/lib/libvirt'],
      ['log', '/var/log/libvirt'],
      ['cache', '/var/cache/libvirt'],
    ]
      .map(([from, to]) => `mount --bind '${join(this.base, from!)}' ${to}`)
      .join(' && ');
    // sysfs mounted again from inside the network namespace shows its (empty) network, not the machine's.
    const script = `set -e; hostname ${this.name}; ip link set lo up; mount -t tmpfs -o mode=0755 xmig-e2e-run /run; mount -t sysfs xmig-e2e-sys /sys; mkdir -p /run/libvirt; ${binds}; exec libvirtd -p /run/libvirtd.pid`;
    const output = openSync(join(this.base, 'libvirtd.out'), 'w');
    this.daemon = spawn('unshare', ['--net', '--mount', '--uts', '--propagation', 'private', '--', 'sh', '-c', script], { stdio: ['ignore', output, output] });
    await waitFor(
      () => {
        if (this.daemon!.exitCode !== null) throw new Error(`libvirtd of ${this.name} exited: ${this.daemonOutput()}`);
        return existsSync(this.inside('/run/libvirt/libvirt-sock'));
      },
      60_000,
      `libvirtd of ${this.name} to listen`,
    );
    this.namespace = readlinkSync(`/proc/${this.pid}/ns/mnt`);
    const version = await this.virsh('version');
    if (version.code !== 0) throw new Error(`virsh version on ${this.name}: ${version.stderr}`);
  }

  /** libvirtd's own output and the warnings in its log: what to read when a test fails. */
  daemonOutput(): string {
    const read = (file: string): string => (existsSync(file) ? readFileSync(file, 'utf8').trim().split('\n').slice(-20).join('\n') : '');
    return [read(join(this.base, 'libvirtd.out')), read(this.logPath('libvirtd.log'))].filter(Boolean).join('\n');
  }

  /** virsh against this host's libvirtd (qemu:///system, from inside its namespaces). */
  virsh(...args: string[]): Promise<VirshResult> {
    return this.run(['virsh', '-c', 'qemu:///system', ...args]);
  }

  /** Runs a command inside the host's namespaces to completion, with a deadline. */
  run(argv: string[], timeoutMs = 180_000): Promise<VirshResult> {
    return new Promise((resolve, reject) => {
      const [command, ...rest] = [...this.prefix(), ...argv];
      const child = spawn(command!, rest, { stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
      child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        reject(new Error(`${argv.join(' ')} on ${this.name} did not finish within ${timeoutMs} ms`));
      }, timeoutMs);
      child.on('exit', (code) => {
        clearTimeout(timer);
        resolve({ code, stdout, stderr });
      });
    });
  }

  /** The domains this host's libvirtd knows, running or not. */
  async domains(): Promise<string[]> {
    const list = await this.virsh('list', '--all', '--name');
    return list.stdout.split('\n').map((l) => l.trim()).filter(Boolean);
  }

  async domainState(domain: string): Promise<string> {
    return (await this.virsh('domstate', domain)).stdout.trim();
  }

  /** Every process in this host's mount namespace: libvirtd and what it started. */
  private processes(): number[] {
    if (!this.namespace) return [];
    const pids: number[] = [];
    for (const entry of readdirSync('/proc')) {
      if (!/^\d+$/.test(entry)) continue;
      try {
        if (readlinkSync(`/proc/${entry}/ns/mnt`) === this.namespace) pids.push(Number(entry));
      } catch {
        // gone meanwhile, or not ours to read
      }
    }
    return pids;
  }

  /**
   * Destroys its domains (libvirtd leaves QEMU running when it exits), stops libvirtd,
   * and kills whatever is still in its namespace: nothing of it outlives the test.
   */
  async stop(): Promise<void> {
    const daemon = this.daemon;
    if (!daemon) return;
    if (daemon.exitCode === null) {
      for (const domain of await this.domains().catch(() => [])) await this.virsh('destroy', domain).catch(() => undefined);
      const exited = new Promise<void>((resolve) => daemon.once('exit', () => resolve()));
      daemon.kill('SIGTERM');
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([exited, new Promise<void>((resolve) => (timer = setTimeout(resolve, 20_000)))]);
      clearTimeout(timer);
    }
    for (const pid of this.processes()) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    if (daemon.exitCode === null && daemon.signalCode === null) daemon.kill('SIGKILL');
    this.daemon = undefined;
  }
}

/** Whether Debian's libvirt daemon and virsh are installed (libvirt-daemon-system), and what makes its namespaces. */
export function hasLibvirt(): boolean {
  return ['libvirtd', 'virsh', 'unshare', 'nsenter', 'ip'].every((c) => spawnSync('sh', ['-c', `command -v ${c}`], { stdio: 'ignore' }).status === 0);
}

export interface GuestDomain {
  name: string;
  kernel: string;
  initramfs: string;
  memoryMb: number;
  /** Inside the host: where the serial console is written. */
  serial: string;
  /** Inside the host: a raw disk image (storage migration). */
  disk?: string;
  /** NAME=value words for the kernel command line, which reach init as environment. */
  guestEnv?: Record<string, string | number>;
}

/**
 * The e2e guest as libvirt defines it: TCG (`type='qemu'`), machine `pc`, direct kernel
 * boot of the distribution kernel with the busybox initramfs, its console to a file.
 * ACPI on: without it libvirt 9.0 passes -no-acpi, which QEMU 10 no longer takes.
 */
export function domainXml(guest: GuestDomain): string {
  const cmdline = ['console=ttyS0 quiet panic=-1 rdinit=/init', ...Object.entries(guest.guestEnv ?? {}).map(([k, v]) => `${k}=${v}`)].join(' ');
  const disk = guest.disk
    ? `<disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='${guest.disk}'/><target dev='vda' bus='virtio'/></disk>`
    : '';
  return `<domain type='qemu'>
  <name>${guest.name}</name>
  <memory unit='MiB'>${guest.memoryMb}</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>${guest.kernel}</kernel>
    <initrd>${guest.initramfs}</initrd>
    <cmdline>${cmdline}</cmdline>
  </os>
  <features><acpi/></features>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    ${disk}
    <serial type='file'><source path='${guest.serial}'/><target port='0'/></serial>
    <memballoon model='none'/>
  </devices>
</domain>
`;
}
