/**
 * Serves a node's application API on a Unix socket (mode 0600: only the node's own
 * user and root talk to the stack). Each client connection owns what it opened
 * (bound SIDs, subscriptions, pings): all of it goes when the connection does.
 */
import { chmodSync, rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { errorMessage, isXmigError } from '../../shared/errors.js';
import type { Logger } from '../../shared/logger.js';
import { silentLogger } from '../../shared/logger.js';
import { Xid } from '../../shared/xid.js';
import type { Dag } from '../../shared/dag.js';
import { encodeFrameParts, FrameDecoder, writeFrame, type Frame, type Header } from './api-frames.js';
import { fromWire, toWire } from './api-json.js';
import { randomBytes } from 'node:crypto';
import type { DatagramSocket, NodeApi, NodeEventName, StreamConnection, StreamServer } from './node-api.js';

/** STREAM connections waiting for their data socket to attach. */
class PendingStreams {
  private nextId = 1;
  private readonly pending = new Map<number, { connection: StreamConnection; token: string; timer: NodeJS.Timeout }>();

  add(connection: StreamConnection): { streamId: number; token: string } {
    const streamId = this.nextId++;
    const token = randomBytes(16).toString('hex');
    // A connection nobody attaches to within 10 s is dropped, not leaked.
    const timer = setTimeout(() => {
      this.pending.delete(streamId);
      connection.destroy();
    }, 10_000);
    timer.unref();
    this.pending.set(streamId, { connection, token, timer });
    return { streamId, token };
  }

  take(streamId: unknown, token: unknown): StreamConnection | undefined {
    const entry = typeof streamId === 'number' ? this.pending.get(streamId) : undefined;
    if (!entry || entry.token !== token) return undefined;
    clearTimeout(entry.timer);
    this.pending.delete(streamId as number);
    return entry.connection;
  }

  clear(): void {
    for (const entry of this.pending.values()) {
      clearTimeout(entry.timer);
      entry.connection.destroy();
    }
    this.pending.clear();
  }
}

/**
 * Joins a data socket and a STREAM connection: bytes both ways, half-close passed on
 * (the application ending its socket ends the connection gracefully), and an abrupt
 * close of either side aborts the other.
 */
function splice(socket: Socket, connection: StreamConnection, initial: Buffer): void {
  if (initial.length > 0) connection.write(initial);
  let socketEnded = false;
  socket.on('end', () => (socketEnded = true));
  socket.pipe(connection);
  connection.pipe(socket);
  socket.on('error', () => connection.destroy());
  socket.on('close', () => {
    // Closed without ending first: the application went away (or crashed).
    if (!socketEnded && !connection.destroyed) connection.destroy();
  });
  connection.on('error', () => socket.destroy());
  connection.on('close', () => {
    if (!socket.destroyed && !socket.writableEnded) socket.destroy();
  });
}

const EVENTS: readonly NodeEventName[] = ['beacon', 'gateway', 'registered', 'beacon-rejected', 'beacon-stray'];

class ClientSession {
  private readonly cleanups: Array<() => void | Promise<void>> = [];
  private readonly datagrams = new Map<string, DatagramSocket>();
  private readonly servers = new Map<string, StreamServer>();
  /** Chunks this client published (they go when it does, if it did not drop them). */
  private readonly published = new Map<string, Xid>();
  private readonly pings = new Map<number, AbortController>();
  /** Chunk fetches in progress, by request id: cancelled by `chunk-cancel` or when the client goes. */
  private readonly fetches = new Map<number, AbortController>();
  private closed = false;

  constructor(
    private readonly socket: Socket,
    private readonly api: NodeApi,
    private readonly logger: Logger,
    private readonly decoder: FrameDecoder,
    private readonly streams: PendingStreams,
  ) {
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('end', () => socket.destroy());
    socket.on('close', () => void this.close());
    socket.on('error', () => socket.destroy());
  }

  /** Frames that arrived with the first chunk, before this session existed. */
  handleFrames(frames: Frame[]): void {
    this.dispatch(frames);
  }

  private send(header: Header, body?: Uint8Array): void {
    if (!this.closed && !this.socket.destroyed) writeFrame(this.socket, encodeFrameParts(toWire(header) as Header, body ? [body] : []));
  }

  private onData(chunk: Buffer): void {
    let frames: Frame[];
    try {
      frames = this.decoder.push(chunk);
    } catch (error) {
      this.logger.warn('api.client-dropped', { reason: errorMessage(error) });
      this.socket.destroy();
      return;
    }
    this.dispatch(frames);
  }

  private dispatch(frames: Frame[]): void {
    for (const frame of frames) {
      const id = typeof frame.header['id'] === 'number' ? frame.header['id'] : undefined;
      this.handle(frame)
        .then((result) => {
          if (id !== undefined) this.send({ id, ok: true, ...(result?.header ?? {}) }, result?.body);
        })
        .catch((error: unknown) => {
          if (id === undefined) return;
          this.send({
            id,
            ok: false,
            error: { code: isXmigError(error) ? error.code : 'ERR_INTERNAL', message: errorMessage(error) },
          });
        });
    }
  }

  private async handle(frame: Frame): Promise<{ header?: Header; body?: Buffer } | undefined> {
    const header = fromWire(frame.header) as Header;
    const op = header['op'];
    switch (op) {
      case 'info':
        return { header: { info: await this.api.info() } };
      case 'subscribe': {
        const event = header['event'] as NodeEventName;
        if (!EVENTS.includes(event)) throw new Error(`no such event "${String(event)}"`);
        const off = await this.api.on(event, (payload) => this.send({ event, payload }));
        this.cleanups.push(off);
        return undefined;
      }
      case 'solicit':
        await this.api.solicitBeacon();
        return undefined;
      case 'announce':
        await this.api.announce();
        return undefined;
      case 'ping': {
        const id = header['id'] as number;
        const controller = new AbortController();
        this.pings.set(id, controller);
        const summary = await this.api.ping(header['dst'] as Dag, {
          count: header['count'] as number | undefined,
          intervalMs: header['intervalMs'] as number | undefined,
          timeoutMs: header['timeoutMs'] as number | undefined,
          size: header['size'] as number | undefined,
          signal: controller.signal,
          onResult: (reply) => this.send({ event: 'ping-result', pingId: id, reply }),
        });
        this.pings.delete(id);
        return { header: { summary } };
      }
      case 'cancel':
        this.pings.get(header['pingId'] as number)?.abort();
        return undefined;
      case 'bind': {
        const socket = await this.api.bindDatagram(header['sid'] instanceof Xid ? header['sid'] : undefined);
        const key = socket.sid.key;
        this.datagrams.set(key, socket);
        socket.onMessage(({ data, from, port }) => this.send({ event: 'datagram', sid: socket.sid, from, port }, data));
        this.cleanups.push(() => socket.close());
        return { header: { sid: socket.sid, address: await socket.address() } };
      }
      case 'send': {
        const socket = this.datagrams.get((header['sid'] as Xid).key);
        if (!socket) throw new Error(`SID ${String(header['sid'])} is not bound by this client`);
        if (typeof header['port'] === 'number') await socket.sendOnLink(header['port'], header['dst'] as Dag, frame.body);
        else await socket.send(header['dst'] as Dag, frame.body);
        return undefined;
      }
      case 'listen': {
        const server = await this.api.listen(header['sid'] instanceof Xid ? header['sid'] : undefined);
        this.servers.set(server.sid.key, server);
        server.onConnection((connection) => {
          const { streamId, token } = this.streams.add(connection);
          this.watch(streamId, connection);
          this.send({ event: 'connection', sid: server.sid, streamId, token, remote: connection.remote, localSid: connection.localSid });
        });
        this.cleanups.push(() => server.close());
        return { header: { sid: server.sid } };
      }
      case 'unlisten': {
        const key = (header['sid'] as Xid).key;
        await this.servers.get(key)?.close();
        this.servers.delete(key);
        return undefined;
      }
      case 'connect': {
        const connection = await this.api.connect(header['dst'] as Dag, {
          pinPeerAddress: header['pinPeerAddress'] === true,
          outageTimeoutMs: header['outageTimeoutMs'] as number | undefined,
          connectTimeoutMs: header['connectTimeoutMs'] as number | undefined,
        });
        const { streamId, token } = this.streams.add(connection);
        this.watch(streamId, connection);
        return { header: { streamId, token, remote: connection.remote, localSid: connection.localSid } };
      }
      case 'chunk-put': {
        const sizes = header['sizes'] as number[];
        const chunks: Buffer[] = [];
        let at = 0;
        for (const size of sizes) {
          // Views, not copies: the round's chunks live and go together.
          chunks.push(frame.body.subarray(at, at + size));
          at += size;
        }
        if (at !== frame.body.length) throw new Error('chunk sizes do not add up to the body');
        const cids = await this.api.publishChunks(chunks, { noStore: header['noStore'] === true });
        for (const cid of cids) this.published.set(cid.key, cid);
        return { header: { cids } };
      }
      case 'chunk-drop': {
        const cids = header['cids'] as Xid[];
        await this.api.unpublishChunks(cids);
        for (const cid of cids) this.published.delete(cid.key);
        return undefined;
      }
      case 'chunk-get': {
        const id = header['id'] as number;
        const controller = new AbortController();
        this.fetches.set(id, controller);
        try {
          const length = header['length'];
          const timeoutMs = header['timeoutMs'];
          const data = await this.api.fetchChunk(header['cid'] as Xid, header['source'] as Dag, {
            signal: controller.signal,
            length: typeof length === 'number' ? length : undefined,
            timeoutMs: typeof timeoutMs === 'number' ? timeoutMs : undefined,
          });
          return { header: {}, body: data };
        } finally {
          this.fetches.delete(id);
        }
      }
      case 'chunk-cancel':
        this.fetches.get(header['getId'] as number)?.abort();
        return undefined;
      case 'unbind': {
        const key = (header['sid'] as Xid).key;
        await this.datagrams.get(key)?.close();
        this.datagrams.delete(key);
        return undefined;
      }
      default:
        throw new Error(`unknown API operation "${String(op)}"`);
    }
  }

  /** Tells the client what happens to a connection that its data socket cannot carry (errors, moves). */
  private watch(streamId: number, connection: StreamConnection): void {
    connection.on('error', (error) => {
      this.logger.warn('stream.error', { streamId, remote: connection.remote.toString(), reason: errorMessage(error) });
      this.send({ event: 'stream-error', streamId, code: isXmigError(error) ? error.code : 'ERR_CONNECTION', message: errorMessage(error) });
    });
    connection.on('path', (remote: Dag) => this.send({ event: 'stream-path', streamId, remote }));
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const controller of this.pings.values()) controller.abort();
    // Nobody is left to take these chunks: stop asking for them.
    for (const controller of this.fetches.values()) controller.abort();
    this.fetches.clear();
    if (this.published.size > 0) await this.api.unpublishChunks([...this.published.values()]).catch(() => undefined);
    this.published.clear();
    for (const cleanup of this.cleanups.splice(0)) await cleanup();
    this.socket.destroy();
  }
}

