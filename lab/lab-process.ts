/**
 * An `xmig` process on one of the lab's hosts: started inside that host's namespace
 * through the run's NetnsRegistry (which stops it at teardown if nobody did), its JSON
 * log lines parsed as they come, every stdout line kept with the time the lab read it
 * (the clients' answers and replies), its stderr in a file of the run directory.
 */
import type { ChildProcess } from 'node:child_process';
import { createWriteStream, existsSync, type WriteStream } from 'node:fs';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { XmigError } from '../shared/errors.js';
import { XMIG_NODE_FLAGS } from '../shared/node-flags.js';
import type { Startable } from '../shared/startable.js';
import { stopChild, type NetnsRegistry } from './netns.js';

/** Lines kept per process: a long run's xping prints 100 a second. */
const MAX_LINES = 1_000_000;

/**
 * The command that runs xmig: this Node.js, xmig's V8 flags, and the entry point — the
 * checkout's bin/xmig.js (sources through tsx, or dist/ when installed), or XMIG_ENTRY
 * (as `npm run bench` runs the compiled output).
 */
export function xmigCommand(): string[] {
  const entry = process.env['XMIG_ENTRY'];
  if (entry) return [process.execPath, ...XMIG_NODE_FLAGS, entry];
  for (const relative of ['../bin/xmig.js', '../../bin/xmig.js']) {
    const path = fileURLToPath(new URL(relative, import.meta.url));
    if (existsSync(path)) return [process.execPath, ...XMIG_NODE_FLAGS, path];
  }
  throw new XmigError('ERR_STATE', 'cannot find bin/xmig.js next to the lab code');
}

export interface LogLine {
  /** When the lab read it (epoch ms). */
  at: number;
  text: string;
  /** The line as JSON, if it was an object with an `event`. */
  json?: Record<string, unknown>;
}

export interface LabProcessOptions {
  net: NetnsRegistry;
  ns: string;
  /** What this is, for errors ("node A", "xping on C"). */
  name: string;
  args: string[];
  /** The program (default: xmig, `xmigCommand()`); `args` follow it. */
  command?: string[];
  /** Where its stderr goes; its stdout (JSON logs, the clients' lines) goes beside it, as `.log`. */
  stderrFile: string;
  env?: NodeJS.ProcessEnv;
}

export interface LogWait {
  deadlineMs: number;
  signal?: AbortSignal;
  /** Only lines from this index on. */
  from?: number;
}

export class LabProcess implements Startable {
  readonly lines: LogLine[] = [];
  private child: ChildProcess | undefined;
  private stderr: WriteStream | undefined;
  private stdout: WriteStream | undefined;
  private lastStderr = '';
  private exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  private exited: Promise<void> = Promise.resolve();
  private readonly waiters = new Set<() => void>();

  constructor(readonly options: LabProcessOptions) {}

  get name(): string {
    return this.options.name;
  }

  get exitCode(): number | null | undefined {
    return this.exit?.code;
  }

  get running(): boolean {
    return this.child !== undefined && this.exit === undefined;
  }

