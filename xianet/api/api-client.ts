/** The application API of a node reached over its Unix socket. */
import { connect, Socket } from 'node:net';
import { Dag } from '../../shared/dag.js';
import { XmigError, type XmigErrorCode } from '../../shared/errors.js';
import type { Xid } from '../../shared/xid.js';
import { MAX_KEPT_REPLIES, type PingOptions, type PingReply, type PingSummary } from '../xping.js';
import { encodeFrame, encodeFrameParts, FrameDecoder, writeFrame, type Header } from './api-frames.js';
import { fromWire, toWire } from './api-json.js';
import type {
  ConnectOptions,
  Datagram,
  DatagramSocket,
  FetchChunkOptions,
  NodeApi,
  NodeEventName,
  NodeEvents,
  NodeInfo,
  StreamConnection,
  StreamServer,
} from './node-api.js';

/** A STREAM connection carried by its own socket to the node (see api-frames.ts). */
class ApiStream extends Socket implements StreamConnection {
  constructor(
    public remote: Dag,
    readonly localSid: Xid,
  ) {
    super({ allowHalfOpen: true });
  }
}

interface Pending {
  resolve: (value: { header: Header; body: Buffer }) => void;
  reject: (error: Error) => void;
}

export class NodeClient implements NodeApi {
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private readonly eventListeners = new Map<string, Set<(payload: unknown) => void>>();
  private readonly datagramListeners = new Map<string, Set<(d: Datagram) => void>>();
  private readonly pingListeners = new Map<number, (reply: PingReply) => void>();
  private readonly streams = new Map<number, ApiStream>();
  private readonly streamServers = new Map<string, Set<(connection: StreamConnection) => void>>();
  private readonly decoder = new FrameDecoder();
  private closed = false;
  /** Why the node disconnected us, when it said (a refusal for a bound). */
  private refusal: string | undefined;

  private constructor(
    private readonly socket: Socket,
    readonly path: string,
  ) {
    socket.on('close', () =>
      this.failAll(
        this.refusal
          ? new XmigError('ERR_REFUSED', `node API at ${path} refused this client: ${this.refusal}`)
          : new XmigError('ERR_CONNECTION', `node API socket ${path} closed`),
      ),
    );
    socket.on('error', () => socket.destroy());
  }

  private onRead(bytes: Buffer): void {
    const result = this.decoder.pushBorrowed(bytes);
    if (result.fatal) {
      this.socket.destroy();
      return;
    }
    for (const frame of result.frames) {
      let header: Header;
      try {
        header = fromWire(frame.header) as Header;
      } catch {
        continue; // a value the node should not have sent: not worth dying for
      }
      this.onFrame(header, frame.body);
    }
  }

