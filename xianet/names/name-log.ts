/**
 * Where the name server's records live on disk: an append-only log, one sealed record
 * per line (base64), compacted when it holds more dead lines than live ones.
 *
 * Why a log and not a database: a record is a small signed blob and the only update is
 * "this name's record is now this one" (last writer wins), which is exactly what a log
 * replays; an accept costs one append and one fdatasync instead of rewriting the table,
 * and appends that arrive together share one write and one sync (group commit). It needs
 * no native module, so the name server runs wherever Node does (a VM, a router, CI).
 *
 * Crash safety: a torn last line (a crash inside an append) has no newline; it is dropped
 * on load and cut off before the next append. A failed append cuts the file back to its
 * last good length, so one failure never corrupts or blocks the appends after it.
 * Compaction writes the live records to a temporary file, fsyncs it and renames it over
 * the log. A `names.json` of the earlier format (one JSON document) is read and rewritten
 * as a log on first load.
 */
import { type FileHandle, mkdir, open, readFile, rename } from 'node:fs/promises';
import { dirname } from 'node:path';
import { XmigError, errorMessage } from '../../shared/errors.js';

/** What the name store needs from its storage (a log file, or memory in tests and the testbed). */
export interface NameStorage {
  /** Every stored record, oldest first (the caller replays them). */
  load(): Promise<Buffer[]>;
  /** Durably appends one record; rejects (and stores nothing) if it cannot. */
  append(sealed: Buffer): Promise<void>;
  /**
   * Rewrites storage to hold exactly `live()` (called when most stored records are dead).
   * `live` is read after every append before it has been written and applied.
   */
  compact(live: () => Buffer[]): Promise<void>;
  /** Records stored, live or dead (to decide when to compact). */
  readonly stored: number;
  close(): Promise<void>;
}

/** Keeps records in memory only (no file configured). */
export class MemoryNameStorage implements NameStorage {
  private records: Buffer[] = [];

  get stored(): number {
    return this.records.length;
  }

  load(): Promise<Buffer[]> {
    return Promise.resolve([...this.records]);
  }

  append(sealed: Buffer): Promise<void> {
    this.records.push(sealed);
    return Promise.resolve();
  }

  compact(live: () => Buffer[]): Promise<void> {
    this.records = live();
    return Promise.resolve();
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}

interface Batch {
  lines: string[];
  waiters: Array<{ resolve: () => void; reject: (error: unknown) => void }>;
}

export class NameLog implements NameStorage {
  private handle: FileHandle | undefined;
  /** Bytes of the file known to hold whole lines. */
  private goodLength = 0;
  /** The file may hold bytes past goodLength (a failed or torn append): cut before the next. */
  private dirtyTail = false;
  private lines = 0;
  private queued: Batch | undefined;
  private scheduled = false;
  private lock: Promise<void> = Promise.resolve();
  private closed = false;
  readonly stats = { appends: 0, syncs: 0, compactions: 0, tornLines: 0, failedWrites: 0 };

  constructor(readonly file: string) {}

  get stored(): number {
    return this.lines;
  }

  async load(): Promise<Buffer[]> {
    let content: Buffer;
    try {
      content = await readFile(this.file);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') {
        throw new XmigError('ERR_NAME', `cannot read name database ${this.file}: ${errorMessage(error)}`);
      }
      content = Buffer.alloc(0);
    }
    if (content.length > 0 && content[0] === 0x7b /* { */) {
      const records = parseLegacy(content, this.file);
      await this.rewrite(records);
      return records;
    }
    const records: Buffer[] = [];
    let start = 0;
    let lineNumber = 0;
    for (let end = content.indexOf(0x0a, start); end >= 0; end = content.indexOf(0x0a, start)) {
      lineNumber++;
      const text = content.toString('latin1', start, end);
      if (!/^[A-Za-z0-9+/]+={0,2}$/.test(text)) throw new XmigError('ERR_NAME', `name database ${this.file} is corrupt at line ${lineNumber}`);
      records.push(Buffer.from(text, 'base64'));
      start = end + 1;
    }
    this.goodLength = start;
    if (start < content.length) {
      this.stats.tornLines++;
      this.dirtyTail = true;
    }
    this.lines = records.length;
    await this.openHandle();
    return records;
  }

