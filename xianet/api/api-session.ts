/**
 * One client of the application API: its requests checked against api-schema.ts and
 * answered (a typed error for a bad one, never a thrown one), what it opened (bound
 * SIDs, listeners, subscriptions, pings, fetches, published chunks) released when it
 * goes, and the work it can make the node do bounded:
 *
 *  - requests in flight: at most `maxInFlightPerSession`; beyond, reading pauses;
 *  - replies and events queued toward it: beyond `writeSoftBytes` reading pauses and
 *    events are shed (counted), beyond `writeHardBytes` the client is disconnected;
 *  - DGRAM sockets, listeners and pings it holds: capped, refusals answered ERR_REFUSED.
 */
import type { Socket } from 'node:net';
import { BadRequestError, errorMessage, isXmigError, XmigError } from '../../shared/errors.js';
import type { Refusals } from '../../shared/limits.js';
import type { Logger } from '../../shared/logger.js';
import type { Xid } from '../../shared/xid.js';
import type { Refusal, FrameReader } from './api-frame-reader.js';
import { encodeFrameParts, writeFrame, type DecodeResult, type Frame, type Header } from './api-frames.js';
import { toWire } from './api-json.js';
import { ChunkMemory } from '../chunk/chunk-memory.js';
import type { ApiLimits } from './api-limits.js';
import { parseRequest, type ApiRequest } from './api-schema.js';
import type { PendingStreams } from './api-stream-sockets.js';
import type { DatagramSocket, NodeApi, NodeEventName, StreamConnection, StreamServer } from './node-api.js';

/**
 * A reply's header and body (one buffer, or the pieces it is made of: written as they
 * are), and what to do once the socket is done with the body (or it was never sent).
 */
type Result = { header?: Header; body?: Buffer | Buffer[]; written?: () => void } | undefined;

/**
 * A session's chunk memory: slots of the mover's chunk size, at most this many lent at once
 * (the fetcher's window and the client's replies: 64 MiB each). Longer chunks, and any
 * past the cap, come as their datagrams.
 */
const LENT_CHUNK_BYTES = 1024 * 1024;
const MAX_LENT_CHUNKS = 128;

function refused(refusals: Refusals, resource: string, message: string): XmigError {
  refusals.refuse(resource, 'cap');
  return new XmigError('ERR_REFUSED', message);
}

/**
 * Tells a client why it is disconnected (an `event: "refused"` frame) and closes: at
 * once when the frame is flushed, or after a second for a client that does not read.
 */
export function sayRefusedAndClose(socket: Socket, message: string): void {
  if (socket.destroyed) return;
  socket.pause();
  const timer = setTimeout(() => socket.destroy(), 1000);
  timer.unref();
  socket.once('close', () => clearTimeout(timer));
  socket.end(encodeFrameParts({ event: 'refused', code: 'ERR_REFUSED', message })[0], () => socket.destroy());
}

export class ApiSession {
  private readonly cleanups: Array<() => void | Promise<void>> = [];
  private readonly datagrams = new Map<string, DatagramSocket>();
  private readonly servers = new Map<string, StreamServer>();
  private readonly subscriptions = new Set<NodeEventName>();
  /** Chunks this client published (they go when it does, if it did not drop them). */
  private readonly published = new Map<string, Xid>();
  /** Cancellable requests in progress, by request id. */
  private readonly pings = new Map<number, AbortController>();
  private readonly connects = new Map<number, AbortController>();
  private readonly fetches = new Map<number, AbortController>();
  private inFlight = 0;
  /** Chunk-sized memory its chunk-gets are assembled in, filled again once each reply is written. */
  private readonly chunkMemory = new ChunkMemory(LENT_CHUNK_BYTES);
  /** Frames read while the session was at its in-flight cap. */
  private readonly backlog: Frame[] = [];
  private writePaused = false;
  private closed = false;

  constructor(
    private readonly socket: Socket,
    private readonly api: NodeApi,
    private readonly reader: FrameReader,
    private readonly streams: PendingStreams,
    private readonly limits: ApiLimits,
    private readonly refusals: Refusals,
    private readonly logger: Logger,
  ) {
    socket.on('data', (chunk: Buffer) => this.take(this.reader.push(chunk)));
    socket.on('end', () => socket.destroy());
    socket.on('close', () => void this.close());
    socket.on('drain', () => {
      if (!this.writePaused) return;
      this.writePaused = false;
      this.updateReading();
    });
  }

