/**
 * A client of Click's ControlSocket protocol, and on top of it the route-table
 * operations xia-core's XIARouter performs (daemons/common/XIARouter.cc): the
 * element `<router>/xrc/n/proc/rt_<TYPE>`, write handlers add4/set4/remove taking
 * `XID,port,nexthop,flags`, read handler list. It drives an `xmig node` and a real
 * xia-core router alike, over a Unix socket or TCP.
 *
 * One connection, requests one at a time in call order. Every request has a deadline
 * (and may take an AbortSignal); a connection the server dropped is replaced on the
 * next request, and a request that found its kept connection dead before any reply
 * byte arrived is sent once more on a new one. `stop()` (or `close()`) says QUIT on
 * the open connection, waits briefly for Goodbye, and leaves no socket or timer.
 */
import { readFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { errorMessage, XmigError } from './errors.js';
import { ClickReplyParser, DEFAULT_REPLY_LIMITS, replyCarriesData, type ClickReply, type ReplyLimits } from './click-control-reply.js';
import type { Startable } from './startable.js';
import { Xid } from './xid.js';

export type ControlTarget = { host: string; port: number } | { path: string };

/** A reply with a failure status (>= 300): `status` is Click's code, the message its lines. */
export class ControlError extends XmigError {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super('ERR_CONTROL', message);
  }
}

export type ControlResponse = ClickReply;

/** Parses "host:port", "[v6]:port" or a path into a target. */
export function parseControlTarget(text: string): ControlTarget {
  const match = /^(\[[^\]]+\]|[^/:[\]]+):(\d{1,5})$/.exec(text);
  if (match && Number(match[2]) <= 65535) return { host: match[1]!.replace(/^\[|\]$/g, ''), port: Number(match[2]) };
  return { path: text };
}

export function describeTarget(target: ControlTarget): string {
  return 'path' in target ? target.path : `${target.host.includes(':') ? `[${target.host}]` : target.host}:${target.port}`;
}

export interface ControlClientOptions {
  /** Deadline of each request (from the call, queueing and connecting included); default 5000 ms. */
  timeoutMs?: number;
  /** TCP ports of `xmig node`: a file holding the token that unlocks writes (written to `auth` on connect). */
  tokenFile?: string;
  /** How long stop() waits for Goodbye (default 500 ms). */
  quitTimeoutMs?: number;
  replyLimits?: Partial<ReplyLimits>;
}

export interface RequestOptions {
  signal?: AbortSignal;
  timeoutMs?: number;
}

interface Pending {
  expectData: boolean;
  resolve(reply: ClickReply): void;
  reject(error: Error): void;
}

/** One connection to the control port and its reply parser. */
class Connection {
  readonly parser: ClickReplyParser;
  private pending: Pending | undefined;
  private greetingWaiter: { resolve(): void; reject(error: Error): void } | undefined;
  failure: Error | undefined;
  /** Settles when the socket is closed for good. */
  readonly closed: Promise<void>;

  constructor(
    readonly socket: Socket,
    limits: ReplyLimits,
    private readonly describe: string,
  ) {
    this.parser = new ClickReplyParser(limits);
    this.closed = new Promise((resolve) => socket.once('close', () => resolve()));
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', (error) => this.fail(new XmigError('ERR_UNREACHABLE', `control port ${describe}: ${error.message}`, { cause: error })));
    socket.on('close', () => this.fail(new XmigError('ERR_CONNECTION', `control port ${describe} closed the connection`)));
  }

  get alive(): boolean {
    return this.failure === undefined && !this.socket.destroyed;
  }

  private onData(chunk: Buffer): void {
    this.parser.push(chunk);
    try {
      if (this.greetingWaiter) {
        if (this.parser.takeGreeting() === undefined) return;
        const waiter = this.greetingWaiter;
        this.greetingWaiter = undefined;
        waiter.resolve();
      }
      const pending = this.pending;
      if (!pending) {
        // Bytes nobody asked for: a server that talks out of turn is not followed.
        if (this.parser.takeGreeting() !== undefined && this.parser.buffered > 0) {
          this.fail(new XmigError('ERR_CONTROL', `control port ${this.describe} sent bytes no request asked for`));
        }
        return;
      }
      const reply = this.parser.takeReply(pending.expectData);
      if (!reply) return;
      this.pending = undefined;
      pending.resolve(reply);
    } catch (error) {
      this.fail(error instanceof Error ? error : new Error(String(error)));
    }
  }