  private async openHandle(): Promise<FileHandle> {
    if (this.handle) return this.handle;
    await mkdir(dirname(this.file), { recursive: true });
    this.handle = await open(this.file, 'a+', 0o600);
    return this.handle;
  }

  append(sealed: Buffer): Promise<void> {
    if (this.closed) return Promise.reject(new XmigError('ERR_NAME', 'name database is closed'));
    return new Promise((resolve, reject) => {
      this.queued ??= { lines: [], waiters: [] };
      this.queued.lines.push(`${sealed.toString('base64')}\n`);
      this.queued.waiters.push({ resolve, reject });
      if (!this.scheduled) {
        this.scheduled = true;
        void this.exclusive(() => this.flushQueued());
      }
    });
  }

  /** Runs `job` after every write or compaction before it (they never interleave). */
  private exclusive<T>(job: () => Promise<T>): Promise<T> {
    const run = this.lock.then(job, job);
    this.lock = run.then(
      () => undefined,
      () => undefined,
    );
    return run;
  }

  /** Writes everything queued so far as one batch: one write, one fdatasync. */
  private async flushQueued(): Promise<void> {
    this.scheduled = false;
    const batch = this.queued;
    this.queued = undefined;
    if (!batch) return;
    try {
      await this.writeBatch(batch.lines.join(''));
      this.lines += batch.lines.length;
      this.stats.appends += batch.lines.length;
      for (const w of batch.waiters) w.resolve();
    } catch (error) {
      this.stats.failedWrites++;
      const failure = new XmigError('ERR_NAME', `cannot write name database ${this.file}: ${errorMessage(error)}`);
      for (const w of batch.waiters) w.reject(failure);
    }
  }

  private async writeBatch(text: string): Promise<void> {
    const handle = await this.openHandle().catch((error: unknown) => {
      this.handle = undefined;
      throw error;
    });
    try {
      if (this.dirtyTail) {
        await handle.truncate(this.goodLength);
        this.dirtyTail = false;
      }
      const bytes = Buffer.from(text, 'latin1');
      this.dirtyTail = true;
      await handle.write(bytes, 0, bytes.length, null);
      await handle.datasync();
      this.stats.syncs++;
      this.goodLength += bytes.length;
      this.dirtyTail = false;
    } catch (error) {
      // The file may now end in part of a line: cut it at the next append (or reopen).
      await handle.close().catch(() => undefined);
      this.handle = undefined;
      throw error;
    }
  }

  compact(live: () => Buffer[]): Promise<void> {
    // Inside the queue: every append before this one has been written, and (being a
    // direct reaction to its write) applied by the store, before live() is read.
    return this.exclusive(() => this.rewrite(live()));
  }

  private async rewrite(live: Buffer[]): Promise<void> {
    await mkdir(dirname(this.file), { recursive: true });
    const temporary = `${this.file}.${process.pid}.compact`;
    const text = live.map((r) => `${r.toString('base64')}\n`).join('');
    const out = await open(temporary, 'w', 0o600);
    try {
      await out.writeFile(text, 'latin1');
      await out.sync();
    } finally {
      await out.close();
    }
    await this.handle?.close().catch(() => undefined);
    this.handle = undefined;
    await rename(temporary, this.file);
    this.goodLength = Buffer.byteLength(text, 'latin1');
    this.dirtyTail = false;
    this.lines = live.length;
    this.stats.compactions++;
    await this.openHandle();
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.exclusive(async () => {
      await this.handle?.close().catch(() => undefined);
      this.handle = undefined;
    });
  }
}

function parseLegacy(content: Buffer, file: string): Buffer[] {
  try {
    const parsed = JSON.parse(content.toString('utf8')) as { version?: unknown; records?: unknown };
    if (parsed.version !== 1 || !Array.isArray(parsed.records) || !parsed.records.every((r) => typeof r === 'string')) {
      throw new Error('unknown layout');
    }
    return (parsed.records as string[]).map((r) => Buffer.from(r, 'base64'));
  } catch (error) {
    throw new XmigError('ERR_NAME', `name database ${file} is corrupt: ${errorMessage(error)}`);
  }
}
