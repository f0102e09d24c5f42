/**
 * The `xmig send --via-node` / `xmig recv --via-node` end of a host node's mover
 * socket (mover-service.ts; the wire is mover-socket-protocol.ts): a request line,
 * then the stream in DATA frames — stdin into the node, or the node into stdout.
 * What QEMU's `exec:` sees is unchanged: a process that takes the stream, or gives
 * it, and exits non-zero if the migration failed.
 */
import type { OnReadOpts, Socket } from 'node:net';
import { connectUnixSocket } from '../xianet/unix-socket-file.js';
import { errorMessage, XmigError } from '../shared/errors.js';
import { FrameReader, FrameType, frameHeader, MAX_DATA_BYTES, type RecvRequest, type SendRequest } from './mover-socket-protocol.js';
import { RecycledReads, type ByteInput } from './recycled-reads.js';
import type { PipeIdentity } from './stdio-handover.js';

/** Where a host's node serves the mover: beside its API socket. */
export function moverSocketOf(apiSocket: string): string {
  return `${apiSocket}.mover`;
}

/** How long a socket that is not there yet is tried for: a node that has just started opens it a moment after node.ready. */
const OPEN_RETRY_MS = 3000;

async function open(path: string, signal?: AbortSignal, onread?: OnReadOpts): Promise<Socket> {
  let socket: Socket;
  try {
    socket = await connectUnixSocket(path, { retryMs: OPEN_RETRY_MS, signal, onread });
  } catch (error) {
    throw new XmigError('ERR_UNREACHABLE', `cannot reach the node's mover at ${path} (is this host's xmig node running, and new enough?): ${(error as Error).message}`, {
      cause: error,
    });
  }
  // From now on a broken socket shows as 'close' without the last STATUS.
  socket.on('error', () => undefined);
  return socket;
}

function failure(status: Record<string, unknown>): XmigError {
  return new XmigError('ERR_MIGRATION', typeof status['error'] === 'string' ? status['error'] : 'the node mover failed');
}

interface StatusHandlers {
  onConnected?: () => void;
  onListening?: (address: string) => void;
  onQemuListening?: (path: string) => void;
  /** The node's answer to a `stdio` request: it took the pipe, or why not. */
  onStdio?: (taken: boolean, reason?: string) => void;
}

type StatusEnd = { ok: true; report: Record<string, unknown> } | { ok: false; error: XmigError };

/** A STATUS frame: a word along the way goes to its handler; the last word (ok or failed) is returned. */
function readStatus(status: Record<string, unknown>, on: StatusHandlers): StatusEnd | undefined {
  if (typeof status['qemuListening'] === 'string') on.onQemuListening?.(status['qemuListening']);
  else if (typeof status['listening'] === 'string') on.onListening?.(status['listening']);
  else if (status['connected'] === true) on.onConnected?.();
  else if (status['stdio'] === 'taken' || status['stdio'] === 'refused') on.onStdio?.(status['stdio'] === 'taken', typeof status['reason'] === 'string' ? status['reason'] : undefined);
  else if (status['ok'] === true) return { ok: true, report: (status['report'] as Record<string, unknown> | undefined) ?? {} };
  else if (status['ok'] === false) return { ok: false, error: failure(status) };
  return undefined;
}

export interface SendViaNodeOptions {
  /** The node's sender reached the receiver. */
  onConnected?: () => void;
  /** Bytes handed to the node so far. */
  onBytes?: (bytes: number) => void;
  /** `input` is this pipe (stdin from QEMU): offer it to the node (stdio-handover.ts). */
  stdio?: PipeIdentity;
  /** The node's answer to `stdio`: taken (nothing is read here), or refused and why (the stream is copied). */
  onHandover?: (taken: boolean, reason?: string) => void;
  signal?: AbortSignal;
}

/**
 * Pipes `input` (QEMU's stream) into the node's sender; resolves with its report once
 * the receiver has all of it, rejects if the migration failed (or the node went away).
 * A recycled input's read is held until the socket has written it. With `stdio` the
 * node is first offered the pipe itself; only if it refuses is `input` read here.
 */