  get closedAlready(): boolean {
    return this.closed;
  }

  /** Decoded input: frames to run, malformed ones to count. */
  take(result: DecodeResult | undefined): void {
    if (!result) return; // refused by the reader (and closed by whoever owns it)
    for (const why of result.malformed) {
      this.refusals.refuse('api-frame', 'malformed');
      this.logger.debug('api.frame-malformed', { reason: why });
    }
    for (const frame of result.frames) {
      if (this.inFlight >= this.limits.maxInFlightPerSession) this.backlog.push(frame);
      else this.dispatch(frame);
    }
    this.updateReading();
  }

  /** Refused for a bound: told why (best effort), then disconnected. */
  refuse(refusal: Refusal): void {
    this.refusals.refuse(refusal.resource, refusal.reason);
    this.logger.warn('api.client-refused', { resource: refusal.resource, reason: refusal.reason, detail: refusal.message });
    sayRefusedAndClose(this.socket, refusal.message);
  }

  /** Reading stops while the session is at its in-flight cap or its client is not reading replies. */
  private updateReading(): void {
    if (this.closed) return;
    const hold = this.writePaused || this.backlog.length > 0;
    if (hold) this.socket.pause();
    else this.socket.resume();
  }

  private send(header: Header, body: Uint8Array | readonly Uint8Array[] | undefined, kind: 'reply' | 'event', written?: () => void): void {
    if (this.closed || this.socket.destroyed) return written?.();
    const queued = this.socket.writableLength;
    if (kind === 'event' && queued >= this.limits.writeSoftBytes) {
      // The client is not keeping up: events are dropped (counted), replies still go.
      this.refusals.refuse('api-event', 'budget');
      return;
    }
    let parts: Buffer[];
    try {
      parts = encodeFrameParts(toWire(header) as Header, body === undefined ? [] : Array.isArray(body) ? body : [body as Uint8Array]);
    } catch (error) {
      // A header no frame can carry: the request gets a typed error instead, an event is
      // dropped; counted either way, and the session (and the node) go on.
      this.refusals.refuse(kind === 'reply' ? 'api-reply' : 'api-event', 'cap');
      this.logger.warn('api.reply-too-large', { kind, reason: errorMessage(error) });
      if (kind === 'reply' && typeof header['id'] === 'number') {
        parts = encodeFrameParts({ id: header['id'], ok: false, error: { code: 'ERR_REFUSED', message: errorMessage(error) } });
      } else return written?.();
      written?.();
      written = undefined;
    }
    writeFrame(this.socket, parts, written);
    const after = this.socket.writableLength;
    if (after > this.limits.writeHardBytes) {
      this.refuse({ resource: 'api-write', reason: 'budget', message: `more than ${this.limits.writeHardBytes} bytes queued toward a client that does not read` });
      return;
    }
    if (after >= this.limits.writeSoftBytes && !this.writePaused) {
      this.writePaused = true;
      this.updateReading();
    }
  }

  private event(header: Header, body?: Uint8Array): void {
    this.send(header, body, 'event');
  }

  private dispatch(frame: Frame): void {
    const parsed = parseRequest(frame.header);
    if (!parsed.ok) {
      this.refusals.refuse('api-request', 'malformed');
      if (parsed.id !== undefined) this.send({ id: parsed.id, ok: false, error: parsed.error }, undefined, 'reply');
      return;
    }
    const { request } = parsed;
    this.inFlight++;
    this.handle(request, frame.body)
      .then(
        (result) => {
          if (request.id !== undefined) this.send({ id: request.id, ok: true, ...(result?.header ?? {}) }, result?.body, 'reply', result?.written);
          else result?.written?.();
        },
        (error: unknown) => {
          if (!isXmigError(error)) this.logger.warn('api.request-failed', { op: request.op, reason: errorMessage(error) });
          if (request.id === undefined) return;
          const field = error instanceof BadRequestError ? { field: error.field } : {};
          this.send({ id: request.id, ok: false, error: { code: isXmigError(error) ? error.code : 'ERR_INTERNAL', message: errorMessage(error), ...field } }, undefined, 'reply');
        },
      )
      .finally(() => {
        this.inFlight--;
        while (this.backlog.length > 0 && this.inFlight < this.limits.maxInFlightPerSession) this.dispatch(this.backlog.shift()!);
        this.updateReading();
      });
  }

