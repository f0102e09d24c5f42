/**
 * The guest's root file system as a list of entries: where each file goes in the
 * initramfs and where its bytes come from (a host file, or bytes made here). Every input
 * of the image is in this list — so hashing it (image-pack.ts) hashes every input — and
 * packing it streams the host files straight into the archive.
 *
 * Layout (GUEST_PATHS in lab/guest/init-script.ts names the same places):
 *
 *     /init                          the guest init (busybox sh)
 *     /bin/busybox                   static; init installs its applets as symlinks
 *     /usr/bin/node                  the host's Node.js
 *     /lib/x86_64-linux-gnu/...      what ldd says node needs, at ldd's paths
 *     /lib64/ld-linux-x86-64.so.2    the dynamic loader, at node's PT_INTERP
 *     /usr/bin/{dbench,iperf3}       the Table 2 workloads, if the host has them (with their
 *     /usr/share/dbench/client.txt   libraries, at ldd's paths, and dbench's loadfile)
 *     /lib/modules/VERSION/kernel/…  virtio-net, virtio-blk, ext4 and their dependencies
 *     /etc/xmig/modules              those modules' paths, in load order
 *     /etc/xmig/image.json           what the image holds (versions, module names, workloads)
 *     /opt/xmig/{package.json,bin/xmig.js,dist/…,node_modules/…}
 *     /dev/console                   the kernel opens it for init's stdio
 */
import { gunzipSync } from 'node:zlib';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join, posix } from 'node:path';
import { XmigError } from '../../shared/errors.js';
import { GUEST_INIT, GUEST_PATHS } from '../guest/init-script.js';
import type { KernelInput, NodeInput, WorkloadInput } from './host-inputs.js';
import { moduleName } from './module-order.js';
import { distFiles, packageFiles, type PackageDir } from './xmig-files.js';

export type ImageEntry =
  | { kind: 'dir'; path: string; mode: number }
  | { kind: 'file'; path: string; mode: number; source: string }
  | { kind: 'data'; path: string; mode: number; data: Buffer }
  | { kind: 'char'; path: string; mode: number; major: number; minor: number };

export interface ImageInputs {
  kernel: KernelInput;
  /** Module files on the host, in load order. */
  modules: string[];
  busybox: string;
  node: NodeInput;
  /** xmig's package root (package.json, bin/xmig.js). */
  root: string;
  /** The compiled dist/ directory. */
  dist: string;
  packages: PackageDir[];
  /** dbench, iperf3: those the host has (findWorkloads). */
  workloads: WorkloadInput[];
}

const XMIG_DIR = posix.dirname(posix.dirname(GUEST_PATHS.xmig));

/** A module file's bytes, uncompressed (busybox insmod reads plain .ko files). */
function moduleBytes(file: string): Buffer | undefined {
  if (file.endsWith('.ko')) return undefined;
  if (file.endsWith('.ko.gz')) return gunzipSync(readFileSync(file));
  const tool = file.endsWith('.ko.xz') ? 'xz' : file.endsWith('.ko.zst') ? 'zstd' : undefined;
  if (!tool) throw new XmigError('ERR_STATE', `cannot read kernel module ${file}`);
  const result = spawnSync(tool, ['-dc', file], { maxBuffer: 1 << 28 });
  if (result.status !== 0) throw new XmigError('ERR_STATE', `${tool} -dc ${file} failed: ${result.error?.message ?? result.stderr.toString().trim()} (apt-get install ${tool === 'xz' ? 'xz-utils' : 'zstd'})`);
  return result.stdout;
}

/** Every entry of the image, directories included, sorted by path (parents before children). */
export function imageEntries(inputs: ImageInputs): ImageEntry[] {
  const entries: ImageEntry[] = [];
  const file = (path: string, source: string, mode = 0o644): void => void entries.push({ kind: 'file', path, mode, source });
  const data = (path: string, bytes: string | Buffer, mode = 0o644): void => void entries.push({ kind: 'data', path, mode, data: Buffer.from(bytes) });

  data('/init', GUEST_INIT, 0o755);
  file('/bin/busybox', inputs.busybox, 0o755);
  file(GUEST_PATHS.node, inputs.node.path, 0o755);
  // Shared libraries at ldd's paths, each once (node and the workloads share libc and the loader).
  const libraries = new Set<string>();
  for (const shared of [inputs.node.shared, ...inputs.workloads.map((w) => w.shared)]) {
    for (const library of [...shared.libraries, ...(shared.loader ? [shared.loader] : [])]) libraries.add(library);
  }
  for (const library of libraries) file(library, library, 0o755);
  for (const workload of inputs.workloads) {
    file(workload.binary, workload.binary, 0o755);
    for (const data of workload.files) file(data, data);
  }
  entries.push({ kind: 'char', path: '/dev/console', mode: 0o600, major: 5, minor: 1 });

  const moduleDir = `/lib/modules/${inputs.kernel.version}`;
  const modulePaths: string[] = [];
  for (const module of inputs.modules) {
    const relative = module.startsWith(inputs.kernel.modulesDir) ? module.slice(inputs.kernel.modulesDir.length + 1) : module;
    const plain = moduleBytes(module);
    const path = `${moduleDir}/${relative.replace(/\.ko\.(xz|zst|gz)$/, '.ko')}`;
    if (plain) data(path, plain);
    else file(path, module);
    modulePaths.push(path);
  }
  data(GUEST_PATHS.modules, modulePaths.map((p) => `${p}\n`).join(''));
  data(
    GUEST_PATHS.manifest,
    `${JSON.stringify({ kernel: inputs.kernel.version, node: inputs.node.version, modules: inputs.modules.map(moduleName), workloads: inputs.workloads.map((w) => w.name) })}\n`,
  );

  file(`${XMIG_DIR}/package.json`, join(inputs.root, 'package.json'));
  file(GUEST_PATHS.xmig, join(inputs.root, 'bin', 'xmig.js'), 0o755);
  for (const path of distFiles(inputs.dist)) file(`${XMIG_DIR}/dist/${path}`, join(inputs.dist, path));
  for (const pkg of inputs.packages) {
    for (const path of packageFiles(pkg.dir)) file(`${XMIG_DIR}/${pkg.imagePath}/${path}`, join(pkg.dir, path));
  }
  for (const dir of ['/dev', '/proc', '/sys', '/tmp', '/run', '/root', '/var/lib/xmig', GUEST_PATHS.dataMount]) entries.push({ kind: 'dir', path: dir, mode: 0o755 });
  return withParents(entries);
}

/** Adds every missing parent directory and sorts; a path given twice is refused. */
function withParents(entries: ImageEntry[]): ImageEntry[] {
  const byPath = new Map<string, ImageEntry>();
  for (const entry of entries) {
    const existing = byPath.get(entry.path);
    if (existing && !(existing.kind === 'dir' && entry.kind === 'dir')) throw new XmigError('ERR_STATE', `the image would hold ${entry.path} twice`);
    byPath.set(entry.path, entry);
  }
  for (const entry of [...byPath.values()]) {
    for (let dir = posix.dirname(entry.path); dir !== '/'; dir = posix.dirname(dir)) {
      const existing = byPath.get(dir);
      if (existing && existing.kind !== 'dir') throw new XmigError('ERR_STATE', `the image has a file ${dir} where a directory must be`);
      if (!existing) byPath.set(dir, { kind: 'dir', path: dir, mode: 0o755 });
    }
  }
  // Plain code-unit order puts "a" before "a/b" (and "a/b" before "a0"): parents come first.
  return [...byPath.values()].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
}