export async function sendViaNode(path: string, request: SendRequest, input: ByteInput, options: SendViaNodeOptions = {}): Promise<Record<string, unknown>> {
  const socket = await open(path, options.signal);
  const reader = new FrameReader();
  let sent = 0;
  try {
    return await new Promise<Record<string, unknown>>((resolve, reject) => {
      let settled = false;
      const settle = (error: Error | undefined, report?: Record<string, unknown>): void => {
        if (settled) return;
        settled = true;
        input.off('data', onInput);
        if (error) reject(error);
        else resolve(report ?? {});
      };
      const handlers: StatusHandlers = {
        ...options,
        onStdio: (taken, reason) => {
          options.onHandover?.(taken, reason);
          if (!taken) stream();
        },
      };
      socket.on('data', (data: Buffer) => {
        try {
          reader.push(data, (frame) => {
            if (frame.type !== FrameType.STATUS) throw new XmigError('ERR_MIGRATION', 'the node mover sent stream bytes to a sender');
            const end = readStatus(frame.status, handlers);
            if (end) settle(end.ok ? undefined : end.error, end.ok ? end.report : undefined);
          });
        } catch (error) {
          settle(new XmigError('ERR_MIGRATION', `the node mover broke the protocol: ${errorMessage(error)}`));
        }
      });
      socket.once('close', () => settle(new XmigError('ERR_MIGRATION', `the node mover went away after ${sent} bytes, before the migration ended`)));
      const onInput = (bytes: Buffer): void => {
        const release = input.hold?.();
        let writable = true;
        socket.cork();
        for (let at = 0; at < bytes.length; at += MAX_DATA_BYTES) {
          const piece = bytes.subarray(at, at + MAX_DATA_BYTES);
          socket.write(frameHeader(FrameType.DATA, piece.length));
          // Writes finish in order: the last piece's callback says all of the read is out.
          writable = at + MAX_DATA_BYTES >= bytes.length ? socket.write(piece, release) : socket.write(piece);
        }
        socket.uncork();
        sent += bytes.length;
        options.onBytes?.(sent);
        if (!writable) {
          input.pause();
          socket.once('drain', () => input.resume());
        }
      };
      let streaming = false;
      const stream = (): void => {
        if (streaming || settled) return;
        streaming = true;
        input.on('data', onInput);
        input.once('end', () => {
          if (!settled) socket.end(frameHeader(FrameType.END, 0));
        });
        input.once('error', (error: Error) => settle(new XmigError('ERR_MIGRATION', `reading the stream: ${error.message}`)));
      };
      // Offered, the pipe is the node's until it says otherwise: nothing of it is read here before.
      if (options.stdio === undefined) stream();
      socket.write(`${JSON.stringify(options.stdio === undefined ? request : { ...request, stdio: options.stdio })}\n`);
    });
  } finally {
    socket.destroy();
  }
}

export interface RecvViaNodeOptions {
  /** The DAG senders connect to (the node is listening). */
  onListening?: (address: string) => void;
  /** Bytes written to `output` so far. */
  onBytes?: (bytes: number) => void;
  /** `output` is this pipe (stdout to QEMU): offer it to the node (stdio-handover.ts). */
  stdio?: PipeIdentity;
  /** The node's answer to `stdio`: taken (the node writes QEMU's pipe), or refused and why (DATA comes here). */
  onHandover?: (taken: boolean, reason?: string) => void;
  signal?: AbortSignal;
}

/**
 * Pipes the node receiver's stream into `output` (QEMU's stdin). Resolves with the
 * node's report once the stream is whole (the node said so after the last byte) and
 * written; rejects if the node broke it off, the migration failed, or `output` broke.
 * The socket reads into recycled memory: a DATA frame's bytes are held until `output`
 * has written them. With `stdio` the node may take the pipe `output` is and write
 * QEMU's stream into it itself: then only STATUS comes here.
 */
