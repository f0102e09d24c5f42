/**
 * `xmig lab image`: the lab VM's image, built from what this machine has and cached by
 * content hash. The image is a kernel (the distribution's, from /boot) and an initramfs
 * holding busybox, the host's Node.js with its libraries, the compiled xmig with its
 * production dependencies, the guest init, the kernel modules it loads and the Table 2
 * workloads (dbench, iperf3) that the host has installed
 * (image-tree.ts has the layout). Its hash covers every one of those bytes (image-pack.ts),
 * so a rebuild from the same inputs is a cache hit and any changed input makes a new image.
 *
 * Phases, each reported with bytes and milliseconds: inputs (find the kernel, modules,
 * busybox, node and its libraries, the packages), compile (tsc, once per source tree),
 * hash, pack (only on a miss). The cache (`--cache-dir`; default $XDG_CACHE_HOME/xmig/lab,
 * else /var/cache/xmig/lab for root, else ~/.cache/xmig/lab) holds images/<hash>/ with
 * vmlinuz, the initramfs and image.json; images unused for a day go, the newest four stay.
 */
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { XmigError } from '../../shared/errors.js';
import { findWorkloads, guestModuleFiles, resolveBusybox, resolveKernel, resolveNode } from './host-inputs.js';
import { moduleName } from './module-order.js';
import { defaultCompression, hashImage, imageBytes, initramfsName, writeInitramfs, type Compression } from './image-pack.js';
import { imageEntries } from './image-tree.js';
import { compiledDist, productionPackages, projectRoot } from './xmig-files.js';

export interface LabImage {
  /** sha256 (hex) of every input. */
  hash: string;
  /** The image's directory in the cache. */
  dir: string;
  kernel: string;
  initramfs: string;
  compression: Compression;
  kernelVersion: string;
  nodeVersion: string;
  xmigVersion: string;
  /** Module names in load order. */
  modules: string[];
  /** The Table 2 workloads the image holds ('dbench', 'iperf3'): those the building host had. */
  workloads: string[];
  /** Files in the guest's root file system, and their bytes. */
  files: number;
  imageBytes: number;
  /** The initramfs file (compressed). */
  initramfsBytes: number;
  createdAt: string;
}

export type ImagePhase = 'inputs' | 'compile' | 'hash' | 'pack';

export interface ImageProgress {
  phase: ImagePhase;
  state: 'start' | 'progress' | 'end';
  /** Bytes done in this phase, and of how many (when known). */
  bytes?: number;
  totalBytes?: number;
  /** Since the phase started. */
  ms: number;
  detail?: string;
}

export interface BuildImageOptions {
  cacheDir?: string;
  /** A kernel other than the newest in /boot (its modules must be in /lib/modules/VERSION). */
  kernel?: string;
  compression?: Compression;
  /** xmig's package root (default: the one this code runs from). */
  root?: string;
  /** Build even if the cache has this image. */
  force?: boolean;
  onProgress?: (progress: ImageProgress) => void;
  signal?: AbortSignal;
}

export interface BuiltImage extends LabImage {
  cached: boolean;
  /** Milliseconds per phase of this call. */
  phases: Partial<Record<ImagePhase, number>>;
}

export function defaultCacheDir(): string {
  const xdg = process.env['XDG_CACHE_HOME'];
  if (xdg) return join(xdg, 'xmig', 'lab');
  return process.getuid?.() === 0 ? '/var/cache/xmig/lab' : join(homedir(), '.cache', 'xmig', 'lab');
}

const MANIFEST = 'image.json';
const KEEP_NEWEST = 4;
const UNUSED_MS = 24 * 3600_000;

/** An image already in the cache, by its directory. */
export function loadImage(dir: string): LabImage {
  const file = join(dir, MANIFEST);
  if (!existsSync(file)) throw new XmigError('ERR_STATE', `no lab image in ${dir}`);
  const image = JSON.parse(readFileSync(file, 'utf8')) as LabImage;
  // The directory may have moved with the cache: paths are relative to where it is now.
  return { ...image, workloads: image.workloads ?? [], dir, kernel: join(dir, 'vmlinuz'), initramfs: join(dir, initramfsName(image.compression)) };
}

/** Removes cached images (and compiled trees) unused for a day, keeping the newest few. */
export function pruneCache(cacheDir: string, now = Date.now()): string[] {
  const removed: string[] = [];
  for (const sub of ['images', 'dist']) {
    const dir = join(cacheDir, sub);
    if (!existsSync(dir)) continue;
    const entries = readdirSync(dir)
      .filter((name) => !name.includes('.tmp'))
      .map((name) => ({ path: join(dir, name), used: statSync(join(dir, name)).mtimeMs }))
      .sort((a, b) => b.used - a.used);
    for (const entry of entries.slice(KEEP_NEWEST)) {
      if (now - entry.used < UNUSED_MS) continue;
      rmSync(entry.path, { recursive: true, force: true });
      removed.push(entry.path);
    }
  }
  return removed;
}

