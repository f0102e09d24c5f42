/**
 * The name server's records: the rules (the first record of a name binds it to its
 * owner's key; later ones need that key and a higher sequence number), the bounds (names
 * per owner key, names in all) and the indexes, over a NameStorage (name-log.ts).
 *
 * A record counts only once it is durable: it is applied to the table after its append
 * succeeded, so a failed write leaves nothing behind and a retry is judged afresh.
 * Retransmissions are idempotent: the record being written, or the one in place, sent
 * again gets the same answer (not "sequence number is not newer"). Changes of one name
 * are judged one at a time, in arrival order.
 */
import { Dag } from '../../shared/dag.js';
import { XmigError } from '../../shared/errors.js';
import { openNameRecord, type SignedNameRecord } from './name-record.js';
import { MemoryNameStorage, type NameStorage } from './name-log.js';

export type RefuseReason = 'wrong-owner' | 'old-sequence' | 'names-cap' | 'owner-cap' | 'write-failed';

export type AcceptResult =
  | { accepted: true; record: SignedNameRecord; previous: SignedNameRecord | undefined; repeat: boolean }
  | { accepted: false; reason: RefuseReason; detail: string };

export interface NameStoreOptions {
  storage?: NameStorage;
  /** Most names in all (default 100,000). */
  maxNames?: number;
  /** Most names one owner key may hold (default 64). */
  maxNamesPerOwner?: number;
}

interface Pending {
  sealed: Buffer;
  result: Promise<AcceptResult>;
}

export class NameStore {
  private readonly byName = new Map<string, SignedNameRecord>();
  /** Canonical DAG text → name, and sink XID → names: reverse queries without a scan. */
  private readonly byDag = new Map<string, string>();
  private readonly bySink = new Map<string, Set<string>>();
  private readonly perOwner = new Map<string, number>();
  private readonly pending = new Map<string, Pending>();
  /** New names being written, in all and per owner (they count against the bounds). */
  private pendingNew = 0;
  private readonly pendingNewPerOwner = new Map<string, number>();
  readonly storage: NameStorage;
  readonly maxNames: number;
  readonly maxNamesPerOwner: number;
  readonly stats = { loaded: 0, skippedOnLoad: 0, compactions: 0 };

  constructor(options: NameStoreOptions = {}) {
    this.storage = options.storage ?? new MemoryNameStorage();
    this.maxNames = options.maxNames ?? 100_000;
    this.maxNamesPerOwner = options.maxNamesPerOwner ?? 64;
  }

  /** Replays storage; every record is verified again, so a tampered file does not become truth. */
  async load(): Promise<number> {
    for (const sealed of await this.storage.load()) {
      let record: SignedNameRecord;
      try {
        record = openNameRecord(sealed);
      } catch (error) {
        throw new XmigError('ERR_NAME', `name database holds a record that does not verify: ${(error as Error).message}`);
      }
      const previous = this.byName.get(record.name);
      if (previous && (!previous.publicKey.equals(record.publicKey) || record.seq <= previous.seq)) {
        this.stats.skippedOnLoad++;
        continue;
      }
      this.apply(record, previous);
    }
    this.stats.loaded = this.byName.size;
    return this.byName.size;
  }

  get(name: string): SignedNameRecord | undefined {
    return this.byName.get(name);
  }

  get size(): number {
    return this.byName.size;
  }

  /** Names the owner of `publicKey` holds. */
  namesOf(publicKey: Buffer): number {
    return this.perOwner.get(publicKey.toString('hex')) ?? 0;
  }

  /** Reverse lookup: the name registered for exactly this DAG, else for a DAG with the same sink. */
  reverse(dagText: string): SignedNameRecord | undefined {
    let dag: Dag;
    try {
      dag = Dag.parse(dagText);
    } catch {
      return undefined;
    }
    const exact = this.byDag.get(dag.toDagString());
    if (exact !== undefined) return this.byName.get(exact);
    const names = this.bySink.get(dag.sink.key);
    if (!names) return undefined;
    for (const name of names) return this.byName.get(name);
    return undefined;
  }