  fail(error: Error): void {
    this.failure ??= error;
    this.socket.destroy();
    const pending = this.pending;
    this.pending = undefined;
    pending?.reject(this.failure);
    const greeting = this.greetingWaiter;
    this.greetingWaiter = undefined;
    greeting?.reject(this.failure);
  }

  waitForGreeting(): Promise<void> {
    if (this.failure) return Promise.reject(this.failure);
    if (this.parser.greeting !== undefined) return Promise.resolve();
    return new Promise((resolve, reject) => {
      this.greetingWaiter = { resolve, reject };
    });
  }

  send(bytes: Buffer, expectData: boolean): Promise<ClickReply> {
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      this.pending = { expectData, resolve, reject };
      this.socket.write(bytes);
    });
  }

  /** True if part of the current request's reply has arrived. */
  get replyStarted(): boolean {
    return this.parser.replyStarted;
  }
}

export class ControlClient implements Startable {
  private connection: Connection | undefined;
  private queue: Promise<unknown> = Promise.resolve();
  private stopped = false;
  private readonly timeoutMs: number;
  private readonly limits: ReplyLimits;
  readonly target: ControlTarget;

  constructor(
    target: ControlTarget | string,
    private readonly options: ControlClientOptions = {},
  ) {
    this.target = typeof target === 'string' ? parseControlTarget(target) : target;
    this.timeoutMs = options.timeoutMs ?? 5000;
    this.limits = { ...DEFAULT_REPLY_LIMITS, ...options.replyLimits };
  }

  /** The server's greeting, e.g. "Click::ControlSocket/1.3", once connected. */
  get greeting(): string | undefined {
    return this.connection?.parser.greeting;
  }

  private get describe(): string {
    return describeTarget(this.target);
  }

  /** Connects now (requests connect on their own if this was not called). */
  async start(): Promise<void> {
    await this.request(undefined);
  }

  /** Says QUIT on the open connection, waits briefly for Goodbye, closes it. Idempotent. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    const quit = this.queue.then(async () => {
      const connection = this.connection;
      this.connection = undefined;
      if (!connection) return;
      if (!connection.alive) {
        connection.socket.destroy();
        await connection.closed;
        return;
      }
      const timer = new AbortController();
      const timeout = setTimeout(() => timer.abort(), this.options.quitTimeoutMs ?? 500);
      try {
        await Promise.race([
          connection.send(Buffer.from('QUIT\r\n', 'latin1'), false),
          new Promise((resolve) => timer.signal.addEventListener('abort', resolve, { once: true })),
        ]);
      } catch {
        // gone already: nothing to say goodbye to
      } finally {
        clearTimeout(timeout);
        connection.socket.destroy();
        await connection.closed;
      }
    });
    this.queue = quit.catch(() => undefined);
    await quit.catch(() => undefined);
  }

  close(): Promise<void> {
    return this.stop();
  }

  /** Sends one command line (plus the data of a *DATA command) and reads the whole reply. */
  request(line: string | undefined, data?: string, options: RequestOptions = {}): Promise<ControlResponse> {
    const deadline = performance.now() + (options.timeoutMs ?? this.timeoutMs);
    const run = (): Promise<ControlResponse> => this.run(line, data, deadline, options.signal);
    const result = this.queue.then(run, run);
    this.queue = result.catch(() => undefined);
    return result;
  }

  private async run(line: string | undefined, data: string | undefined, deadline: number, signal: AbortSignal | undefined): Promise<ControlResponse> {
    if (this.stopped) throw new XmigError('ERR_STATE', `control client for ${this.describe} is stopped`);
    signal?.throwIfAborted();
    const bytes = line === undefined ? undefined : Buffer.from(`${line}\r\n${data ?? ''}`, 'latin1');
    const expectData = line !== undefined && replyCarriesData(line);
    for (let attempt = 0; ; attempt++) {
      const reused = this.connection?.alive === true;
      const connection = reused ? this.connection! : await this.connectWithin(deadline, signal);
      if (!bytes) return { status: 200, messages: [], data: undefined };
      try {
        const reply = await this.within(connection.send(bytes, expectData), deadline, signal, connection);
        // After QUIT or CLOSE the server closes: this connection is over, whatever else it says.
        if (/^\s*(QUIT|CLOSE)(\s|$)/i.test(line!)) connection.fail(new XmigError('ERR_CONNECTION', `control port ${this.describe}: closed by ${line}`));
        return reply;
      } catch (error) {
        // A kept connection the server had closed: nothing of this request was answered, so send it again once.
        const retry = reused && attempt === 0 && !connection.replyStarted && connection.failure !== undefined && isXmigError(error, 'ERR_CONNECTION', 'ERR_UNREACHABLE');
        if (!retry) throw error;
      }
    }
  }