  async start(): Promise<void> {
    if (this.child) return;
    const o = this.options;
    const stderr = createWriteStream(o.stderrFile, { flags: 'a' });
    this.stderr = stderr;
    const stdout = createWriteStream(o.stderrFile.replace(/(\.stderr)?$/, '.log'), { flags: 'a' });
    this.stdout = stdout;
    const child = o.net.spawn(o.ns, [...(o.command ?? xmigCommand()), ...o.args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...o.env } });
    this.child = child;
    this.exited = new Promise((resolve) => {
      child.once('exit', (code, signal) => {
        this.exit = { code, signal };
        this.notify();
        resolve();
      });
      child.once('error', (error) => {
        this.lastStderr = error.message;
        this.exit = { code: null, signal: null };
        this.notify();
        resolve();
      });
    });
    createInterface({ input: child.stdout! }).on('line', (text) => {
      const line: LogLine = { at: Date.now(), text };
      if (text.startsWith('{')) {
        try {
          const value = JSON.parse(text) as unknown;
          if (value && typeof value === 'object' && !Array.isArray(value)) line.json = value as Record<string, unknown>;
        } catch {
          // a plain line after all
        }
      }
      if (this.lines.length < MAX_LINES) this.lines.push(line);
      stdout.write(`${text}\n`);
      this.notify();
    });
    child.stderr!.on('data', (chunk: Buffer) => {
      stderr.write(chunk);
      const text = chunk.toString('utf8').trim();
      if (text) this.lastStderr = text.split('\n').at(-1)!.slice(0, 300);
    });
  }

  private notify(): void {
    for (const waiter of [...this.waiters]) waiter();
  }

  /** JSON log lines with this event name. */
  events(event: string): Array<Record<string, unknown> & { receivedAt: number }> {
    return this.lines.flatMap((l) => (l.json && l.json['event'] === event ? [{ ...l.json, receivedAt: l.at }] : []));
  }

  /** Why it is no longer running, in one line (undefined while it runs). */
  exitReason(): string | undefined {
    if (!this.exit) return undefined;
    const how = this.exit.signal ? `signal ${this.exit.signal}` : `code ${this.exit.code}`;
    return `${this.name} exited (${how})${this.lastStderr ? `: ${this.lastStderr}` : ''}`;
  }

  /** The first line (at `from` or later) that `predicate` accepts. */
  waitForLine(predicate: (line: LogLine) => boolean, what: string, wait: LogWait): Promise<LogLine> {
    let next = wait.from ?? 0;
    return new Promise((resolve, reject) => {
      const finish = (error: Error | undefined, line?: LogLine): void => {
        clearTimeout(timer);
        this.waiters.delete(check);
        wait.signal?.removeEventListener('abort', onAbort);
        if (error) reject(error);
        else resolve(line!);
      };
      const check = (): void => {
        for (; next < this.lines.length; next++) if (predicate(this.lines[next]!)) return finish(undefined, this.lines[next]);
        const failed = this.exitReason();
        if (failed) finish(new XmigError('ERR_STATE', `${failed}, before ${what}`));
      };
      const onAbort = (): void => finish(new XmigError('ERR_TIMEOUT', `aborted waiting for ${what}`));
      const timer = setTimeout(() => finish(new XmigError('ERR_TIMEOUT', `no ${what} within ${Math.round(wait.deadlineMs / 1000)} s${this.lastStderr ? ` (${this.name} last said: ${this.lastStderr})` : ''}`)), wait.deadlineMs);
      if (wait.signal?.aborted) return onAbort();
      wait.signal?.addEventListener('abort', onAbort, { once: true });
      this.waiters.add(check);
      check();
    });
  }

  waitForEvent(event: string, wait: LogWait, match: (fields: Record<string, unknown>) => boolean = () => true): Promise<Record<string, unknown>> {
    return this.waitForLine((l) => l.json?.['event'] === event && match(l.json), `${event} from ${this.name}`, wait).then((l) => ({ ...l.json!, receivedAt: l.at }));
  }

  /** Resolves with the exit code once it ends by itself (ERR_TIMEOUT after the deadline). */
  async waitForExit(deadlineMs: number, signal?: AbortSignal): Promise<number | null> {
    let timer: NodeJS.Timeout | undefined;
    let onAbort: (() => void) | undefined;
    try {
      await Promise.race([
        this.exited,
        new Promise<never>((_, reject) => {
          onAbort = () => reject(new XmigError('ERR_TIMEOUT', `aborted waiting for ${this.name} to end`));
          if (signal?.aborted) onAbort();
          else signal?.addEventListener('abort', onAbort, { once: true });
          timer = setTimeout(() => reject(new XmigError('ERR_TIMEOUT', `${this.name} did not end within ${Math.round(deadlineMs / 1000)} s`)), deadlineMs);
        }),
      ]);
    } finally {
      clearTimeout(timer);
      if (onAbort) signal?.removeEventListener('abort', onAbort);
    }
    return this.exit?.code ?? null;
  }

  /** Asks it to end (SIGINT: the clients print their report), then SIGTERM/SIGKILL if it does not. */
  async interrupt(graceMs: number): Promise<void> {
    const child = this.child;
    if (!child || this.exit) return;
    child.kill('SIGINT');
    await this.waitForExit(graceMs).catch(() => stopChild(child, 5000));
  }

  async stop(): Promise<void> {
    const child = this.child;
    if (child && !this.exit) await stopChild(child, 5000);
    await this.exited;
    for (const stream of [this.stderr, this.stdout]) if (stream) await new Promise<void>((resolve) => stream.end(() => resolve()));
    this.stderr = undefined;
    this.stdout = undefined;
  }
}