  /** Judges a verified record; when it resolves accepted, the record is durable. */
  accept(record: SignedNameRecord): Promise<AcceptResult> {
    const pending = this.pending.get(record.name);
    if (pending) {
      // The same record again while it is being written: the same answer, when it comes.
      if (pending.sealed.equals(record.sealed)) return pending.result.then((r) => (r.accepted ? { ...r, repeat: true } : r));
      // Another change of this name: judged after the one in flight.
      return pending.result.then(() => this.accept(record));
    }
    const previous = this.byName.get(record.name);
    if (previous?.sealed.equals(record.sealed)) return Promise.resolve({ accepted: true, record: previous, previous: undefined, repeat: true });
    const refusal = this.judge(record, previous);
    if (refusal) return Promise.resolve(refusal);
    const owner = record.publicKey.toString('hex');
    const isNew = previous === undefined;
    if (isNew) {
      this.pendingNew++;
      this.pendingNewPerOwner.set(owner, (this.pendingNewPerOwner.get(owner) ?? 0) + 1);
    }
    const result = this.storage.append(record.sealed).then(
      (): AcceptResult => {
        this.apply(record, previous);
        return { accepted: true, record, previous, repeat: false };
      },
      (error: unknown): AcceptResult => ({ accepted: false, reason: 'write-failed', detail: (error as Error).message }),
    );
    const settled = result.then(async (outcome) => {
      if (isNew) {
        this.pendingNew--;
        const left = (this.pendingNewPerOwner.get(owner) ?? 1) - 1;
        if (left > 0) this.pendingNewPerOwner.set(owner, left);
        else this.pendingNewPerOwner.delete(owner);
      }
      this.pending.delete(record.name);
      if (outcome.accepted) await this.maybeCompact();
      return outcome;
    });
    this.pending.set(record.name, { sealed: record.sealed, result: settled });
    return settled;
  }

  private judge(record: SignedNameRecord, previous: SignedNameRecord | undefined): AcceptResult | undefined {
    if (previous) {
      if (!previous.publicKey.equals(record.publicKey)) return { accepted: false, reason: 'wrong-owner', detail: 'name is owned by another key' };
      if (record.seq <= previous.seq) return { accepted: false, reason: 'old-sequence', detail: 'sequence number is not newer' };
      return undefined;
    }
    if (this.byName.size + this.pendingNew >= this.maxNames) {
      return { accepted: false, reason: 'names-cap', detail: `the name server holds its limit of ${this.maxNames} names` };
    }
    const owner = record.publicKey.toString('hex');
    if ((this.perOwner.get(owner) ?? 0) + (this.pendingNewPerOwner.get(owner) ?? 0) >= this.maxNamesPerOwner) {
      return { accepted: false, reason: 'owner-cap', detail: `the key holds its limit of ${this.maxNamesPerOwner} names` };
    }
    return undefined;
  }

  private apply(record: SignedNameRecord, previous: SignedNameRecord | undefined): void {
    if (previous) this.unindex(previous);
    else {
      const owner = record.publicKey.toString('hex');
      this.perOwner.set(owner, (this.perOwner.get(owner) ?? 0) + 1);
    }
    this.byName.set(record.name, record);
    this.byDag.set(record.dag.toDagString(), record.name);
    const sink = record.dag.sink.key;
    let names = this.bySink.get(sink);
    if (!names) this.bySink.set(sink, (names = new Set()));
    names.add(record.name);
  }

  private unindex(record: SignedNameRecord): void {
    const text = record.dag.toDagString();
    if (this.byDag.get(text) === record.name) this.byDag.delete(text);
    const names = this.bySink.get(record.dag.sink.key);
    names?.delete(record.name);
    if (names?.size === 0) this.bySink.delete(record.dag.sink.key);
  }

  /** Rewrites storage once most of what it holds is superseded records. */
  private async maybeCompact(): Promise<void> {
    if (this.storage.stored <= Math.max(1024, 2 * this.byName.size)) return;
    try {
      await this.storage.compact(() => [...this.byName.values()].map((r) => r.sealed));
      this.stats.compactions++;
    } catch {
      // The log stays as it is (longer, still correct); the next accept tries again.
    }
  }

  close(): Promise<void> {
    return this.storage.close();
  }
}