  /** Waits for `work` until the deadline or the signal; either ends (and drops) the connection in use. */
  private within<T>(work: Promise<T>, deadline: number, signal: AbortSignal | undefined, connection: Connection | undefined): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const remaining = Math.max(0, deadline - performance.now());
      const end = (error: Error): void => {
        cleanup();
        (connection ?? this.connection)?.fail(error);
        reject(error);
      };
      const timer = setTimeout(() => end(new XmigError('ERR_TIMEOUT', `control port ${this.describe} did not answer in time`)), remaining);
      const onAbort = (): void => end(signal!.reason instanceof Error ? signal!.reason : new XmigError('ERR_STATE', 'control request aborted'));
      signal?.addEventListener('abort', onAbort, { once: true });
      const cleanup = (): void => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
      };
      work.then(
        (value) => {
          cleanup();
          resolve(value);
        },
        (error: unknown) => {
          cleanup();
          reject(error instanceof Error ? error : new Error(String(error)));
        },
      );
    });
  }

  /**
   * Connects before the deadline. A Unix socket whose listen queue is full refuses at
   * once (EAGAIN) — a server under a flood of connections — so that is tried again,
   * waiting a little longer each time, until the deadline.
   */
  private async connectWithin(deadline: number, signal: AbortSignal | undefined): Promise<Connection> {
    for (let wait = 5; ; wait = Math.min(wait * 2, 200)) {
      try {
        return await this.within(this.connect(), deadline, signal, undefined);
      } catch (error) {
        const busy = error instanceof XmigError && (error.cause as NodeJS.ErrnoException | undefined)?.code === 'EAGAIN';
        if (!busy || performance.now() + wait >= deadline) throw error;
        await pause(wait, signal);
      }
    }
  }

  private async connect(): Promise<Connection> {
    const previous = this.connection;
    previous?.socket.destroy();
    const socket = 'path' in this.target ? connect(this.target.path) : connect(this.target.port, this.target.host);
    const connection = new Connection(socket, this.limits, this.describe);
    this.connection = connection;
    await connection.waitForGreeting();
    if (this.options.tokenFile) {
      let token: string;
      try {
        token = readFileSync(this.options.tokenFile, 'utf8').trim();
      } catch (error) {
        connection.fail(new XmigError('ERR_CONFIG', `cannot read control token ${this.options.tokenFile}: ${errorMessage(error)}`));
        throw connection.failure!;
      }
      const reply = await connection.send(Buffer.from(`WRITEDATA auth ${Buffer.byteLength(token, 'latin1')}\r\n${token}`, 'latin1'), false);
      if (reply.status >= 300) {
        const error = new ControlError(reply.status, `control port ${this.describe} refused the token: ${reply.messages.join(' ')}`);
        connection.fail(error);
        throw error;
      }
    }
    return connection;
  }

  private static check(response: ControlResponse): ControlResponse {
    if (response.status >= 300) throw new ControlError(response.status, response.messages.join(' '));
    return response;
  }

  async read(handler: string, options?: RequestOptions): Promise<string> {
    return ControlClient.check(await this.request(`READ ${handler}`, undefined, options)).data ?? '';
  }

  async write(handler: string, argument: string, options?: RequestOptions): Promise<void> {
    // WRITEDATA carries any argument byte for byte (spaces, commas, empty).
    ControlClient.check(await this.request(`WRITEDATA ${handler} ${Buffer.byteLength(argument, 'latin1')}`, argument, options));
  }
}

/** Waits `ms`, or rejects at once when `signal` aborts (its timer cleared either way). */
function pause(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason instanceof Error ? signal.reason : new XmigError('ERR_STATE', 'control request aborted'));
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal!.reason instanceof Error ? signal!.reason : new XmigError('ERR_STATE', 'control request aborted'));
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

function isXmigError(error: unknown, ...codes: string[]): boolean {
  return error instanceof XmigError && codes.includes(error.code);
}

export type RouteType = 'AD' | 'HID' | 'SID' | 'CID' | 'IP';

