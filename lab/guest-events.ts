/**
 * The guest's event log as the host sees it: the file QEMU writes the guest's second
 * serial port to, one JSON object per line — the guest init's `guest.*` events and the JSON
 * logs of the guest's node, agent and Goldbach service (`move.perceived`, `move.notified`,
 * `move.registered`, ... with their `ms` figures). This tails the file, parses each line
 * (a line that is not JSON is kept as `{event: 'guest.output', line}`), and lets callers
 * wait for an event with a deadline and an AbortSignal.
 */
import { closeSync, existsSync, openSync, readSync, statSync } from 'node:fs';
import { XmigError } from '../shared/errors.js';
import type { Startable } from '../shared/startable.js';

export interface GuestEvent {
  event: string;
  component?: string;
  /** The guest's wall clock (its xmig processes' log lines). */
  ts?: string;
  /** The guest's uptime (its init's events). */
  uptimeMs?: number;
  [field: string]: unknown;
}

export interface WaitOptions {
  signal?: AbortSignal;
  /** How long to wait (default 60 s). */
  deadlineMs?: number;
  /** Only the log's events from this position on (`count` before an action; default 0: also those seen already). */
  from?: number;
  /** What the timeout's error says was awaited. */
  what?: string;
  /** Fails the wait at once when this says why (e.g. QEMU exited). */
  failure?: () => string | undefined;
  /** Appended to a timeout's message (e.g. what the guest last printed). */
  context?: () => string;
}

/** Events kept in memory; a long lab run logs many, the oldest go first (and are counted). */
const MAX_EVENTS = 100_000;
const MAX_LINE = 64 * 1024;

export function parseGuestLine(line: string): GuestEvent {
  const text = line.replace(/\r$/, '');
  if (text.startsWith('{')) {
    try {
      const value = JSON.parse(text) as unknown;
      if (value && typeof value === 'object' && !Array.isArray(value) && typeof (value as GuestEvent).event === 'string') return value as GuestEvent;
    } catch {
      // not JSON after all: kept as output below
    }
  }
  return { event: 'guest.output', line: text.slice(0, 1024) };
}

export class GuestEventLog implements Startable {
  readonly events: GuestEvent[] = [];
  /** Events dropped from the front of `events` to keep it bounded; event i of the log is events[i - dropped]. */
  dropped = 0;
  private offset = 0;
  private partial = '';
  private timer: NodeJS.Timeout | undefined;
  private readonly listeners = new Set<() => void>();

  constructor(
    readonly file: string,
    private readonly pollMs = 100,
  ) {}

  async start(): Promise<void> {
    if (this.timer) return;
    this.timer = setInterval(() => this.poll(), this.pollMs);
    this.poll();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    this.poll();
    this.notify();
  }

  /** Reads what was appended since the last look. */
  poll(): void {
    if (!existsSync(this.file)) return this.notify();
    const size = statSync(this.file).size;
    if (size < this.offset) {
      // Truncated (a new QEMU on the same file): start over.
      this.offset = 0;
      this.partial = '';
    }
    if (size === this.offset) return this.notify();
    const fd = openSync(this.file, 'r');
    try {
      const buffer = Buffer.alloc(Math.min(size - this.offset, 4 << 20));
      const read = readSync(fd, buffer, 0, buffer.length, this.offset);
      this.offset += read;
      const lines = (this.partial + buffer.toString('utf8', 0, read)).split('\n');
      this.partial = lines.pop() ?? '';
      if (this.partial.length > MAX_LINE) this.partial = '';
      for (const line of lines) if (line.trim() !== '') this.push(parseGuestLine(line));
    } finally {
      closeSync(fd);
    }
    this.notify();
  }

  /** Lets every waiter look again (at new events, or at whether it failed). */
  notify(): void {
    for (const listener of [...this.listeners]) listener();
  }

  /** Events seen so far, dropped ones included: a position to wait from. */
  get count(): number {
    return this.dropped + this.events.length;
  }

  private push(event: GuestEvent): void {
    this.events.push(event);
    if (this.events.length > MAX_EVENTS) {
      this.events.splice(0, this.events.length - MAX_EVENTS);
      this.dropped += 1;
    }
  }

  /** The first event (at `from` or later) that `predicate` accepts; ERR_TIMEOUT after the deadline. */
  waitFor(predicate: (event: GuestEvent) => boolean, options: WaitOptions = {}): Promise<GuestEvent> {
    const deadlineMs = options.deadlineMs ?? 60_000;
    // An absolute position: events dropped from the front do not shift it.
    let next = options.from ?? 0;
    return new Promise<GuestEvent>((resolve, reject) => {
      const finish = (error: Error | undefined, event?: GuestEvent): void => {
        clearTimeout(timer);
        this.listeners.delete(check);
        options.signal?.removeEventListener('abort', onAbort);
        if (error) reject(error);
        else resolve(event!);
      };
      const check = (): void => {
        next = Math.max(next, this.dropped);
        for (; next - this.dropped < this.events.length; next++) {
          const event = this.events[next - this.dropped]!;
          if (predicate(event)) return finish(undefined, event);
        }
        const failed = options.failure?.();
        if (failed !== undefined) return finish(new XmigError('ERR_STATE', `${failed} before ${options.what ?? 'the awaited guest event'}`));
        if (!this.timer) finish(new XmigError('ERR_STATE', `the event log of ${this.file} was closed before ${options.what ?? 'the awaited guest event'}`));
      };
      const onAbort = (): void => finish(new XmigError('ERR_TIMEOUT', `aborted waiting for ${options.what ?? 'a guest event'}`, { cause: options.signal?.reason }));
      const timer = setTimeout(() => {
        const context = options.context?.();
        finish(new XmigError('ERR_TIMEOUT', `no ${options.what ?? 'awaited guest event'} within ${Math.round(deadlineMs / 1000)} s${context ? `; ${context}` : ''}`));
      }, deadlineMs);
      if (options.signal?.aborted) return onAbort();
      options.signal?.addEventListener('abort', onAbort, { once: true });
      this.listeners.add(check);
      check();
    });
  }
}

/**
 * Whether a line dbench printed (a `guest.dbench` event's `line`) says something went wrong.
 * dbench 4.0 prints "failed to create barrier semaphore" when semget gives it id 0, as on a
 * fresh kernel (the guest's first semaphore), and runs on: that line is no error.
 */
export function isDbenchError(line: string): boolean {
  return /error|fail|unable|no such|cannot/i.test(line) && !/failed to create barrier semaphore/.test(line);
}

/** The last line a file ends with that is not blank (what a guest last printed on its console). */
export function lastLine(file: string, maxBytes = 8192): string {
  if (!existsSync(file)) return '';
  const size = statSync(file).size;
  const fd = openSync(file, 'r');
  try {
    const length = Math.min(size, maxBytes);
    const buffer = Buffer.alloc(length);
    readSync(fd, buffer, 0, length, size - length);
    const lines = buffer.toString('utf8').split(/\r?\n/).map((l) => l.trim()).filter((l) => l !== '');
    return lines.at(-1) ?? '';
  } finally {
    closeSync(fd);
  }
}
