/**
 * One migration run inside a host's node, for one connection of its mover socket
 * (mover-service.ts; the wire is mover-socket-protocol.ts). The sender and receiver
 * are the same as `xmig send` / `xmig recv` run, but on the node's stack directly
 * (LocalNodeApi): a chunk's bytes never cross the application API in framed messages,
 * and the control STREAM never leaves the node.
 *
 *  - send: the client's DATA frames are the sender's input; END ends it. The socket
 *    closing without END is the client gone (QEMU's `exec:` child killed, say): the
 *    stream is short, so the migration fails and the receiver is told.
 *  - recv: the receiver writes into DATA frames; STATUS ok after the last one is the
 *    client's proof that the stream is whole. The client going away fails the
 *    migration, and the sender is told (its `xmig send` exits non-zero: QEMU on the
 *    source fails the migration and the VM runs on there).
 *
 * With `qemuSocket` (QEMU's `unix:` channel, qemu-channel.ts) the stream is QEMU's
 * connection to (send) or from (recv) the node, and the client's socket carries only
 * STATUS: the client holds the migration open, and its going away ends it as above.
 * With `stdio` (stdio-handover.ts) it is QEMU's `exec:` pipe, which the node opens
 * itself, and the same holds; a pipe the node cannot take is refused in a STATUS, and
 * the stream comes in DATA frames instead.
 *
 * Whatever a migration holds in the node is let go when it ends, however it ends:
 * chunks it published, fetches in flight, its listening SID, its control STREAM, the
 * QEMU socket file and connection.
 */
import { Readable, Writable } from 'node:stream';
import { Socket } from 'node:net';
import { Dag } from '../shared/dag.js';
import { errorMessage, XmigError } from '../shared/errors.js';
import type { Logger } from '../shared/logger.js';
import { Xid } from '../shared/xid.js';
import type { NodeApi } from '../xianet/api/node-api.js';
import { XiaPublisher, XiaRetriever } from './chunk-exchange.js';
import { admitXiaFrom, connectXia, listenXia } from './connections.js';
import { FrameReader, FrameType, frameHeader, MAX_DATA_BYTES, statusFrame, type RecvRequest, type SendRequest } from './mover-socket-protocol.js';
import { MigrationReceiver, type ReceiveReport } from './receiver.js';
import { connectToQemu, listenForQemu, type QemuListener } from './qemu-channel.js';
import { RecycledInput } from './recycled-reads.js';
import { MigrationSender, type SendReport } from './sender.js';
import { growPipe, pipeFields, readBytesFor, type PipeCapacity } from './pipe-capacity.js';
import { takePipe, type PipeIdentity } from './stdio-handover.js';

export interface NodeMigration {
  readonly op: 'send' | 'recv';
  /** Settles when the migration is over and all it held is let go (never rejects). */
  readonly done: Promise<{ ok: boolean; bytes: number; error?: string }>;
  /** Ends it now with `error` (the node is stopping): both clients hear of it. */
  abort(error: Error): void;
}

export interface NodeMigrationContext {
  api: NodeApi;
  logger: Logger;
}

/** Writes a STATUS frame if the socket can still take it. */
function say(socket: Socket, status: Record<string, unknown>): void {
  if (!socket.destroyed && socket.writable) socket.write(statusFrame(status));
}

/** The last word to the client, then the end of the connection. */
function finish(socket: Socket, status: Record<string, unknown>): void {
  say(socket, status);
  if (!socket.destroyed) socket.end();
}

/**
 * The client's DATA frames as a Readable (views of the socket's reads, no copy), with
 * the socket paused while the reader is full. Resolves `ended` when END came; the
 * socket closing first calls `onGone`.
 */
function clientStream(socket: Socket, rest: Buffer, onGone: (error: Error) => void): Readable {
  const reader = new FrameReader();
  let endSeen = false;
  const input = new Readable({ highWaterMark: 1024 * 1024, read: () => void socket.resume() });
  const onData = (data: Buffer): void => {
    try {
      reader.push(data, (frame) => {
        if (frame.type === FrameType.DATA) {
          if (!input.push(frame.data)) socket.pause();
        } else if (frame.type === FrameType.END) {
          if (endSeen) throw new XmigError('ERR_MIGRATION', 'a second END from the send client');
          endSeen = true;
          input.push(null);
        } else throw new XmigError('ERR_MIGRATION', 'the send client sent a STATUS frame: only DATA and END go that way');
      });
    } catch (error) {
      onGone(new XmigError('ERR_MIGRATION', `the send client broke the protocol: ${errorMessage(error)}`));
      socket.destroy();
    }
  };
  socket.on('data', onData);
  const gone = (): void => {
    if (!endSeen) onGone(new XmigError('ERR_MIGRATION', 'the send client went away before its stream ended'));
  };
  socket.once('end', gone);
  socket.once('close', gone);
  if (rest.length > 0) onData(rest);
  return input;
}