export interface ListedRoute {
  /** The XID, or "-" for the default route. */
  xid: string;
  port: number;
  /** Next-hop HID, or "" for none. */
  nextHop: string;
  flags: number;
}

/** xia-core's special port of a node's own XIDs in its tables. */
const LOCAL_PORT = -2;
const BROADCAST_HID_TEXT = `HID:${'f'.repeat(40)}`;

/** Parses the text of a table's `list` handler: one "XID,port,nexthop,flags" line per route. */
export function parseRouteList(text: string): ListedRoute[] {
  return text
    .split('\n')
    .filter((line) => line.trim() !== '')
    .map((line) => {
      const [xid = '', port = '', nextHop = '', flags = '0'] = line.split(',');
      return { xid, port: Number(port), nextHop, flags: Number(flags) };
    });
}

/** xia-core's XIARouter operations over a ControlClient. */
export class RouteControl {
  constructor(
    readonly client: ControlClient,
    /** The router's name in Click (the element prefix; the node name for `xmig node`). */
    readonly router: string,
  ) {}

  private table(type: RouteType): string {
    return `${this.router}/xrc/n/proc/rt_${type}`;
  }

  private static typeOf(xid: string): RouteType {
    const type = xid.split(':')[0]!.toUpperCase();
    if (!['AD', 'HID', 'SID', 'CID', 'IP'].includes(type)) throw new XmigError('ERR_CONTROL', `"${xid}" is not an XID of a routed type`);
    return type as RouteType;
  }

  /** add4: fails if the route exists. `xid` is an XID or, with `type`, "-" for the default route. */
  addRoute(xid: string, port: number, nextHop = '', flags = 0, type?: RouteType, options?: RequestOptions): Promise<void> {
    const t = type ?? RouteControl.typeOf(xid);
    return this.client.write(`${this.table(t)}.add4`, `${xid},${port},${nextHop},${flags}`, options);
  }

  /** set4: adds or replaces. */
  setRoute(xid: string, port: number, nextHop = '', flags = 0, type?: RouteType, options?: RequestOptions): Promise<void> {
    const t = type ?? RouteControl.typeOf(xid);
    return this.client.write(`${this.table(t)}.set4`, `${xid},${port},${nextHop},${flags}`, options);
  }

  /** remove ("-": the default route, which Click then sets to port -1). */
  removeRoute(xid: string, type?: RouteType, options?: RequestOptions): Promise<void> {
    const t = type ?? RouteControl.typeOf(xid);
    return this.client.write(`${this.table(t)}.remove`, xid, options);
  }

  async listRoutes(type: RouteType, options?: RequestOptions): Promise<ListedRoute[]> {
    return parseRouteList(await this.client.read(`${this.table(type)}.list`, options));
  }

  /** The route for one XID (not the default), if present. */
  async route(xid: string, options?: RequestOptions): Promise<ListedRoute | undefined> {
    const routes = await this.listRoutes(RouteControl.typeOf(xid), options);
    const wanted = xid.toLowerCase();
    return routes.find((r) => r.xid.toLowerCase() === wanted);
  }

  /**
   * The router's own XID of `type` (its HID, its AD): the one entry of that table on
   * port -2 (local), as both xia-core and `xmig node` keep it. Undefined if there is
   * none; an error if there are several (then say which in the config).
   */
  async ownXid(type: 'HID' | 'AD', options?: RequestOptions): Promise<string | undefined> {
    const local = (await this.listRoutes(type, options)).filter((r) => r.port === LOCAL_PORT && r.xid !== '-' && r.xid.toLowerCase() !== BROADCAST_HID_TEXT);
    if (local.length > 1) {
      throw new XmigError('ERR_CONTROL', `${this.router}'s rt_${type} has ${local.length} local (-2) entries; configure which is the router's ${type}`);
    }
    if (local.length === 0) return undefined;
    try {
      return Xid.parse(local[0]!.xid).toString();
    } catch {
      throw new XmigError('ERR_CONTROL', `${this.router}'s rt_${type} lists "${local[0]!.xid}", which is not an XID`);
    }
  }

  /** The router's HID (see ownXid). */
  async hid(options?: RequestOptions): Promise<string> {
    const hid = await this.ownXid('HID', options);
    if (!hid) throw new XmigError('ERR_CONTROL', `${this.router}'s rt_HID has no local (-2) entry`);
    return hid;
  }

  async ad(options?: RequestOptions): Promise<string | undefined> {
    return this.ownXid('AD', options);
  }
}
