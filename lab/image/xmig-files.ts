/**
 * The xmig that goes into the guest: compiled JavaScript (never the TypeScript sources, so
 * the guest needs no tsx and compiles nothing), bin/xmig.js, package.json, and the
 * production dependencies only, without what Node.js never loads at run time (type
 * declarations, source maps, TypeScript sources, docs, tests).
 *
 * In a git checkout the sources are compiled with the project's own `tsc -p
 * tsconfig.build.json` (what `npm run build` runs) into the image cache, keyed by a hash of
 * the sources, so an unchanged tree is compiled once. An installed package (dist/ and no
 * sources) uses its dist/ as it is.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, realpathSync, renameSync, rmSync, statSync } from 'node:fs';
import { dirname, join, relative, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { XmigError } from '../../shared/errors.js';

/** The directory holding xmig's package.json (the checkout, or the installed package). */
export function projectRoot(from = fileURLToPath(import.meta.url)): string {
  for (let dir = dirname(from); ; dir = dirname(dir)) {
    const manifest = join(dir, 'package.json');
    if (existsSync(manifest) && (JSON.parse(readFileSync(manifest, 'utf8')) as { name?: string }).name === 'xmig') return dir;
    if (dirname(dir) === dir) throw new XmigError('ERR_STATE', `no xmig package.json above ${from}`);
  }
}

/** Every file under `dir` (relative paths with "/", sorted), skipping what `skip` refuses. */
export function listFiles(dir: string, skip: (relativePath: string, isDirectory: boolean) => boolean = () => false): string[] {
  const out: string[] = [];
  const walk = (sub: string): void => {
    for (const entry of readdirSync(join(dir, sub), { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))) {
      const path = sub ? `${sub}/${entry.name}` : entry.name;
      const isDirectory = entry.isDirectory();
      if (skip(path, isDirectory)) continue;
      if (isDirectory) walk(path);
      else if (entry.isFile()) out.push(path);
    }
  };
  walk('');
  return out;
}

interface BuildConfig {
  include: string[];
  exclude?: string[];
}

/** True if this is a checkout with TypeScript sources (and the compiler) rather than an installed package. */
export function hasSources(root: string): boolean {
  return existsSync(join(root, 'cli', 'main.ts')) && existsSync(join(root, 'tsconfig.build.json'));
}

function sourceFiles(root: string): string[] {
  const config = JSON.parse(readFileSync(join(root, 'tsconfig.build.json'), 'utf8')) as BuildConfig;
  const files: string[] = [];
  for (const top of config.include) {
    if (!existsSync(join(root, top))) continue;
    for (const file of listFiles(join(root, top), (p, isDirectory) => !isDirectory && !(/\.ts$/.test(p) && !/\.test\.ts$/.test(p)))) files.push(`${top}/${file}`);
  }
  return files;
}

/** A hash of everything the compiled output depends on: the sources, the tsconfigs, package.json, the compiler's version. */
export function sourceHash(root: string): string {
  const hash = createHash('sha256');
  const typescript = join(root, 'node_modules', 'typescript', 'package.json');
  hash.update(`typescript ${existsSync(typescript) ? (JSON.parse(readFileSync(typescript, 'utf8')) as { version: string }).version : '?'}\n`);
  for (const file of ['package.json', 'tsconfig.json', 'tsconfig.build.json', ...sourceFiles(root)]) {
    hash.update(`${file}\n`);
    hash.update(readFileSync(join(root, file)));
  }
  return hash.digest('hex');
}

/**
 * The compiled dist/ to put in the image: the checkout's sources compiled into
 * `cacheDir/dist/<source hash>` (once per source tree), or an installed package's dist/.
 */
export async function compiledDist(root: string, cacheDir: string, signal?: AbortSignal): Promise<{ dir: string; compiled: boolean }> {
  if (!hasSources(root)) {
    const dist = join(root, 'dist');
    if (!existsSync(join(dist, 'cli', 'main.js'))) throw new XmigError('ERR_STATE', `${root} has neither sources nor a built dist/ (run npm run build)`);
    return { dir: dist, compiled: false };
  }
  const dir = join(cacheDir, 'dist', sourceHash(root).slice(0, 32));
  if (existsSync(join(dir, 'cli', 'main.js'))) return { dir, compiled: false };
  const temporary = `${dir}.${process.pid}.tmp`;
  rmSync(temporary, { recursive: true, force: true });
  mkdirSync(dirname(dir), { recursive: true });
  const tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc');
  if (!existsSync(tsc)) throw new XmigError('ERR_STATE', `no TypeScript compiler at ${tsc} (run npm ci)`);
  const args = [tsc, '-p', join(root, 'tsconfig.build.json'), '--outDir', temporary, '--sourceMap', 'false', '--declaration', 'false', '--incremental', 'false'];
  const result = await new Promise<{ code: number | null; output: string }>((resolve, reject) => {
    const child = spawn(process.execPath, args, { cwd: root, stdio: ['ignore', 'pipe', 'pipe'], signal });
    let output = '';
    child.stdout.on('data', (c: Buffer) => (output += c.toString()));
    child.stderr.on('data', (c: Buffer) => (output += c.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, output }));
  });
  if (result.code !== 0) {
    rmSync(temporary, { recursive: true, force: true });
    throw new XmigError('ERR_STATE', `tsc failed (${result.code}): ${result.output.trim().split('\n').slice(0, 5).join(' | ')}`);
  }
  try {
    renameSync(temporary, dir);
  } catch (error) {
    // Another build got there first with the same sources: theirs is as good as ours.
    rmSync(temporary, { recursive: true, force: true });
    if (!existsSync(join(dir, 'cli', 'main.js'))) throw error;
  }
  return { dir, compiled: true };
}

