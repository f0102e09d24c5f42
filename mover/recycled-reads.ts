/**
 * Reads into recycled memory. A socket or pipe read by Node's usual path lands in a
 * fresh 64 KiB buffer every time, and the kernel clears a fresh page for each 4 KiB
 * of it: at hundreds of MB/s that page clearing was 19-28 % of `xmig send`'s and
 * `xmig recv`'s CPU (bench/README.md). Here every read goes into a buffer from a small
 * pool instead (Node's `onread` option), and a buffer comes back to the pool once
 * nobody holds it any more.
 *
 * The contract: a listener may keep a read's bytes past its return only by taking a
 * hold (`hold()`, inside the listener) and releasing it when done with them (a
 * socket write's callback, say). Bytes that are copied (the round cutter does) need no
 * hold. A hold that is never released only costs a buffer: the pool allocates another.
 */
import { EventEmitter } from 'node:events';
import { fstatSync } from 'node:fs';
import { Socket, type OnReadOpts, type SocketConstructorOpts } from 'node:net';
import { growPipe, readBytesFor, type PipeCapacity } from './pipe-capacity.js';

/** What one read is handed to. */
export type Listener = (data: Buffer) => void;

/**
 * The readable side the mover's senders need, as `process.stdin` provides it; a
 * recycled input adds `hold`.
 */
export interface ByteInput {
  on(event: 'data', listener: Listener): unknown;
  on(event: 'end', listener: () => void): unknown;
  on(event: 'error', listener: (error: Error) => void): unknown;
  once(event: 'end', listener: () => void): unknown;
  once(event: 'error', listener: (error: Error) => void): unknown;
  off(event: 'data', listener: Listener): unknown;
  pause(): unknown;
  resume(): unknown;
  /**
   * Keeps the read being handed out now (call inside a 'data' listener) from being
   * reused; the function returned gives it back (calling it again does nothing).
   */
  hold?: () => () => void;
}

export const READ_BUFFER_BYTES = 64 * 1024;
/** The most the pool keeps, whatever its buffers' size: 256 buffers of 64 KiB. */
export const POOL_BYTES = 256 * READ_BUFFER_BYTES;

export interface RecycledReadsStats {
  /** Reads handed out. */
  reads: number;
  /** Buffers allocated (the pool's size plus those held for ever). */
  allocated: number;
  /** Holds taken. */
  holds: number;
}

interface ReadBuffer {
  buffer: Buffer;
  holds: number;
  /** Its read has been handed out and the next read has begun elsewhere. */
  done: boolean;
}

/** The pool and the holds; `onread` is what a socket is built with. */
export class RecycledReads {
  readonly stats: RecycledReadsStats = { reads: 0, allocated: 0, holds: 0 };
  private readonly free: Buffer[] = [];
  /** The buffer Node reads into next. */
  private pending: ReadBuffer | undefined;
  /** The read being handed out (holds taken now are on it). */
  private current: ReadBuffer | undefined;
  private handing = false;

  /** @param onRead every read, as a view of its buffer; false pauses the socket. */
  constructor(
    private readonly onRead: (data: Buffer) => boolean,
    private readonly options: { bufferBytes?: number; maxPooled?: number } = {},
  ) {}

  get onread(): OnReadOpts {
    return { buffer: () => this.nextBuffer(), callback: (bytes: number, buffer: Uint8Array) => this.handOut(bytes, buffer) };
  }

