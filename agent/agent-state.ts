/**
 * What the agent must not forget across a restart: its sequence numbers (a notice
 * or record with a lower one would be refused as a replay) and where the VM last
 * was (a restart after a migration is still a move). Written atomically: a
 * temporary file, fsync, rename.
 */
import { readFileSync } from 'node:fs';
import { mkdir, open, rename } from 'node:fs/promises';
import { dirname } from 'node:path';
import { z } from '../shared/config.js';
import { XmigError, errorMessage } from '../shared/errors.js';

const stateSchema = z.object({
  version: z.literal(1),
  noticeSeq: z.number().int().min(0),
  nameSeq: z.number().int().min(0),
  lastAd: z.string().optional(),
  lastGateway: z.string().optional(),
  lastLinkId: z.string().optional(),
  moves: z.number().int().min(0),
});

export type AgentState = z.output<typeof stateSchema>;

export class AgentStateStore {
  private state: AgentState = { version: 1, noticeSeq: 0, nameSeq: 0, moves: 0 };
  private writing: Promise<void> = Promise.resolve();
  private dirty = false;

  constructor(readonly file: string) {}

  load(): AgentState {
    let text: string;
    try {
      text = readFileSync(this.file, 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return this.state;
      throw new XmigError('ERR_STATE', `cannot read agent state ${this.file}: ${errorMessage(error)}`);
    }
    const parsed = stateSchema.safeParse(safeJson(text));
    if (!parsed.success) throw new XmigError('ERR_STATE', `agent state ${this.file} is corrupt: ${parsed.error.issues[0]?.message}`);
    this.state = parsed.data;
    return this.state;
  }

  get current(): AgentState {
    return this.state;
  }

  /** The next sequence number of a kind: above the last one and above the clock, so it survives a lost file too. */
  next(kind: 'noticeSeq' | 'nameSeq'): number {
    const value = Math.max(this.state[kind] + 1, Date.now());
    this.state = { ...this.state, [kind]: value };
    this.save();
    return value;
  }

  update(change: Partial<AgentState>): void {
    this.state = { ...this.state, ...change };
    this.save();
  }

  /**
   * Writes in the background, coalescing bursts: a move must not wait for fsync.
   * (Sequence numbers also stay above the clock, so a write lost in a crash cannot
   * make one go backwards.)
   */
  private save(): void {
    this.dirty = true;
    this.writing = this.writing.then(() => this.write()).catch((error: unknown) => this.onError?.(error));
  }

  /** Told about a failed write (the agent logs it; the next change tries again). */
  onError: ((error: unknown) => void) | undefined;

  private async write(): Promise<void> {
    if (!this.dirty) return;
    this.dirty = false;
    await mkdir(dirname(this.file), { recursive: true });
    const temporary = `${this.file}.${process.pid}.tmp`;
    const handle = await open(temporary, 'w', 0o600);
    try {
      await handle.writeFile(JSON.stringify(this.state));
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(temporary, this.file);
  }

  /** Resolves when everything updated so far is on disk. */
  flush(): Promise<void> {
    return this.writing;
  }
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return undefined;
  }
}