/**
 * A client that sends nothing more after its request (recv, or send with QEMU's socket):
 * any frame from it is a protocol error, and its socket ending or closing is the client gone.
 */
function holdClient(socket: Socket, rest: Buffer, who: string, onGone: (error: Error) => void): void {
  const reader = new FrameReader();
  const onData = (data: Buffer): void => {
    try {
      reader.push(data, () => {
        throw new XmigError('ERR_MIGRATION', `the ${who} client sent a frame: nothing goes that way`);
      });
    } catch (error) {
      onGone(new XmigError('ERR_MIGRATION', errorMessage(error)));
      socket.destroy();
    }
  };
  socket.on('data', onData);
  socket.resume();
  const gone = (): void => onGone(new XmigError('ERR_MIGRATION', `the ${who} client went away`));
  socket.once('end', gone);
  socket.once('close', gone);
  if (rest.length > 0) onData(rest);
}

/**
 * The client's pipe (its stdin for send, fd 0; its stdout for recv, fd 1) opened here,
 * grown (pipe-capacity.ts), and the client told whether it was: the fd and its
 * capacity, or undefined (refused, said why).
 */
function takeClientPipe(socket: Socket, pipe: PipeIdentity, fd: 0 | 1, logger: Logger): { fd: number; capacity: PipeCapacity } | undefined {
  try {
    const taken = takePipe(pipe, fd);
    say(socket, { stdio: 'taken' });
    // It holds 1 MiB rather than 64 KiB (pipe-capacity.ts).
    const capacity = growPipe(taken);
    logger.info('mover.pipe-taken', { phase: 'setup', pid: pipe.pid, fd, ...pipeFields(capacity) });
    return { fd: taken, capacity };
  } catch (error) {
    const reason = errorMessage(error);
    say(socket, { stdio: 'refused', reason });
    logger.warn('mover.pipe-refused', { phase: 'setup', pid: pipe.pid, fd, reason });
    return undefined;
  }
}

/** Ends a socket and waits until what was written has gone (or the socket has). */
function endAndFlush(socket: Socket): Promise<void> {
  return new Promise((resolve) => {
    if (socket.destroyed) return resolve();
    socket.once('close', () => resolve());
    socket.end(() => resolve());
  });
}

/** `xmig send --via-node`: the client's stream into a sender on this node. */
export function sendInNode(socket: Socket, request: SendRequest, rest: Buffer, context: NodeMigrationContext): NodeMigration {
  const { api } = context;
  const publisher = new XiaPublisher(api);
  let sender: MigrationSender | undefined;
  let failure: Error | undefined;
  let listener: QemuListener | undefined;
  let qemu: Socket | undefined;
  const abort = (error: Error): void => {
    failure ??= error;
    sender?.abort(error);
    // Waiting for QEMU to connect ends too.
    listener?.close();
  };
  let input: Readable | RecycledInput | Socket | undefined;
  const piped = request.stdio === undefined ? undefined : takeClientPipe(socket, request.stdio, 0, context.logger);
  // QEMU's pipe read here, into recycled memory (the sender copies each read into a chunk).
  if (piped !== undefined) input = new RecycledInput(piped.fd, { bufferBytes: readBytesFor(piped.capacity) });
  if (request.qemuSocket === undefined && piped === undefined) input = clientStream(socket, rest, abort);
  else holdClient(socket, rest, 'send', abort);
  const done = (async () => {
    try {
      const source = (await api.info()).address.toString();
      if (failure) throw failure;
      if (request.qemuSocket !== undefined) {
        listener = await listenForQemu(request.qemuSocket);
        if (failure) throw failure;
        say(socket, { qemuListening: request.qemuSocket });
        qemu = await listener.connection;
        // One stream per migration: nobody else gets in.
        listener.close();
        if (failure) throw failure;
        // A read error reaches the sender as its input's 'error'.
        input = qemu;
      }
      sender = new MigrationSender({
        input: input!,
        connect: connectXia(api, Dag.parse(request.to)),
        publisher,
        mode: 'xia',
        source,
        chunkBytes: request.chunkBytes,
        roundBytes: request.roundBytes,
        maxUnackedBytes: request.maxUnackedBytes,
        resumeDeadlineMs: request.resumeDeadlineMs,
        logger: context.logger,
        onConnected: () => say(socket, { connected: true }),
      });
      const report: SendReport = await sender.run();
      finish(socket, { ok: true, report });
      return { ok: true, bytes: report.bytes };
    } catch (error) {
      const why = errorMessage(failure ?? error);
      finish(socket, { ok: false, error: why, report: sender?.snapshot() });
      await publisher.release().catch(() => undefined);
      return { ok: false, bytes: sender?.snapshot().bytes ?? 0, error: why };
    } finally {
      // QEMU sees its channel break if the migration failed (and the VM runs on there).
      input?.destroy();
      listener?.close();
    }
  })();
  return { op: 'send', done, abort };
}