  /** Runs a checked request. Fields are as the schema says; nothing here trusts more. */
  private async handle(request: ApiRequest, body: Buffer): Promise<Result> {
    switch (request.op) {
      case 'info':
        return { header: { info: await this.api.info() } };
      case 'subscribe': {
        const event = request.event;
        if (this.subscriptions.has(event)) return undefined;
        this.subscriptions.add(event);
        const off = await this.api.on(event, (payload) => this.event({ event, payload }));
        this.cleanups.push(off);
        return undefined;
      }
      case 'solicit':
        await this.api.solicitBeacon();
        return undefined;
      case 'announce':
        await this.api.announce();
        return undefined;
      case 'ping':
        return this.ping(request);
      case 'cancel':
        this.pings.get(request.pingId)?.abort();
        return undefined;
      case 'bind': {
        if (this.datagrams.size >= this.limits.maxDatagramSockets) throw refused(this.refusals, 'api-request', `at most ${this.limits.maxDatagramSockets} DGRAM sockets per client`);
        const socket = await this.api.bindDatagram(request.sid);
        this.datagrams.set(socket.sid.key, socket);
        socket.onMessage(({ data, from, port }) => this.event({ event: 'datagram', sid: socket.sid, from, port }, data));
        this.cleanups.push(() => socket.close());
        return { header: { sid: socket.sid, address: await socket.address() } };
      }
      case 'send': {
        const socket = this.datagrams.get(request.sid.key);
        if (!socket) throw new BadRequestError('sid', `send: field "sid": ${request.sid} is not bound by this client`);
        if (request.port !== undefined) await socket.sendOnLink(request.port, request.dst, body);
        else await socket.send(request.dst, body);
        return undefined;
      }
      case 'unbind': {
        const key = request.sid.key;
        await this.datagrams.get(key)?.close();
        this.datagrams.delete(key);
        return undefined;
      }
      case 'listen': {
        if (this.servers.size >= this.limits.maxListeners) throw refused(this.refusals, 'api-request', `at most ${this.limits.maxListeners} STREAM listeners per client`);
        const server = await this.api.listen(request.sid);
        this.servers.set(server.sid.key, server);
        server.onConnection((connection) => this.offer(server.sid, connection));
        this.cleanups.push(() => server.close());
        return { header: { sid: server.sid } };
      }
      case 'unlisten': {
        const key = request.sid.key;
        await this.servers.get(key)?.close();
        this.servers.delete(key);
        return undefined;
      }
      case 'connect':
        return this.connect(request);
      case 'connect-cancel':
        this.connects.get(request.connectId)?.abort();
        return undefined;
      case 'chunk-put': {
        const chunks: Buffer[] = [];
        let at = 0;
        for (const size of request.sizes) {
          // Views, not copies: the round's chunks live and go together.
          chunks.push(body.subarray(at, at + size));
          at += size;
        }
        if (at !== body.length) throw new BadRequestError('sizes', `chunk-put: field "sizes": they add up to ${at} bytes, the body has ${body.length}`);
        const cids = await this.api.publishChunks(chunks, { noStore: request.noStore === true });
        for (const cid of cids) this.published.set(cid.key, cid);
        return { header: { cids } };
      }
      case 'chunk-drop': {
        await this.api.unpublishChunks(request.cids);
        for (const cid of request.cids) this.published.delete(cid.key);
        return undefined;
      }
      case 'chunk-get': {
        const id = request.id ?? -1;
        const controller = new AbortController();
        if (id >= 0) this.fetches.set(id, controller);
        try {
          // In the node (LocalNodeApi), a chunk of known length is assembled in memory this
          // session fills again once the reply is written (xianet/chunk/chunk-memory.ts says why).
          const lend = this.api.fetchChunkPieces !== undefined && request.length !== undefined && request.length > 0 && request.length <= LENT_CHUNK_BYTES && this.chunkMemory.lent < MAX_LENT_CHUNKS;
          const into = lend ? this.chunkMemory.lend(request.length!) : undefined;
          const options = { signal: controller.signal, length: request.length, timeoutMs: request.timeoutMs, into };
          let data: Buffer | Buffer[];
          try {
            // Otherwise the chunk as the datagrams brought it, into the reply's writev: never joined here.
            data = this.api.fetchChunkPieces ? await this.api.fetchChunkPieces(request.cid, request.source, options) : await this.api.fetchChunk(request.cid, request.source, options);
          } catch (error) {
            if (into) this.chunkMemory.giveBack(into);
            throw error;
          }
          if (!into) return { header: {}, body: data };
          const lent = ChunkMemory.holds(into, data);
          if (!lent) this.chunkMemory.giveBack(into);
          return { header: {}, body: data, written: lent ? () => this.chunkMemory.giveBack(into) : undefined };
        } finally {
          if (this.fetches.get(id) === controller) this.fetches.delete(id);
        }
      }
      case 'chunk-cancel':
        this.fetches.get(request.getId)?.abort();
        return undefined;
    }
  }