  /** Connects to a node's API socket. */
  static async connect(path: string, timeoutMs = 5000): Promise<NodeClient> {
    // Reads land in one reused buffer and are copied once into their frame: chunks of
    // a migration arrive here at hundreds of MB/s, and a fresh buffer per read (the
    // default) costs the garbage collector more than the copy.
    const readBuffer = Buffer.allocUnsafe(256 * 1024);
    const socket = connect({
      path,
      onread: {
        buffer: readBuffer,
        callback: (bytes) => {
          client.onRead(readBuffer.subarray(0, bytes));
          return true;
        },
      },
    });
    const client = new NodeClient(socket, path);
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new XmigError('ERR_TIMEOUT', `no answer from the node API at ${path} within ${timeoutMs} ms`));
      }, timeoutMs);
      socket.once('connect', () => {
        clearTimeout(timer);
        resolve();
      });
      socket.once('error', (error) => {
        clearTimeout(timer);
        reject(new XmigError('ERR_UNREACHABLE', `cannot reach the node API at ${path}: ${error.message}`, { cause: error }));
      });
    });
    return client;
  }

  private failAll(error: Error): void {
    this.closed = true;
    for (const pending of this.pending.values()) pending.reject(error);
    this.pending.clear();
  }

  private onFrame(header: Header, body: Buffer): void {
    if (typeof header['id'] === 'number') {
      const pending = this.pending.get(header['id']);
      if (!pending) return;
      this.pending.delete(header['id']);
      if (header['ok']) pending.resolve({ header, body });
      else {
        const error = header['error'] as { code: XmigErrorCode; message: string };
        pending.reject(new XmigError(error.code, error.message));
      }
      return;
    }
    const event = header['event'];
    if (event === 'refused') {
      this.refusal = String(header['message']);
    } else if (event === 'datagram') {
      const sid = header['sid'] as Xid;
      for (const listener of this.datagramListeners.get(sid.key) ?? []) {
        listener({ data: body, from: header['from'] as Dag, port: header['port'] as number });
      }
    } else if (event === 'connection') {
      const sid = header['sid'] as Xid;
      const listeners = this.streamServers.get(sid.key);
      if (!listeners) return;
      const stream = this.attach(header['streamId'] as number, header['token'] as string, header['remote'] as Dag, header['localSid'] as Xid);
      for (const listener of listeners) listener(stream);
    } else if (event === 'stream-error') {
      const stream = this.streams.get(header['streamId'] as number);
      stream?.destroy(new XmigError(header['code'] as XmigErrorCode, header['message'] as string));
    } else if (event === 'stream-path') {
      const stream = this.streams.get(header['streamId'] as number);
      if (stream) {
        stream.remote = header['remote'] as Dag;
        stream.emit('path', stream.remote);
      }
    } else if (event === 'ping-result') {
      this.pingListeners.get(header['pingId'] as number)?.(header['reply'] as PingReply);
    } else if (typeof event === 'string') {
      for (const listener of this.eventListeners.get(event) ?? []) listener(header['payload']);
    }
  }

  private request(header: Header, body: readonly Uint8Array[] = [], id = this.nextId++): Promise<{ header: Header; body: Buffer }> {
    if (this.closed) return Promise.reject(new XmigError('ERR_CONNECTION', `node API socket ${this.path} is closed`));
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      writeFrame(this.socket, encodeFrameParts(toWire({ ...header, id }) as Header, body));
    });
  }

  async info(): Promise<NodeInfo> {
    return (await this.request({ op: 'info' })).header['info'] as NodeInfo;
  }

  async on<E extends NodeEventName>(event: E, listener: (payload: NodeEvents[E]) => void): Promise<() => void> {
    let listeners = this.eventListeners.get(event);
    if (!listeners) {
      listeners = new Set();
      this.eventListeners.set(event, listeners);
      await this.request({ op: 'subscribe', event });
    }
    const wrapped = listener as (payload: unknown) => void;
    listeners.add(wrapped);
    return () => listeners.delete(wrapped);
  }

  async solicitBeacon(): Promise<void> {
    await this.request({ op: 'solicit' });
  }

  async announce(): Promise<void> {
    await this.request({ op: 'announce' });
  }

  async ping(dst: Dag, options: PingOptions = {}): Promise<PingSummary> {
    const id = this.nextId++;
    // The node sends every reply as an event and leaves them out of the summary (a long
    // ping's would not fit in a frame): they are put back here, in the order sent.
    const replies: PingReply[] = [];
    this.pingListeners.set(id, (reply) => {
      replies.push(reply);
      if (replies.length > 2 * MAX_KEPT_REPLIES) replies.splice(0, replies.length - MAX_KEPT_REPLIES);
      options.onResult?.(reply);
    });
    const onAbort = (): void => void this.request({ op: 'cancel', pingId: id }).catch(() => undefined);
    options.signal?.addEventListener('abort', onAbort, { once: true });
    try {
      const { count, intervalMs, timeoutMs, size } = options;
      const response = await this.request({ op: 'ping', dst, count, intervalMs, timeoutMs, size }, [], id);
      const summary = response.header['summary'] as PingSummary;
      if (response.header['repliesAsEvents'] !== true) return summary;
      return { ...summary, replies: replies.sort((a, b) => a.seq - b.seq).slice(-MAX_KEPT_REPLIES) };
    } finally {
      this.pingListeners.delete(id);
      options.signal?.removeEventListener('abort', onAbort);
    }
  }

  async bindDatagram(sid?: Xid): Promise<DatagramSocket> {
    const response = await this.request({ op: 'bind', sid });
    const bound = response.header['sid'] as Xid;
    const listeners = new Set<(d: Datagram) => void>();
    this.datagramListeners.set(bound.key, listeners);
    return {
      sid: bound,
      // Asked each time: the node's AD changes when it moves.
      address: async () => {
        const { ad, hid } = await this.info();
        return ad ? Dag.hostAddress(ad, hid, bound) : Dag.chain(hid, bound);
      },
      send: async (dst, data) => void (await this.request({ op: 'send', sid: bound, dst }, [data])),
      sendOnLink: async (port, dst, data) => void (await this.request({ op: 'send', sid: bound, dst, port }, [data])),
      onMessage: (listener) => void listeners.add(listener),
      close: async () => {
        this.datagramListeners.delete(bound.key);
        await this.request({ op: 'unbind', sid: bound });
      },
    };
  }

  /** Opens the data socket of a STREAM connection and claims it with its token. */
  private attach(streamId: number, token: string, remote: Dag, localSid: Xid): ApiStream {
    const stream = new ApiStream(remote, localSid);
    const claim = encodeFrame({ op: 'attach', streamId, token });
    stream.connect(this.path);
    let claimed = false;
    stream.write(claim, (error) => (claimed = !error));
    this.streams.set(streamId, stream);
    stream.once('close', () => {
      this.streams.delete(streamId);
      // Destroyed before its claim reached the node (a listener that refused the connection
      // at once, a connect aborted as it opened): the node would hold the STREAM until its
      // attach deadline and the peer wait as long. Claim it on a socket of its own and end
      // that at once, so the node ends the STREAM now.
      if (!claimed && !this.closed) {
        const late = connect(this.path);
        late.on('error', () => undefined);
        late.end(claim);
      }
    });
    return stream;
  }

  async listen(sid?: Xid): Promise<StreamServer> {
    const response = await this.request({ op: 'listen', sid });
    const bound = response.header['sid'] as Xid;
    const listeners = new Set<(connection: StreamConnection) => void>();
    this.streamServers.set(bound.key, listeners);
    return {
      sid: bound,
      address: async () => {
        const { ad, hid } = await this.info();
        return ad ? Dag.hostAddress(ad, hid, bound) : Dag.chain(hid, bound);
      },
      onConnection: (listener) => void listeners.add(listener),
      close: async () => {
        this.streamServers.delete(bound.key);
        await this.request({ op: 'unlisten', sid: bound }).catch(() => undefined);
      },
    };
  }

  async connect(dst: Dag, options: ConnectOptions = {}): Promise<StreamConnection> {
    const { signal } = options;
    const aborted = (): XmigError => new XmigError('ERR_CONNECTION', `connect to ${dst} aborted`);
    if (signal?.aborted) throw aborted();
    const id = this.nextId++;
    const response = this.request(
      {
        op: 'connect',
        dst,
        pinPeerAddress: options.pinPeerAddress ?? false,
        outageTimeoutMs: options.outageTimeoutMs,
        connectTimeoutMs: options.connectTimeoutMs,
      },
      [],
      id,
    );
    const open = (header: Header): ApiStream =>
      this.attach(header['streamId'] as number, header['token'] as string, header['remote'] as Dag, header['localSid'] as Xid);
    if (!signal) return open((await response).header);
    // Aborted here: the node is told to stop the handshake; a connection it had already
    // opened is attached and closed at once rather than left waiting for its data socket.
    let onAbort: (() => void) | undefined;
    const abort = new Promise<never>((_, reject) => {
      onAbort = () => {
        reject(aborted());
        void this.request({ op: 'connect-cancel', connectId: id }).catch(() => undefined);
        response.then((late) => open(late.header).destroy(), () => undefined);
      };
      signal.addEventListener('abort', onAbort, { once: true });
    });
    response.catch(() => undefined);
    try {
      return open((await Promise.race([response, abort])).header);
    } finally {
      signal.removeEventListener('abort', onAbort!);
    }
  }

  async publishChunks(chunks: Buffer[], options: { noStore?: boolean } = {}): Promise<Xid[]> {
    const response = await this.request({ op: 'chunk-put', sizes: chunks.map((c) => c.length), noStore: options.noStore === true }, chunks);
    return response.header['cids'] as Xid[];
  }

  async unpublishChunks(cids: Xid[]): Promise<void> {
    await this.request({ op: 'chunk-drop', cids });
  }

  async fetchChunk(cid: Xid, source: Dag, options: FetchChunkOptions = {}): Promise<Buffer> {
    const { signal, length, timeoutMs } = options;
    if (signal?.aborted) throw new XmigError('ERR_CHUNK', `fetch of ${cid.short} aborted`);
    const id = this.nextId++;
    const response = this.request({ op: 'chunk-get', cid, source, length, timeoutMs }, [], id);
    if (!signal) return (await response).body;
    // Cancelled here: the node is told to stop fetching, and the caller does not wait for it.
    let onAbort: (() => void) | undefined;
    const aborted = new Promise<never>((_, reject) => {
      onAbort = () => {
        reject(new XmigError('ERR_CHUNK', `fetch of ${cid.short} aborted`));
        void this.request({ op: 'chunk-cancel', getId: id }).catch(() => undefined);
      };
      signal.addEventListener('abort', onAbort, { once: true });
    });
    response.catch(() => undefined);
    try {
      return (await Promise.race([response, aborted])).body;
    } finally {
      signal.removeEventListener('abort', onAbort!);
    }
  }

  /** Ends the connection; a node that does not take the end within `timeoutMs` is cut off. */
  async close(timeoutMs = 2000): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, timeoutMs);
      this.socket.end(() => {
        clearTimeout(timer);
        resolve();
      });
    });
    this.socket.destroy();
  }
}
