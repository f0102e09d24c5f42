/**
 * The name server's records, kept in memory and persisted to a JSON file: each
 * accepted change is on disk (written to a temporary file, fsynced, renamed over
 * the old one) before it is acknowledged, so a restart loses nothing.
 */
import { open, readFile, rename, mkdir } from 'node:fs/promises';
import { dirname } from 'node:path';
import { XmigError, errorMessage } from '../../shared/errors.js';
import { openNameRecord, type SignedNameRecord } from './name-record.js';

export type AcceptResult =
  | { accepted: true; record: SignedNameRecord; previous: SignedNameRecord | undefined }
  | { accepted: false; reason: 'wrong-owner' | 'old-sequence' };

interface StoredFile {
  version: 1;
  records: string[];
}

export class NameStore {
  private readonly byName = new Map<string, SignedNameRecord>();
  private writing: Promise<void> = Promise.resolve();

  constructor(readonly file: string | undefined) {}

  /** Loads the file; a missing file is an empty store, a corrupt one an error (never silently lost). */
  async load(): Promise<number> {
    if (!this.file) return 0;
    let text: string;
    try {
      text = await readFile(this.file, 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return 0;
      throw new XmigError('ERR_NAME', `cannot read name database ${this.file}: ${errorMessage(error)}`);
    }
    let parsed: StoredFile;
    try {
      parsed = JSON.parse(text) as StoredFile;
      if (parsed.version !== 1 || !Array.isArray(parsed.records)) throw new Error('unknown layout');
    } catch (error) {
      throw new XmigError('ERR_NAME', `name database ${this.file} is corrupt: ${errorMessage(error)}`);
    }
    for (const sealed of parsed.records) {
      // Records are re-verified on load: a tampered file does not become truth.
      const record = openNameRecord(Buffer.from(sealed, 'base64'));
      this.byName.set(record.name, record);
    }
    return this.byName.size;
  }

  get(name: string): SignedNameRecord | undefined {
    return this.byName.get(name);
  }

  /** Reverse lookup: the name registered for exactly this DAG, else for a DAG with the same sink. */
  reverse(dagText: string): SignedNameRecord | undefined {
    let sameSink: SignedNameRecord | undefined;
    for (const record of this.byName.values()) {
      if (record.dag.toDagString() === dagText || record.dag.toString() === dagText) return record;
    }
    for (const record of this.byName.values()) {
      if (dagText.includes(record.dag.sink.toString())) sameSink ??= record;
    }
    return sameSink;
  }

  get size(): number {
    return this.byName.size;
  }

  /** Applies the ownership and sequence rules; on acceptance the change is durable when this resolves. */
  async accept(record: SignedNameRecord): Promise<AcceptResult> {
    const previous = this.byName.get(record.name);
    if (previous && !previous.publicKey.equals(record.publicKey)) return { accepted: false, reason: 'wrong-owner' };
    if (previous && record.seq <= previous.seq) return { accepted: false, reason: 'old-sequence' };
    this.byName.set(record.name, record);
    await this.persist();
    return { accepted: true, record, previous };
  }

  private persist(): Promise<void> {
    const file = this.file;
    if (!file) return Promise.resolve();
    // Writes are serialised; each one writes the whole (small) table as it is now.
    this.writing = this.writing.then(async () => {
      const content: StoredFile = { version: 1, records: [...this.byName.values()].map((r) => r.sealed.toString('base64')) };
      await mkdir(dirname(file), { recursive: true });
      const temporary = `${file}.${process.pid}.tmp`;
      const handle = await open(temporary, 'w', 0o600);
      try {
        await handle.writeFile(JSON.stringify(content));
        await handle.sync();
      } finally {
        await handle.close();
      }
      await rename(temporary, file);
    });
    return this.writing;
  }
}