export async function buildImage(options: BuildImageOptions = {}): Promise<BuiltImage> {
  const cacheDir = options.cacheDir ?? defaultCacheDir();
  const root = options.root ?? projectRoot();
  const signal = options.signal;
  const phases: BuiltImage['phases'] = {};
  const phase = async <T>(name: ImagePhase, run: (report: (bytes: number, totalBytes?: number) => void) => Promise<T>, detail?: (result: T) => string): Promise<T> => {
    signal?.throwIfAborted();
    const started = performance.now();
    const ms = (): number => Math.round(performance.now() - started);
    options.onProgress?.({ phase: name, state: 'start', ms: 0 });
    let last = { bytes: 0, totalBytes: undefined as number | undefined };
    const result = await run((bytes, totalBytes) => {
      last = { bytes, totalBytes };
      options.onProgress?.({ phase: name, state: 'progress', bytes, totalBytes, ms: ms() });
    });
    phases[name] = ms();
    options.onProgress?.({ phase: name, state: 'end', bytes: last.bytes || undefined, totalBytes: last.totalBytes, ms: ms(), detail: detail?.(result) });
    return result;
  };
  mkdirSync(cacheDir, { recursive: true });

  const inputs = await phase(
    'inputs',
    async () => {
      const kernel = resolveKernel(options.kernel);
      return { kernel, modules: guestModuleFiles(kernel), busybox: resolveBusybox(), node: resolveNode(), packages: productionPackages(root), workloads: findWorkloads() };
    },
    (i) =>
      `kernel ${i.kernel.version}, node ${i.node.version}, ${i.node.shared.libraries.length} libraries, ${i.modules.length} modules, ${i.packages.length} packages, workloads: ${i.workloads.map((w) => w.name).join(', ') || 'none (apt-get install dbench iperf3)'}`,
  );
  const dist = await phase('compile', () => compiledDist(root, cacheDir, signal), (d) => (d.compiled ? `compiled into ${d.dir}` : `up to date (${d.dir})`));
  const entries = imageEntries({ ...inputs, root, dist: dist.dir });
  const compression = options.compression ?? defaultCompression();
  const total = imageBytes(entries) + statSync(inputs.kernel.path).size;
  const hash = await phase('hash', (report) => hashImage(inputs.kernel.path, entries, compression, { onBytes: (n) => report(n, total), signal }));
  const dir = join(cacheDir, 'images', hash.slice(0, 32));

  if (!options.force && existsSync(join(dir, MANIFEST))) {
    const now = new Date();
    utimesSync(dir, now, now);
    return { ...loadImage(dir), cached: true, phases };
  }

  const temporary = `${dir}.tmp-${process.pid}`;
  rmSync(temporary, { recursive: true, force: true });
  mkdirSync(temporary, { recursive: true });
  try {
    const written = await phase(
      'pack',
      async (report) => {
        copyFileSync(inputs.kernel.path, join(temporary, 'vmlinuz'));
        return writeInitramfs(entries, join(temporary, initramfsName(compression)), compression, { onBytes: (n) => report(n, imageBytes(entries)), signal });
      },
      (w) => `${compression}: ${(w.archiveBytes / 1048576).toFixed(1)} MiB -> ${(w.fileBytes / 1048576).toFixed(1)} MiB`,
    );
    const xmigVersion = (JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { version: string }).version;
    const image: LabImage = {
      hash,
      dir,
      kernel: join(dir, 'vmlinuz'),
      initramfs: join(dir, initramfsName(compression)),
      compression,
      kernelVersion: inputs.kernel.version,
      nodeVersion: inputs.node.version,
      xmigVersion,
      modules: inputs.modules.map(moduleName),
      workloads: inputs.workloads.map((w) => w.name),
      files: entries.filter((e) => e.kind === 'file' || e.kind === 'data').length,
      imageBytes: imageBytes(entries),
      initramfsBytes: written.fileBytes,
      createdAt: new Date().toISOString(),
    };
    writeFileSync(join(temporary, MANIFEST), `${JSON.stringify(image, null, 2)}\n`);
    rmSync(dir, { recursive: true, force: true });
    try {
      renameSync(temporary, dir);
    } catch (error) {
      // Another build of the same inputs finished first: use it.
      if (!existsSync(join(dir, MANIFEST))) throw error;
    }
    pruneCache(cacheDir);
    return { ...loadImage(dir), cached: false, phases };
  } finally {
    rmSync(temporary, { recursive: true, force: true });
  }
}
