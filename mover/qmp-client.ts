/**
 * A QEMU Machine Protocol client over a Unix socket: line-delimited JSON, one
 * command in flight at a time (QMP answers in order), events collected aside.
 * Every command has a deadline: a monitor that stops answering fails the client
 * (its answers could no longer be matched to their commands) instead of hanging it.
 */
import { connect, type Socket } from 'node:net';
import { XmigError } from '../shared/errors.js';

export interface QmpEvent {
  event: string;
  data?: Record<string, unknown>;
  timestamp?: { seconds: number; microseconds: number };
}

export class QmpError extends XmigError {
  constructor(
    readonly command: string,
    readonly qmpClass: string,
    message: string,
  ) {
    super('ERR_MIGRATION', `QMP ${command}: ${qmpClass}: ${message}`);
  }
}

/** A QMP line longer than this is not QEMU talking: the connection is dropped. */
const MAX_LINE = 16 * 1024 * 1024;
const DEFAULT_COMMAND_TIMEOUT_MS = 30_000;

export class QmpClient {
  private buffer = '';
  private readonly pending: Array<{ command: string; resolve: (value: unknown) => void; reject: (error: Error) => void }> = [];
  private queue: Promise<unknown> = Promise.resolve();
  readonly events: QmpEvent[] = [];
  private readonly eventListeners = new Set<(event: QmpEvent) => void>();
  private readonly closeListeners = new Set<(error: Error) => void>();
  private greeted: (() => void) | undefined;
  private closed: Error | undefined;

  private constructor(private readonly socket: Socket) {
    socket.setEncoding('utf8');
    socket.on('data', (text: string) => this.onData(text));
    socket.on('close', () => this.failAll(new XmigError('ERR_MIGRATION', 'QMP connection closed')));
    socket.on('error', (error) => this.failAll(new XmigError('ERR_MIGRATION', `QMP: ${error.message}`)));
  }

  /** Connects, reads the greeting and negotiates capabilities. */
  static async connect(path: string, timeoutMs = 5000): Promise<QmpClient> {
    const socket = connect(path);
    const client = new QmpClient(socket);
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new XmigError('ERR_TIMEOUT', `no QMP greeting from ${path} within ${timeoutMs} ms (a QMP monitor serves one client at a time: is another one connected?)`));
      }, timeoutMs);
      client.greeted = () => {
        clearTimeout(timer);
        resolve();
      };
      socket.once('error', (error) => {
        clearTimeout(timer);
        reject(new XmigError('ERR_UNREACHABLE', `cannot open QMP socket ${path}: ${error.message}`));
      });
    });
    await client.execute('qmp_capabilities');
    return client;
  }

  private failAll(error: Error): void {
    const first = this.closed === undefined;
    this.closed ??= error;
    for (const p of this.pending.splice(0)) p.reject(error);
    if (first) for (const listener of this.closeListeners) listener(error);
  }

  /** The monitor is gone (QEMU exited, or the connection failed): `listener` hears why, once. */
  onClose(listener: (error: Error) => void): () => void {
    if (this.closed) {
      listener(this.closed);
      return () => undefined;
    }
    this.closeListeners.add(listener);
    return () => this.closeListeners.delete(listener);
  }

  get isClosed(): boolean {
    return this.closed !== undefined;
  }

  private onData(text: string): void {
    this.buffer += text;
    if (this.buffer.length > MAX_LINE && !this.buffer.includes('\n')) {
      this.socket.destroy();
      this.failAll(new XmigError('ERR_MIGRATION', `QMP sent a line of more than ${MAX_LINE} bytes`));
      return;
    }
    for (;;) {
      const newline = this.buffer.indexOf('\n');
      if (newline < 0) return;
      const line = this.buffer.slice(0, newline).trim();
      this.buffer = this.buffer.slice(newline + 1);
      if (!line) continue;
      let message: Record<string, unknown>;
      try {
        message = JSON.parse(line) as Record<string, unknown>;
      } catch {
        continue;
      }
      if ('QMP' in message) {
        this.greeted?.();
      } else if ('event' in message) {
        const event = message as unknown as QmpEvent;
        this.events.push(event);
        for (const listener of this.eventListeners) listener(event);
      } else if ('return' in message || 'error' in message) {
        const waiting = this.pending.shift();
        if (!waiting) continue;
        if ('error' in message) {
          const error = message['error'] as { class: string; desc: string };
          waiting.reject(new QmpError(waiting.command, error.class, error.desc));
        } else {
          waiting.resolve(message['return']);
        }
      }
    }
  }

  onEvent(listener: (event: QmpEvent) => void): () => void {
    this.eventListeners.add(listener);
    return () => this.eventListeners.delete(listener);
  }

  /** Runs a QMP command and resolves with its `return` value (within `timeoutMs`, default 30 s). */
  execute<T = unknown>(command: string, args?: Record<string, unknown>, options: { timeoutMs?: number } = {}): Promise<T> {
    const timeoutMs = options.timeoutMs ?? DEFAULT_COMMAND_TIMEOUT_MS;
    const run = (): Promise<T> =>
      new Promise<T>((resolve, reject) => {
        if (this.closed) return reject(this.closed);
        const timer = setTimeout(() => {
          this.socket.destroy();
          this.failAll(new XmigError('ERR_TIMEOUT', `QMP ${command}: no answer within ${timeoutMs} ms`));
        }, timeoutMs);
        const settle = <A>(f: (a: A) => void) => (a: A): void => {
          clearTimeout(timer);
          f(a);
        };
        this.pending.push({ command, resolve: settle(resolve as (value: unknown) => void), reject: settle(reject) });
        this.socket.write(`${JSON.stringify(args ? { execute: command, arguments: args } : { execute: command })}\n`);
      });
    const result = this.queue.then(run, run);
    this.queue = result.catch(() => undefined);
    return result;
  }

  async close(): Promise<void> {
    this.socket.end();
    this.socket.destroy();
  }
}