export class ApiServer {
  private server: Server | undefined;
  private readonly sessions = new Set<ClientSession>();
  private readonly streams = new PendingStreams();
  private readonly dataSockets = new Set<Socket>();
  /** Connected, first frame not yet seen: stop() must end these too, or server.close() waits on them. */
  private readonly undecided = new Set<Socket>();
  private readonly logger: Logger;

  constructor(
    private readonly api: NodeApi,
    readonly path: string,
    logger?: Logger,
  ) {
    this.logger = logger ?? silentLogger();
  }

  async start(): Promise<void> {
    rmSync(this.path, { force: true });
    // Half-open: a STREAM data socket whose writer ended may still carry the reply.
    const server = createServer({ allowHalfOpen: true }, (socket) => this.accept(socket));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.path, () => {
        server.off('error', reject);
        resolve();
      });
    });
    chmodSync(this.path, 0o600);
    this.server = server;
  }

  /** The first frame decides: `attach` makes a STREAM data socket, anything else a control session. */
  private accept(socket: Socket): void {
    const decoder = new FrameDecoder();
    socket.on('error', () => socket.destroy());
    // Half-open sockets do not close by themselves: a client that ends before its first frame is done.
    const onEnd = (): void => void socket.destroy();
    socket.once('end', onEnd);
    this.undecided.add(socket);
    socket.once('close', () => this.undecided.delete(socket));
    const onFirst = (chunk: Buffer): void => {
      let frames: Frame[];
      try {
        // Only the first frame: on a data socket, raw stream bytes may follow it.
        frames = decoder.push(chunk, 1);
      } catch {
        socket.destroy();
        return;
      }
      if (frames.length === 0) return;
      socket.off('data', onFirst);
      socket.off('end', onEnd);
      this.undecided.delete(socket);
      const first = frames[0]!;
      if (first.header['op'] === 'attach') {
        const connection = this.streams.take(first.header['streamId'], first.header['token']);
        if (!connection) {
          socket.destroy();
          return;
        }
        this.dataSockets.add(socket);
        socket.on('close', () => this.dataSockets.delete(socket));
        splice(socket, connection, decoder.rest());
        return;
      }
      const session = new ClientSession(socket, this.api, this.logger, decoder, this.streams);
      this.sessions.add(session);
      socket.on('close', () => this.sessions.delete(session));
      let rest: Frame[] = [];
      try {
        rest = decoder.push(Buffer.alloc(0));
      } catch {
        socket.destroy();
        return;
      }
      session.handleFrames([...frames, ...rest]);
    };
    socket.on('data', onFirst);
  }

  async stop(): Promise<void> {
    for (const socket of this.undecided) socket.destroy();
    this.undecided.clear();
    for (const socket of this.dataSockets) socket.destroy();
    this.dataSockets.clear();
    this.streams.clear();
    for (const session of this.sessions) await session.close();
    this.sessions.clear();
    const server = this.server;
    this.server = undefined;
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
    rmSync(this.path, { force: true });
  }
}