export async function recvViaNode(path: string, request: RecvRequest, output: NodeJS.WritableStream, options: RecvViaNodeOptions = {}): Promise<Record<string, unknown>> {
  // The node speaks only after our request line, which goes out once onData is set.
  let onData: (data: Buffer) => void = () => undefined;
  const recycled = process.env.XMIG_RECYCLED_INPUT !== '0';
  const reads = new RecycledReads((data) => {
    onData(data);
    return true;
  });
  const socket = await open(path, options.signal, recycled ? reads.onread : undefined);
  if (!recycled) socket.on('data', (data: Buffer) => onData(data));
  const reader = new FrameReader();
  let bytes = 0;
  try {
    return await new Promise<Record<string, unknown>>((resolve, reject) => {
      let settled = false;
      /** The node said the stream is whole: only writing it out is left. */
      let whole = false;
      const settle = (error: Error | undefined, report?: Record<string, unknown>): void => {
        if (settled) return;
        settled = true;
        if (error) reject(error);
        else resolve(report ?? {});
      };
      // QEMU gone (EPIPE): the node must hear of it, so the sender fails too.
      const onOutputError = (error: Error): void => {
        settle(new XmigError('ERR_MIGRATION', `writing the stream: ${error.message}`));
        socket.destroy();
      };
      output.once('error', onOutputError);
      onData = (data: Buffer) => {
        try {
          reader.push(data, (frame) => {
            if (frame.type === FrameType.DATA) {
              bytes += frame.data.length;
              const release = recycled ? reads.hold() : undefined;
              if (!output.write(frame.data, release)) {
                socket.pause();
                output.once('drain', () => socket.resume());
              }
              options.onBytes?.(bytes);
            } else if (frame.type === FrameType.STATUS) {
              const end = readStatus(frame.status, { ...options, onStdio: options.onHandover });
              if (end?.ok) {
                // Whole: done once it is all out of our hands.
                whole = true;
                output.write('', () => settle(undefined, { ...end.report, bytesWritten: bytes }));
              } else if (end) settle(end.error);
            } else throw new XmigError('ERR_MIGRATION', 'the node mover sent END to a receiver');
          });
        } catch (error) {
          settle(new XmigError('ERR_MIGRATION', `the node mover broke the protocol: ${errorMessage(error)}`));
          socket.destroy();
        }
      };
      socket.once('close', () => {
        if (!whole) settle(new XmigError('ERR_MIGRATION', `the node mover broke the stream off after ${bytes} bytes`));
      });
      socket.write(`${JSON.stringify(options.stdio === undefined ? request : { ...request, stdio: options.stdio })}\n`);
    });
  } finally {
    socket.destroy();
  }
}

export interface QemuChannelOptions {
  /** send: the node listens at the socket for QEMU now (issue `migrate unix:PATH`). */
  onQemuListening?: (path: string) => void;
  /** recv: the DAG senders connect to; the node has connected to QEMU's socket. */
  onListening?: (address: string) => void;
  /** send: the node's sender reached the receiver. */
  onConnected?: () => void;
  signal?: AbortSignal;
}

/**
 * A migration whose stream is QEMU's `unix:` channel into the node (`qemuSocket` in the
 * request): nothing but STATUS crosses this socket. Resolves with the node's report once
 * the migration is over and whole (recv: QEMU has every byte), rejects if it failed.
 * `signal` (or this process going away) ends it: the node breaks QEMU's channel.
 */
export async function migrateInNode(path: string, request: SendRequest | RecvRequest, options: QemuChannelOptions = {}): Promise<Record<string, unknown>> {
  if (request.qemuSocket === undefined) throw new XmigError('ERR_CONFIG', "migrateInNode needs the request's qemuSocket: the stream goes there");
  const socket = await open(path, options.signal);
  const reader = new FrameReader();
  try {
    return await new Promise<Record<string, unknown>>((resolve, reject) => {
      let settled = false;
      const settle = (error: Error | undefined, report?: Record<string, unknown>): void => {
        if (settled) return;
        settled = true;
        options.signal?.removeEventListener('abort', onAbort);
        if (error) reject(error);
        else resolve(report ?? {});
      };
      const onAbort = (): void => {
        settle(new XmigError('ERR_MIGRATION', `the migration was cancelled: ${errorMessage(options.signal?.reason)}`));
        socket.destroy();
      };
      if (options.signal?.aborted) return onAbort();
      options.signal?.addEventListener('abort', onAbort, { once: true });
      socket.on('data', (data: Buffer) => {
        try {
          reader.push(data, (frame) => {
            if (frame.type !== FrameType.STATUS) throw new XmigError('ERR_MIGRATION', 'the node mover sent stream bytes on a QEMU-channel migration');
            const end = readStatus(frame.status, options);
            if (end) settle(end.ok ? undefined : end.error, end.ok ? end.report : undefined);
          });
        } catch (error) {
          settle(new XmigError('ERR_MIGRATION', `the node mover broke the protocol: ${errorMessage(error)}`));
          socket.destroy();
        }
      });
      socket.once('close', () => settle(new XmigError('ERR_MIGRATION', 'the node mover went away before the migration ended')));
      socket.write(`${JSON.stringify(request)}\n`);
    });
  } finally {
    socket.destroy();
  }
}
