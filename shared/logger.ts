/**
 * Structured logs: one JSON object per line (journald keeps them whole), an `event`
 * name instead of a sentence, and the fields operators grep for (vm, hid, ad, phase,
 * ms). On a terminal the same events print as short readable lines. When the stream is
 * the journal (systemd sets JOURNAL_STREAM to its device:inode), each line starts with
 * its syslog priority, `<3>` for error ... `<7>` for debug, as sd-daemon(3) describes,
 * so `journalctl -p warning` finds warnings and errors. A field whose value is
 * `undefined` is left out of both forms.
 */
import { fstatSync } from 'node:fs';
import winston from 'winston';
import { Writable } from 'node:stream';

export type LogLevel = 'error' | 'warn' | 'info' | 'debug';
export type LogFields = Record<string, unknown>;

export interface Logger {
  error(event: string, fields?: LogFields): void;
  warn(event: string, fields?: LogFields): void;
  info(event: string, fields?: LogFields): void;
  debug(event: string, fields?: LogFields): void;
  /** A logger whose lines all carry `fields` (e.g. the component or the VM name). */
  child(fields: LogFields): Logger;
}

export interface LoggerOptions {
  component: string;
  level?: LogLevel;
  /** stdout by default; `xmig send`/`recv` must keep stdout for the migration stream. */
  destination?: 'stdout' | 'stderr' | NodeJS.WritableStream;
  /** Human-readable lines instead of JSON; defaults to whether the destination is a TTY. */
  pretty?: boolean;
  /** Prefix each line with its syslog priority; defaults to whether the destination is the journal. */
  journal?: boolean;
}

/** syslog(3) priorities of our levels (sd-daemon's SD_ERR ... SD_DEBUG). */
export const SYSLOG_PRIORITY: Record<LogLevel, number> = { error: 3, warn: 4, info: 6, debug: 7 };

const MESSAGE = Symbol.for('message');

/**
 * Whether file descriptor `fd` is the journal's stream: JOURNAL_STREAM holds the
 * device and inode of the stream systemd connected (systemd.exec(5)); a daemon that
 * was redirected elsewhere (a file, a pipe to QEMU) keeps its lines unprefixed.
 */
export function isJournalStream(fd: number, env: NodeJS.ProcessEnv = process.env): boolean {
  const value = env['JOURNAL_STREAM'];
  const match = value === undefined ? null : /^(\d+):(\d+)$/.exec(value);
  if (!match) return false;
  try {
    const stat = fstatSync(fd, { bigint: true });
    return stat.dev === BigInt(match[1]!) && stat.ino === BigInt(match[2]!);
  } catch {
    return false;
  }
}

const withoutUndefined = winston.format((info) => {
  const record = info as Record<string, unknown>;
  for (const key of Object.keys(record)) if (record[key] === undefined) delete record[key];
  return info;
});

const syslogPrefix = winston.format((info) => {
  const record = info as unknown as Record<string | symbol, unknown>;
  const priority = SYSLOG_PRIORITY[info.level as LogLevel] ?? SYSLOG_PRIORITY.info;
  record[MESSAGE] = `<${priority}>${String(record[MESSAGE])}`;
  return info;
});

const renameMessageToEvent = winston.format((info) => {
  const record = info as Record<string, unknown>;
  record['event'] = record['message'];
  delete record['message'];
  return info;
});

const prettyLine = winston.format.printf((info) => {
  const { level, message, timestamp, component, ...rest } = info as Record<string, unknown>;
  const fields = Object.entries(rest)
    .filter(([, value]) => value !== undefined)
    .map(([key, value]) => `${key}=${typeof value === 'string' ? value : JSON.stringify(value)}`)
    .join(' ');
  const time = String(timestamp).slice(11, 23);
  return `${time} ${String(level).padEnd(5)} ${String(component)} ${String(message)}${fields ? ` ${fields}` : ''}`;
});

function streamFor(destination: LoggerOptions['destination']): NodeJS.WritableStream {
  if (destination === undefined || destination === 'stdout') return process.stdout;
  if (destination === 'stderr') return process.stderr;
  return destination;
}

class WinstonLogger implements Logger {
  constructor(private readonly inner: winston.Logger) {}

  error(event: string, fields?: LogFields): void {
    this.inner.error(event, fields);
  }
  warn(event: string, fields?: LogFields): void {
    this.inner.warn(event, fields);
  }
  info(event: string, fields?: LogFields): void {
    this.inner.info(event, fields);
  }
  debug(event: string, fields?: LogFields): void {
    this.inner.debug(event, fields);
  }
  child(fields: LogFields): Logger {
    return new WinstonLogger(this.inner.child(fields));
  }
}

function streamFd(stream: NodeJS.WritableStream): number | undefined {
  if (stream === process.stdout) return 1;
  if (stream === process.stderr) return 2;
  return undefined;
}

export function createLogger(options: LoggerOptions): Logger {
  const stream = streamFor(options.destination);
  const pretty = options.pretty ?? Boolean((stream as { isTTY?: boolean }).isTTY);
  const fd = streamFd(stream);
  const journal = options.journal ?? (fd !== undefined && isJournalStream(fd));
  const lines = pretty
    ? winston.format.combine(withoutUndefined(), winston.format.timestamp(), prettyLine)
    : winston.format.combine(
        withoutUndefined(),
        winston.format.timestamp({ alias: 'ts' }),
        renameMessageToEvent(),
        winston.format((info) => {
          delete (info as Record<string, unknown>)['timestamp'];
          return info;
        })(),
        winston.format.json(),
      );
  const format = journal ? winston.format.combine(lines, syslogPrefix()) : lines;
  const inner = winston.createLogger({
    level: options.level ?? (process.env['XMIG_LOG_LEVEL'] as LogLevel | undefined) ?? 'info',
    defaultMeta: { component: options.component },
    format,
    transports: [new winston.transports.Stream({ stream })],
  });
  return new WinstonLogger(inner);
}

/** A logger that writes nothing: for libraries used without a daemon around them. */
export function silentLogger(): Logger {
  const inner = winston.createLogger({
    silent: true,
    transports: [new winston.transports.Stream({ stream: new Writable({ write: (_c, _e, cb) => cb() }) })],
  });
  return new WinstonLogger(inner);
}

/** Collects log records in memory, for tests that check what was logged. */
export class MemoryLogger implements Logger {
  readonly records: Array<{ level: LogLevel; event: string } & LogFields> = [];

  constructor(private readonly base: LogFields = {}, records?: MemoryLogger['records']) {
    if (records) this.records = records;
  }

  private push(level: LogLevel, event: string, fields?: LogFields): void {
    this.records.push({ ...this.base, ...fields, level, event });
  }
  error(event: string, fields?: LogFields): void {
    this.push('error', event, fields);
  }
  warn(event: string, fields?: LogFields): void {
    this.push('warn', event, fields);
  }
  info(event: string, fields?: LogFields): void {
    this.push('info', event, fields);
  }
  debug(event: string, fields?: LogFields): void {
    this.push('debug', event, fields);
  }
  child(fields: LogFields): Logger {
    return new MemoryLogger({ ...this.base, ...fields }, this.records);
  }
  events(name: string): Array<LogFields> {
    return this.records.filter((r) => r.event === name);
  }
}