/**
 * The receiver's output as DATA frames on the socket: each write one frame (header
 * and payload in one writev, the payload as it is). Gone when the socket is.
 */
class FramedOutput extends Writable {
  constructor(private readonly socket: Socket) {
    super({ highWaterMark: 4 * 1024 * 1024 });
    // The receiver hears of a gone client from 'close' (and its abort); no 'error' may go unheard.
    this.on('error', () => undefined);
    socket.once('close', () => this.destroy());
  }

  override _writev(chunks: Array<{ chunk: Buffer }>, callback: (error?: Error | null) => void): void {
    if (this.socket.destroyed) return callback(new XmigError('ERR_MIGRATION', 'the recv client went away'));
    this.socket.cork();
    let writable = true;
    for (const { chunk } of chunks) {
      for (let at = 0; at < chunk.length; at += MAX_DATA_BYTES) {
        const piece = chunk.subarray(at, at + MAX_DATA_BYTES);
        this.socket.write(frameHeader(FrameType.DATA, piece.length));
        writable = this.socket.write(piece);
      }
    }
    this.socket.uncork();
    if (writable) callback();
    else this.socket.once('drain', () => callback());
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this._writev([{ chunk }], callback);
  }
}

/** `xmig recv --via-node`: a receiver on this node, its stream out to the client. */
export function recvInNode(socket: Socket, request: RecvRequest, rest: Buffer, context: NodeMigrationContext): NodeMigration {
  const { api } = context;
  let receiver: MigrationReceiver | undefined;
  let retriever: XiaRetriever | undefined;
  let failure: Error | undefined;
  let over = false;
  let qemu: Socket | undefined;
  const pipeFd = request.stdio === undefined ? undefined : takeClientPipe(socket, request.stdio, 1, context.logger)?.fd;
  let piped: Socket | undefined;
  if (pipeFd !== undefined) {
    piped = new Socket({ fd: pipeFd, readable: false, writable: true });
    // The receiver hears of a broken pipe (QEMU gone) from 'close'.
    piped.on('error', () => undefined);
  }
  const connecting = new AbortController();
  const abort = (error: Error): void => {
    if (over) return;
    failure ??= error;
    connecting.abort(error);
    // The receiver stops its fetches as it fails (and tells the sender why).
    receiver?.abort(error);
  };
  holdClient(socket, rest, 'recv', abort);
  const done = (async () => {
    let listening: Awaited<ReturnType<typeof listenXia>> | undefined;
    try {
      listening = await listenXia(api, Xid.parse(request.sid));
      if (failure) throw failure;
      if (request.qemuSocket !== undefined) {
        // Before a sender is heard: a QEMU that is not there fails this now, not mid-stream.
        qemu = await connectToQemu(request.qemuSocket, { signal: connecting.signal });
        // The receiver hears of a broken channel from 'close'.
        qemu.on('error', () => undefined);
        if (failure) throw failure;
      }
      say(socket, { listening: listening.address });
      const accept = listening.accept;
      receiver = new MigrationReceiver({
        output: qemu ?? piped ?? new FramedOutput(socket),
        accept: () => accept(),
        admit: request.from ? admitXiaFrom(request.from.map((hid) => Xid.parse(hid))) : undefined,
        retriever: (mode, source) => {
          if (mode !== 'xia') throw new XmigError('ERR_MIGRATION', 'the node mover takes XIA senders only');
          retriever = new XiaRetriever(api, Dag.parse(source));
          return retriever;
        },
        resumeDeadlineMs: request.resumeDeadlineMs,
        logger: context.logger,
      });
      const report: ReceiveReport = await receiver.run();
      // QEMU has the whole stream once it has left this end.
      if (qemu) await endAndFlush(qemu);
      if (piped) await endAndFlush(piped);
      over = true;
      finish(socket, { ok: true, report });
      return { ok: true, bytes: report.bytes };
    } catch (error) {
      over = true;
      const why = errorMessage(failure ?? error);
      finish(socket, { ok: false, error: why });
      return { ok: false, bytes: 0, error: why };
    } finally {
      retriever?.cancel();
      // A failed migration breaks QEMU's channel: the destination QEMU gives up on it.
      qemu?.destroy();
      piped?.destroy();
      await listening?.close().catch(() => undefined);
    }
  })();
  return { op: 'recv', done, abort };
}
