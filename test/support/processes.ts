/** Real `xmig` processes for integration tests: spawned, watched, always reaped. */
import { spawn, type ChildProcess } from 'node:child_process';
import { resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { XMIG_NODE_FLAGS } from '../../shared/node-flags.js';

/**
 * The xmig entry point the processes run: the sources (through tsx) unless
 * XMIG_ENTRY names another, as `npm run bench` does with the compiled output, so
 * benchmarks measure what an installed xmig does.
 */
export const XMIG = process.env['XMIG_ENTRY'] ? resolve(process.env['XMIG_ENTRY']) : new URL('../../bin/xmig.js', import.meta.url).pathname;

/** Node.js arguments that run xmig as its command line does: its V8 flags, then the entry point. */
export const XMIG_ARGV: readonly string[] = [...XMIG_NODE_FLAGS, XMIG];

export interface XmigProcess {
  readonly child: ChildProcess;
  /** Parsed JSON log lines seen so far. */
  readonly logs: Array<Record<string, unknown>>;
  readonly stderr: string[];
  /** Default deadline 60 s: a process starting on 2 loaded cores can take over 15 s to say it is ready. */
  waitForLog(event: string, timeoutMs?: number): Promise<Record<string, unknown>>;
  /** Resolves with the exit code when the process ends by itself. */
  readonly exited: Promise<number | null>;
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

const running = new Set<ChildProcess>();

export function startXmig(args: string[], options: { env?: NodeJS.ProcessEnv; prefix?: string[] } = {}): XmigProcess {
  const command = options.prefix ? options.prefix[0]! : process.execPath;
  const argv = options.prefix ? [...options.prefix.slice(1), process.execPath, ...XMIG_ARGV, ...args] : [...XMIG_ARGV, ...args];
  const child = spawn(command, argv, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...options.env } });
  running.add(child);
  const logs: Array<Record<string, unknown>> = [];
  const stderr: string[] = [];
  const waiters = new Set<() => void>();
  createInterface({ input: child.stdout! }).on('line', (line) => {
    try {
      logs.push(JSON.parse(line) as Record<string, unknown>);
    } catch {
      logs.push({ event: 'stdout', line });
    }
    for (const waiter of waiters) waiter();
  });
  createInterface({ input: child.stderr! }).on('line', (line) => stderr.push(line));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => {
    running.delete(child);
    resolve(code);
    for (const waiter of waiters) waiter();
  }));
  return {
    child,
    logs,
    stderr,
    exited,
    waitForLog(event, timeoutMs = 60_000) {
      return new Promise((resolve, reject) => {
        const check = (): void => {
          const found = logs.find((l) => l['event'] === event);
          if (found) {
            cleanup();
            resolve(found);
          } else if (child.exitCode !== null) {
            cleanup();
            reject(new Error(`xmig ${args.join(' ')} exited (${child.exitCode}) before logging ${event}:\n${stderr.join('\n')}`));
          }
        };
        const timer = setTimeout(() => {
          cleanup();
          reject(new Error(`xmig ${args.join(' ')} did not log ${event} within ${timeoutMs} ms:\n${stderr.join('\n')}`));
        }, timeoutMs);
        const cleanup = (): void => {
          clearTimeout(timer);
          waiters.delete(check);
        };
        waiters.add(check);
        check();
      });
    },
    async stop(signal = 'SIGTERM') {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      return exited;
    },
  };
}

/** Kills whatever a test left running (call from afterAll/afterEach). */
export async function reapAll(): Promise<void> {
  for (const child of running) child.kill('SIGKILL');
  running.clear();
}

/** Runs `xmig` to completion and returns its output. */
export function runXmig(args: string[], timeoutMs = 30_000): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [...XMIG_ARGV, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`xmig ${args.join(' ')} timed out after ${timeoutMs} ms`));
    }, timeoutMs);
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}
