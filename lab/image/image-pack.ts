/**
 * Turns the image's entries into the initramfs: one newc cpio stream, made the same way for
 * hashing and for writing, so the image hash is a hash of exactly what the guest gets
 * (every file's bytes, path and mode) together with the kernel and the compression.
 *
 * Compression: zstd when the zstd tool is installed (the guest kernel unpacks it several
 * times faster than gzip under TCG, and the image is smaller), otherwise gzip (zlib, always
 * there). The kernel frees the compressed copy after unpacking it, but its pages keep their
 * bytes and are migrated with the rest of guest RAM: a smaller archive is less to move.
 */
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream, statSync } from 'node:fs';
import { Readable, Transform, type Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';
import { XmigError } from '../../shared/errors.js';
import { cpioDataPadding, cpioTrailer, encodeCpioHeader, S_IFCHR, S_IFDIR, S_IFREG } from './cpio-newc.js';
import type { ImageEntry } from './image-tree.js';

export type Compression = 'zstd' | 'gzip' | 'none';

/** Bumped when the archive's layout changes in a way the entries do not show. */
export const IMAGE_FORMAT = 'xmig-lab-image 1';

export function defaultCompression(): Compression {
  return spawnSync('zstd', ['--version'], { stdio: 'ignore' }).status === 0 ? 'zstd' : 'gzip';
}

export function initramfsName(compression: Compression): string {
  return compression === 'zstd' ? 'initramfs.cpio.zst' : compression === 'gzip' ? 'initramfs.cpio.gz' : 'initramfs.cpio';
}

function entrySize(entry: ImageEntry): number {
  if (entry.kind === 'file') return statSync(entry.source).size;
  if (entry.kind === 'data') return entry.data.length;
  return 0;
}

/** Bytes of file data in the image (what the guest's root file system holds). */
export function imageBytes(entries: readonly ImageEntry[]): number {
  return entries.reduce((sum, e) => sum + entrySize(e), 0);
}

/** The archive, as a stream of buffers: each entry's header, data and padding, then the trailer. */
async function* cpioStream(entries: readonly ImageEntry[], signal?: AbortSignal): AsyncGenerator<Buffer> {
  let ino = 1;
  for (const entry of entries) {
    signal?.throwIfAborted();
    const name = entry.path.replace(/^\//, '');
    const size = entrySize(entry);
    const type = entry.kind === 'dir' ? S_IFDIR : entry.kind === 'char' ? S_IFCHR : S_IFREG;
    yield encodeCpioHeader(name, {
      ino: ino++,
      mode: type | entry.mode,
      nlink: entry.kind === 'dir' ? 2 : 1,
      filesize: size,
      ...(entry.kind === 'char' ? { rdevmajor: entry.major, rdevminor: entry.minor } : {}),
    });
    if (entry.kind === 'data') yield entry.data;
    if (entry.kind === 'file') {
      let read = 0;
      for await (const chunk of createReadStream(entry.source, { highWaterMark: 1 << 20 })) {
        read += (chunk as Buffer).length;
        yield chunk as Buffer;
      }
      if (read !== size) throw new XmigError('ERR_STATE', `${entry.source} changed while the image was being made (${size} bytes, then ${read})`);
    }
    if (size % 4 !== 0) yield cpioDataPadding(size);
  }
  yield cpioTrailer();
}

/** Counts bytes going through, for progress lines. */
function counter(onBytes: ((bytes: number) => void) | undefined): Transform {
  let total = 0;
  return new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      total += chunk.length;
      onBytes?.(total);
      callback(null, chunk);
    },
  });
}

/** The image's hash: the kernel, the compression and the uncompressed archive. */
export async function hashImage(kernel: string, entries: readonly ImageEntry[], compression: Compression, options: { onBytes?: (bytes: number) => void; signal?: AbortSignal } = {}): Promise<string> {
  const hash = createHash('sha256');
  hash.update(`${IMAGE_FORMAT}\ncompression ${compression}\nkernel\n`);
  let bytes = 0;
  for await (const chunk of createReadStream(kernel, { highWaterMark: 1 << 20 })) {
    hash.update(chunk as Buffer);
    bytes += (chunk as Buffer).length;
  }
  hash.update('\ninitramfs\n');
  for await (const chunk of cpioStream(entries, options.signal)) {
    hash.update(chunk);
    bytes += chunk.length;
    options.onBytes?.(bytes);
  }
  return hash.digest('hex');
}

/** Writes the (compressed) initramfs to `file`; resolves with the archive's size before and after compression. */
export async function writeInitramfs(
  entries: readonly ImageEntry[],
  file: string,
  compression: Compression,
  options: { onBytes?: (bytes: number) => void; signal?: AbortSignal } = {},
): Promise<{ archiveBytes: number; fileBytes: number }> {
  let archiveBytes = 0;
  const source = Readable.from(cpioStream(entries, options.signal));
  const count = counter((n) => {
    archiveBytes = n;
    options.onBytes?.(n);
  });
  const out: Writable = createWriteStream(file);
  if (compression === 'none') await pipeline(source, count, out, { signal: options.signal });
  else if (compression === 'gzip') await pipeline(source, count, createGzip({ level: 6 }), out, { signal: options.signal });
  else {
    const zstd = spawn('zstd', ['-q', '-3', '-c'], { stdio: ['pipe', 'pipe', 'pipe'], signal: options.signal });
    let stderr = '';
    zstd.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    const exited = new Promise<number | null>((resolve, reject) => {
      zstd.once('error', reject);
      zstd.once('close', resolve);
    });
    await Promise.all([pipeline(source, count, zstd.stdin, { signal: options.signal }), pipeline(zstd.stdout, out, { signal: options.signal })]);
    const code = await exited;
    if (code !== 0) throw new XmigError('ERR_STATE', `zstd failed (${code}): ${stderr.trim()}`);
  }
  return { archiveBytes, fileBytes: statSync(file).size };
}
