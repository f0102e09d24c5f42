/**
 * What the guest image is made of, found on this machine: the distribution kernel in
 * /boot with its modules, a static busybox, and the Node.js running this process with
 * the shared libraries and loader it links against. Whatever is missing is one clear
 * error naming the Debian package that provides it.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, realpathSync } from 'node:fs';
import { join } from 'node:path';
import { XmigError } from '../../shared/errors.js';
import { parseLdd, type SharedLibraries } from './ldd.js';
import { GUEST_MODULES, moduleLoadOrder, parseModulesDep } from './module-order.js';
import type { Workload } from '../guest/guest-config.js';

export const IMAGE_REMEDY = 'apt-get install linux-image-amd64 busybox-static (as root)';

export interface KernelInput {
  /** /boot/vmlinuz-VERSION */
  path: string;
  version: string;
  /** /lib/modules/VERSION */
  modulesDir: string;
}

/** The kernels in /boot that have their modules installed, newest (by version) first. */
export function findKernels(boot = '/boot', modulesRoot = '/lib/modules'): KernelInput[] {
  if (!existsSync(boot)) return [];
  return readdirSync(boot)
    .filter((f) => f.startsWith('vmlinuz-'))
    .map((f) => ({ path: join(boot, f), version: f.slice('vmlinuz-'.length), modulesDir: join(modulesRoot, f.slice('vmlinuz-'.length)) }))
    .filter((k) => existsSync(join(k.modulesDir, 'modules.dep')))
    .sort((a, b) => b.version.localeCompare(a.version, 'en', { numeric: true }));
}

/** The newest kernel in /boot, if any (whether or not its modules are installed). */
export function findKernel(boot = '/boot'): string | undefined {
  if (!existsSync(boot)) return undefined;
  const kernels = readdirSync(boot)
    .filter((f) => f.startsWith('vmlinuz-'))
    .sort((a, b) => b.localeCompare(a, 'en', { numeric: true }));
  return kernels.length ? join(boot, kernels[0]!) : undefined;
}

/** A static busybox (the initramfs has no libc for a dynamic one). */
export function findBusybox(): string | undefined {
  for (const candidate of ['/bin/busybox', '/usr/bin/busybox']) {
    if (!existsSync(candidate)) continue;
    const file = spawnSync('file', ['-L', candidate], { encoding: 'utf8' });
    if (file.status !== 0 || /statically linked|static-pie/.test(file.stdout)) return candidate;
  }
  return undefined;
}

/** The kernel to use: `path` if given (its version read from the file name), else the newest with modules. */
export function resolveKernel(path?: string): KernelInput {
  if (path !== undefined) {
    const match = /vmlinuz-(.+)$/.exec(path);
    if (!existsSync(path)) throw new XmigError('ERR_STATE', `no kernel at ${path}`);
    if (!match) throw new XmigError('ERR_STATE', `cannot tell the version of kernel ${path} (expected .../vmlinuz-VERSION)`);
    const kernel = { path, version: match[1]!, modulesDir: join('/lib/modules', match[1]!) };
    if (!existsSync(join(kernel.modulesDir, 'modules.dep'))) throw new XmigError('ERR_STATE', `kernel ${path} has no ${kernel.modulesDir}/modules.dep`);
    return kernel;
  }
  const kernel = findKernels()[0];
  if (!kernel) throw new XmigError('ERR_STATE', `no kernel with modules in /boot and /lib/modules: ${IMAGE_REMEDY}`);
  return kernel;
}

export function resolveBusybox(): string {
  const busybox = findBusybox();
  if (!busybox) throw new XmigError('ERR_STATE', `no static busybox in /bin or /usr/bin: ${IMAGE_REMEDY}`);
  return busybox;
}

/** The module files the guest loads, in order, as absolute paths. */
export function guestModuleFiles(kernel: KernelInput, wanted: readonly string[] = GUEST_MODULES): string[] {
  const text = readFileSync(join(kernel.modulesDir, 'modules.dep'), 'utf8');
  return moduleLoadOrder(parseModulesDep(text), wanted).map((file) => join(kernel.modulesDir, file));
}

export interface NodeInput {
  /** The binary (symlinks resolved). */
  path: string;
  version: string;
  shared: SharedLibraries;
}

/** What ldd says a binary needs. */
function sharedLibraries(path: string): SharedLibraries {
  const ldd = spawnSync('ldd', [path], { encoding: 'utf8' });
  if (ldd.error) throw new XmigError('ERR_STATE', `cannot run ldd: ${ldd.error.message} (apt-get install libc-bin)`);
  // ldd exits 1 for a static binary ("not a dynamic executable"); the parser reads that as none.
  const shared = parseLdd(`${ldd.stdout}\n${ldd.status === 0 ? '' : ldd.stderr.trim()}`);
  if (shared.libraries.length > 0 && shared.loader === undefined) throw new XmigError('ERR_STATE', `ldd ${path}: no dynamic loader in its output`);
  return shared;
}

/** This process's Node.js and what ldd says it needs. */
export function resolveNode(binary = process.execPath): NodeInput {
  const path = realpathSync(binary);
  return { path, version: process.version, shared: sharedLibraries(path) };
}

/** A workload program for the guest (the paper's Table 2), as the host's Debian package installed it. */
export interface WorkloadInput {
  name: Workload;
  /** The binary, at the same path in the guest. */
  binary: string;
  /** Data files it reads, at the same paths in the guest (dbench's loadfile). */
  files: string[];
  shared: SharedLibraries;
}

/** Where Debian's packages put each workload's program and data (the guest init runs them from there). */
export const WORKLOAD_FILES: Record<Workload, { binary: string; files: string[] }> = {
  dbench: { binary: '/usr/bin/dbench', files: ['/usr/share/dbench/client.txt'] },
  iperf3: { binary: '/usr/bin/iperf3', files: [] },
};

/**
 * The workloads this host can put into the image: those whose package is installed. A
 * missing one is no error here (the image builds without it; a guest config asking for it
 * is refused by checkWorkloads, naming the package).
 */
export function findWorkloads(layout: Record<Workload, { binary: string; files: string[] }> = WORKLOAD_FILES): WorkloadInput[] {
  const found: WorkloadInput[] = [];
  for (const name of Object.keys(layout) as Workload[]) {
    const { binary, files } = layout[name];
    if (!existsSync(binary) || !files.every((f) => existsSync(f))) continue;
    found.push({ name, binary, files, shared: sharedLibraries(binary) });
  }
  return found;
}
