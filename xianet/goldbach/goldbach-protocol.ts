/**
 * Goldbach over a STREAM, one line per message: the client sends `n\n`, the server
 * answers `n p q\n`. Text keeps it inspectable; the client keeps a few questions in
 * flight so a long pause in answers shows as a gap, not as idle time.
 */
import type { Duplex } from 'node:stream';
import { createInterface } from 'node:readline';
import { XmigError } from '../../shared/errors.js';
import { checkPair, goldbachPair } from './goldbach.js';

/** Answers questions on one connection until it ends or breaks; honours backpressure. Never rejects. */
export async function serveGoldbachConnection(connection: Duplex): Promise<number> {
  let answered = 0;
  const lines = createInterface({ input: connection, crlfDelay: Infinity });
  // readline re-emits its input's errors; a client resetting is the end of the loop, not a crash.
  lines.on('error', () => lines.close());
  try {
    for await (const line of lines) {
      const n = Number(line.trim());
      let reply: string;
      try {
        const [p, q] = goldbachPair(n);
        reply = `${n} ${p} ${q}\n`;
      } catch (error) {
        reply = `${line.trim()} error ${(error as Error).message.replace(/\s+/g, '_')}\n`;
      }
      answered++;
      if (!connection.write(reply)) {
        await new Promise<void>((resolve) => {
          const done = (): void => {
            connection.off('drain', done);
            connection.off('close', done);
            resolve();
          };
          connection.once('drain', done);
          connection.once('close', done);
        });
      }
      if (connection.destroyed) break;
    }
  } catch {
    // The client went away (reset, broken stream): nothing more to answer.
  } finally {
    lines.close();
  }
  if (!connection.destroyed) connection.end();
  return answered;
}

export interface AskOptions {
  /** First even number to ask (default 4). */
  start?: number;
  /** Step between questions (default 2). */
  step?: number;
  /** Questions in flight (default 8). */
  window?: number;
  /** Stop after this many answers. */
  count?: number;
  signal?: AbortSignal;
  onAnswer?: (answer: { n: number; p: number; q: number; at: number }) => void;
}

export interface AskReport {
  answers: number;
  wrong: number;
  /** Longest time between two consecutive answers (ms). */
  maxGapMs: number;
  /** When the longest gap ended (ms since epoch). */
  maxGapEndedAt: number | undefined;
  durationMs: number;
  /** Why it stopped: asked count reached, aborted, or the connection broke. */
  ended: 'count' | 'aborted' | 'broken';
  error?: string;
}

/** Asks continuously on `connection`; resolves when done, with `ended: 'broken'` if the connection failed. */
export function askGoldbach(connection: Duplex, options: AskOptions = {}): Promise<AskReport> {
  const step = options.step ?? 2;
  const window = options.window ?? 8;
  let next = options.start ?? 4;
  let inFlight = 0;
  const started = Date.now();
  let last = started;
  const report: AskReport = { answers: 0, wrong: 0, maxGapMs: 0, maxGapEndedAt: undefined, durationMs: 0, ended: 'count' };
  return new Promise<AskReport>((resolve) => {
    let done = false;
    const lines = createInterface({ input: connection, crlfDelay: Infinity });
    lines.on('error', () => undefined); // the connection's own 'error' handler below reports it
    const finish = (ended: AskReport['ended'], error?: string): void => {
      if (done) return;
      done = true;
      report.ended = ended;
      if (error) report.error = error;
      report.durationMs = Date.now() - started;
      options.signal?.removeEventListener('abort', onAbort);
      lines.close();
      if (ended === 'broken') connection.destroy();
      else connection.end();
      resolve(report);
    };
    const ask = (): void => {
      while (!done && inFlight < window && (options.count === undefined || report.answers + inFlight < options.count)) {
        inFlight++;
        connection.write(`${next}\n`);
        next += step;
      }
    };
    lines.on('line', (line) => {
      const [n, p, q] = line.split(' ').map(Number);
      const now = Date.now();
      inFlight--;
      report.answers++;
      if (!checkPair(n!, p!, q!)) report.wrong++;
      if (now - last > report.maxGapMs) {
        report.maxGapMs = now - last;
        report.maxGapEndedAt = now;
      }
      last = now;
      options.onAnswer?.({ n: n!, p: p!, q: q!, at: now });
      if (options.count !== undefined && report.answers >= options.count) return finish('count');
      ask();
    });
    connection.on('error', (error) => finish('broken', error.message));
    connection.on('close', () => finish(done ? report.ended : 'broken', 'connection closed by the server'));
    const onAbort = (): void => finish('aborted');
    options.signal?.addEventListener('abort', onAbort, { once: true });
    if (options.signal?.aborted) return finish('aborted');
    ask();
  });
}

export class GoldbachBroken extends XmigError {
  constructor(report: AskReport) {
    super('ERR_CONNECTION', `Goldbach connection broke after ${report.answers} answers: ${report.error ?? 'closed'}`);
  }
}