  hold(): () => void {
    const read = this.current;
    if (!this.handing || read === undefined) throw new Error('hold() is taken inside a read listener, for the read being handed out');
    read.holds += 1;
    this.stats.holds += 1;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      read.holds -= 1;
      if (read.holds === 0 && read.done) this.recycle(read.buffer);
    };
  }

  private handOut(bytes: number, buffer: Uint8Array): boolean {
    const read = this.pending;
    // Node hands back the buffer it was given; anything else is not ours to recycle.
    this.current = read !== undefined && read.buffer.buffer === buffer.buffer ? read : { buffer: Buffer.from(buffer.buffer, buffer.byteOffset, buffer.byteLength), holds: 0, done: false };
    this.pending = undefined;
    this.stats.reads += 1;
    this.handing = true;
    try {
      return this.onRead(this.current.buffer.subarray(0, bytes));
    } finally {
      this.handing = false;
    }
  }

  /** Node asks for the buffer of the next read: the last one again if nobody kept it. */
  private nextBuffer(): Buffer {
    const last = this.current;
    this.current = undefined;
    if (last !== undefined && last.holds === 0) {
      this.pending = { buffer: last.buffer, holds: 0, done: false };
      return last.buffer;
    }
    if (last !== undefined) last.done = true;
    const buffer = this.free.pop() ?? this.allocate();
    this.pending = { buffer, holds: 0, done: false };
    return buffer;
  }

  private allocate(): Buffer {
    this.stats.allocated += 1;
    // Outside Node's shared pool: a pooled slab would be kept alive by any one view.
    return Buffer.allocUnsafeSlow(this.options.bufferBytes ?? READ_BUFFER_BYTES);
  }

  private recycle(buffer: Buffer): void {
    const bytes = this.options.bufferBytes ?? READ_BUFFER_BYTES;
    if (this.free.length < (this.options.maxPooled ?? Math.max(1, Math.floor(POOL_BYTES / bytes)))) this.free.push(buffer);
  }
}

/**
 * A pipe or socket fd (QEMU's migration stream on stdin) read into recycled memory,
 * as a ByteInput. It starts paused and flows once a 'data' listener is added (unless
 * paused), as a stream does.
 */
export class RecycledInput extends EventEmitter implements ByteInput {
  private readonly socket: Socket;
  private readonly reads: RecycledReads;
  private paused = false;

  constructor(fd: number, options: { bufferBytes?: number; maxPooled?: number } = {}) {
    super();
    this.reads = new RecycledReads((data) => {
      this.emit('data', data);
      return !this.paused;
    }, options);
    const socketOptions: SocketConstructorOpts & { onread: OnReadOpts } = { fd, readable: true, writable: false, allowHalfOpen: true, onread: this.reads.onread };
    this.socket = new Socket(socketOptions);
    this.socket.pause();
    this.socket.once('end', () => this.emit('end'));
    // A stream's 'error' with nobody listening would throw out of the socket's handler and
    // take the process down; a reader that stopped listening has done with the input.
    this.socket.on('error', (error: Error) => {
      if (this.listenerCount('error') > 0) this.emit('error', error);
    });
    this.socket.once('close', () => this.emit('close'));
    this.on('newListener', (event: string) => {
      if (event === 'data') queueMicrotask(() => this.paused || this.socket.resume());
    });
  }

  get stats(): RecycledReadsStats {
    return this.reads.stats;
  }

  hold = (): (() => void) => this.reads.hold();

  pause(): this {
    this.paused = true;
    this.socket.pause();
    return this;
  }

  resume(): this {
    this.paused = false;
    this.socket.resume();
    return this;
  }

  /** Closes the fd; `error`, if given, goes to the 'error' listeners (if any) first. */
  destroy(error?: Error): void {
    this.socket.destroy(error);
  }
}

export interface OpenedInput {
  input: ByteInput;
  destroy(): void;
  /** A pipe's capacity, grown (pipe-capacity.ts); undefined for anything else. */
  pipe?: PipeCapacity;
}

/**
 * The migration stream's input on `fd`: recycled reads where it is a pipe or a socket
 * (what QEMU's exec: gives), `process.stdin` for anything else on fd 0 (a file, a
 * terminal) or when XMIG_RECYCLED_INPUT=0.
 */
export function openInput(fd = 0): OpenedInput {
  const stat = fstatSync(fd);
  const stream = stat.isFIFO() || stat.isSocket();
  // QEMU's exec: pipe holds 1 MiB rather than 64 KiB (pipe-capacity.ts).
  const pipe = stat.isFIFO() ? growPipe(fd) : undefined;
  if (stream && process.env.XMIG_RECYCLED_INPUT !== '0') {
    const input = new RecycledInput(fd, { bufferBytes: readBytesFor(pipe) });
    return { input, destroy: () => input.destroy(), pipe };
  }
  if (fd !== 0) throw new Error(`fd ${fd} is neither a pipe nor a socket`);
  return { input: process.stdin, destroy: () => process.stdin.destroy(), pipe };
}