/** dist/ files the guest runs: JavaScript only (an installed package's source maps stay out). */
export function distFiles(dir: string): string[] {
  return listFiles(dir, (p, isDirectory) => !isDirectory && !/\.(js|json)$/.test(p));
}

export interface PackageDir {
  name: string;
  /** Where it is on this machine. */
  dir: string;
  /** Where it goes under the image's xmig directory ("node_modules/winston", ...). */
  imagePath: string;
}

interface Manifest {
  name?: string;
  dependencies?: Record<string, string>;
  optionalDependencies?: Record<string, string>;
  peerDependencies?: Record<string, string>;
  peerDependenciesMeta?: Record<string, { optional?: boolean }>;
}

function readManifest(dir: string): Manifest {
  return JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as Manifest;
}

/** Node's lookup: `name` in the node_modules of `from` or of the nearest directory above it. */
function resolvePackage(name: string, from: string): string | undefined {
  for (let dir = from; ; dir = dirname(dir)) {
    const candidate = join(dir, 'node_modules', name);
    if (existsSync(join(candidate, 'package.json'))) return candidate;
    if (dirname(dir) === dir) return undefined;
  }
}

/** Where a package above the project sits relative to the node_modules (of an ancestor of `root`) that holds it. */
function hoistedPath(root: string, located: string): string {
  for (let dir = dirname(root); ; dir = dirname(dir)) {
    const modules = join(dir, 'node_modules');
    if (located.startsWith(modules + sep)) return relative(modules, located);
    if (dirname(dir) === dir) return relative(dirname(located), located);
  }
}

/**
 * The packages xmig needs at run time: its `dependencies`, theirs, and so on (optional and
 * peer ones when installed), each once, found the way Node.js finds them. A package inside
 * the project keeps its place (node_modules/a/node_modules/b); one hoisted above it (an
 * installed xmig) goes to the image's top node_modules, which Node.js searches the same way.
 */
export function productionPackages(root: string): PackageDir[] {
  const found = new Map<string, PackageDir>();
  const queue: Array<{ from: string; manifest: Manifest; chain: string }> = [{ from: root, manifest: readManifest(root), chain: 'xmig' }];
  while (queue.length > 0) {
    const { from, manifest, chain } = queue.shift()!;
    const required = Object.keys(manifest.dependencies ?? {});
    const optional = [...Object.keys(manifest.optionalDependencies ?? {}), ...Object.keys(manifest.peerDependencies ?? {})];
    for (const name of [...required, ...optional]) {
      const located = resolvePackage(name, from);
      if (located === undefined) {
        if (required.includes(name) && !(manifest.peerDependenciesMeta?.[name]?.optional ?? false)) {
          throw new XmigError('ERR_STATE', `${chain} needs ${name}, which is not installed (run npm ci)`);
        }
        continue;
      }
      const dir = realpathSync(located);
      if (found.has(dir)) continue;
      const inside = relative(root, located);
      const imagePath = (inside.startsWith('..') ? join('node_modules', hoistedPath(root, located)) : inside).split(sep).join('/');
      found.set(dir, { name, dir, imagePath });
      queue.push({ from: located, manifest: readManifest(located), chain: `${chain} > ${name}` });
    }
  }
  return [...found.values()].sort((a, b) => (a.imagePath < b.imagePath ? -1 : 1));
}

/** Top-level folders of a package that nothing loads at run time. */
const SKIPPED_DIRECTORIES = new Set(['test', 'tests', '__tests__', 'docs', 'doc', 'example', 'examples', 'benchmark', 'benchmarks', '.github', 'coverage']);

/** Folders anywhere in a package that only a native addon's build left (its .node file stays). */
const BUILD_DIRECTORIES = new Set(['node_modules', 'obj.target', '.deps']);

/**
 * True for what a package's run time never reads: types, maps, TypeScript, docs, tests, a
 * native addon's sources and build leftovers, its own node_modules (listed on their own).
 */
export function skipPackageFile(path: string, isDirectory: boolean): boolean {
  const top = path.split('/')[0]!;
  const name = path.slice(path.lastIndexOf('/') + 1);
  if (isDirectory) return BUILD_DIRECTORIES.has(name) || (path === top && SKIPPED_DIRECTORIES.has(top));
  return (
    /\.(map|ts|mts|cts|md|markdown|tsbuildinfo|o|mk|cc|cpp|c|h|gyp|gypi)$/i.test(path) ||
    /^(CHANGELOG|HISTORY)(\.\w+)?$/i.test(name) ||
    name === 'Makefile' ||
    /\.d$/.test(name)
  );
}

/** The files of one package to put in the image (relative to its directory). */
export function packageFiles(dir: string): string[] {
  return listFiles(dir, skipPackageFile);
}

/** Bytes of a list of files (for progress lines). */
export function totalBytes(paths: string[]): number {
  return paths.reduce((sum, p) => sum + statSync(p).size, 0);
}