  private async ping(request: Extract<ApiRequest, { op: 'ping' }>): Promise<Result> {
    if (this.pings.size >= this.limits.maxPings) throw refused(this.refusals, 'api-request', `at most ${this.limits.maxPings} pings at once per client`);
    const id = request.id ?? -1;
    const controller = new AbortController();
    if (id >= 0) this.pings.set(id, controller);
    try {
      const summary = await this.api.ping(request.dst, {
        count: request.count,
        intervalMs: request.intervalMs,
        timeoutMs: request.timeoutMs,
        size: request.size,
        signal: controller.signal,
        onResult: (reply) => this.event({ event: 'ping-result', pingId: id, reply }),
      });
      // Each reply went to the client as its own ping-result event; the summary's copy of
      // them (up to 100,000) would not fit in one frame's header. The client puts them back.
      return { header: { summary: { ...summary, replies: [] }, repliesAsEvents: true } };
    } finally {
      if (this.pings.get(id) === controller) this.pings.delete(id);
      controller.abort(); // a ping that failed to start must not be left running
    }
  }

  private async connect(request: Extract<ApiRequest, { op: 'connect' }>): Promise<Result> {
    const id = request.id ?? -1;
    const controller = new AbortController();
    if (id >= 0) this.connects.set(id, controller);
    let connection: StreamConnection;
    try {
      connection = await this.api.connect(request.dst, {
        pinPeerAddress: request.pinPeerAddress === true,
        outageTimeoutMs: request.outageTimeoutMs,
        connectTimeoutMs: request.connectTimeoutMs,
        signal: controller.signal,
      });
    } finally {
      if (this.connects.get(id) === controller) this.connects.delete(id);
    }
    if (this.closed) {
      connection.destroy();
      throw new XmigError('ERR_CONNECTION', 'the client went away');
    }
    const ticket = this.streams.add(connection);
    if (!ticket) {
      connection.destroy();
      throw new XmigError('ERR_REFUSED', 'too many STREAM connections wait for their data socket');
    }
    this.watch(ticket.streamId, connection);
    return { header: { ...ticket, remote: connection.remote, localSid: connection.localSid } };
  }

  /** A connection accepted on one of this client's listeners. */
  private offer(sid: Xid, connection: StreamConnection): void {
    const ticket = this.closed ? undefined : this.streams.add(connection);
    if (!ticket || this.socket.writableLength >= this.limits.writeSoftBytes) {
      if (ticket) this.refusals.refuse('api-event', 'budget');
      connection.destroy();
      return;
    }
    this.watch(ticket.streamId, connection);
    this.event({ event: 'connection', sid, ...ticket, remote: connection.remote, localSid: connection.localSid });
  }

  /** Tells the client what happens to a connection that its data socket cannot carry (errors, moves). */
  private watch(streamId: number, connection: StreamConnection): void {
    connection.on('error', (error) => {
      this.logger.warn('stream.error', { streamId, remote: connection.remote.toString(), reason: errorMessage(error) });
      this.event({ event: 'stream-error', streamId, code: isXmigError(error) ? error.code : 'ERR_CONNECTION', message: errorMessage(error) });
    });
    connection.on('path', (remote) => this.event({ event: 'stream-path', streamId, remote }));
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.reader.release();
    this.backlog.length = 0;
    for (const controller of this.pings.values()) controller.abort();
    for (const controller of this.connects.values()) controller.abort();
    // Nobody is left to take these chunks: stop asking for them.
    for (const controller of this.fetches.values()) controller.abort();
    this.fetches.clear();
    if (this.published.size > 0) await this.api.unpublishChunks([...this.published.values()]).catch(() => undefined);
    this.published.clear();
    for (const cleanup of this.cleanups.splice(0)) await Promise.resolve().then(cleanup).catch(() => undefined);
    this.socket.destroy();
  }
}
