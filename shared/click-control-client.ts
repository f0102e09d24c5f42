/**
 * A client of Click's ControlSocket protocol, and on top of it the route-table
 * operations xia-core's XIARouter performs (daemons/common/XIARouter.cc): the
 * element `<router>/xrc/n/proc/rt_<TYPE>`, write handlers add4/set4/remove taking
 * `XID,port,nexthop,flags`, read handler list. It drives an `xmig node` and a real
 * xia-core router alike.
 */
import { connect, type Socket } from 'node:net';
import { XmigError } from './errors.js';

export type ControlTarget = { host: string; port: number } | { path: string };

export class ControlError extends XmigError {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super('ERR_CONTROL', message);
  }
}

export interface ControlResponse {
  status: number;
  messages: string[];
  data: string | undefined;
}

/** Parses "host:port" or a path into a target. */
export function parseControlTarget(text: string): ControlTarget {
  const match = /^(.*):(\d+)$/.exec(text);
  if (match && !text.startsWith('/')) return { host: match[1]!.replace(/^\[|\]$/g, ''), port: Number(match[2]) };
  return { path: text };
}

export class ControlClient {
  private socket: Socket | undefined;
  private buffer: Buffer = Buffer.alloc(0);
  private waiter: (() => void) | undefined;
  private queue: Promise<unknown> = Promise.resolve();
  private failure: Error | undefined;
  /** The greeting of the server, e.g. "Click::ControlSocket/1.3". */
  greeting: string | undefined;

  constructor(
    readonly target: ControlTarget,
    private readonly timeoutMs = 5000,
  ) {}

  private describe(): string {
    return 'path' in this.target ? this.target.path : `${this.target.host}:${this.target.port}`;
  }

  private async ensureConnected(): Promise<void> {
    if (this.socket && !this.socket.destroyed) return;
    this.buffer = Buffer.alloc(0);
    this.failure = undefined;
    const socket = 'path' in this.target ? connect(this.target.path) : connect(this.target.port, this.target.host);
    this.socket = socket;
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => {
      this.buffer = this.buffer.length ? Buffer.concat([this.buffer, chunk]) : chunk;
      this.waiter?.();
    });
    socket.on('error', (error) => {
      this.failure = new XmigError('ERR_UNREACHABLE', `control port ${this.describe()}: ${error.message}`, { cause: error });
      this.waiter?.();
    });
    socket.on('close', () => {
      this.failure ??= new XmigError('ERR_CONTROL', `control port ${this.describe()} closed the connection`);
      this.waiter?.();
    });
    this.greeting = await this.readLine();
    if (!this.greeting.startsWith('Click::ControlSocket/')) {
      socket.destroy();
      throw new XmigError('ERR_CONTROL', `${this.describe()} is not a Click control socket (said "${this.greeting}")`);
    }
  }

  private async waitFor<T>(take: () => T | undefined): Promise<T> {
    const deadline = Date.now() + this.timeoutMs;
    for (;;) {
      const value = take();
      if (value !== undefined) return value;
      if (this.failure) throw this.failure;
      const remaining = deadline - Date.now();
      if (remaining <= 0) {
        this.socket?.destroy();
        throw new XmigError('ERR_TIMEOUT', `control port ${this.describe()} did not answer within ${this.timeoutMs} ms`);
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, remaining);
        this.waiter = () => {
          clearTimeout(timer);
          this.waiter = undefined;
          resolve();
        };
      });
    }
  }

  private readLine(): Promise<string> {
    return this.waitFor(() => {
      const newline = this.buffer.indexOf(0x0a);
      if (newline < 0) return undefined;
      const line = this.buffer.toString('latin1', 0, newline).replace(/\r$/, '');
      this.buffer = this.buffer.subarray(newline + 1);
      return line;
    });
  }

  private readBytes(length: number): Promise<string> {
    return this.waitFor(() => {
      if (this.buffer.length < length) return undefined;
      const data = this.buffer.toString('latin1', 0, length);
      this.buffer = this.buffer.subarray(length);
      return data;
    });
  }

  /** Sends one command line (plus raw data for *DATA commands) and reads the whole response. */
  request(line: string, data?: string): Promise<ControlResponse> {
    const run = async (): Promise<ControlResponse> => {
      await this.ensureConnected();
      this.socket!.write(`${line}\r\n${data ?? ''}`, 'latin1');
      const messages: string[] = [];
      let status = 0;
      for (;;) {
        const reply = await this.readLine();
        const match = /^(\d{3})([ -])(.*)$/.exec(reply);
        if (!match) throw new XmigError('ERR_CONTROL', `unexpected control-port reply "${reply}"`);
        status = Number(match[1]);
        messages.push(match[3]!);
        if (match[2] === ' ') break;
      }
      let body: string | undefined;
      if (status === 200 && /^(READ|GET|READDATA|READUNTIL|LLRPC)\b/i.test(line)) {
        const header = await this.readLine();
        const match = /^DATA (\d+)$/.exec(header);
        if (!match) throw new XmigError('ERR_CONTROL', `expected "DATA n", got "${header}"`);
        body = await this.readBytes(Number(match[1]));
      }
      return { status, messages, data: body };
    };
    const result = this.queue.then(run, run);
    this.queue = result.catch(() => undefined);
    return result;
  }

  private static check(response: ControlResponse): ControlResponse {
    if (response.status >= 300) throw new ControlError(response.status, response.messages.join(' '));
    return response;
  }

  async read(handler: string): Promise<string> {
    return ControlClient.check(await this.request(`READ ${handler}`)).data ?? '';
  }

  async write(handler: string, argument: string): Promise<void> {
    // WRITEDATA carries any argument byte for byte (spaces, commas, empty).
    ControlClient.check(await this.request(`WRITEDATA ${handler} ${Buffer.byteLength(argument, 'latin1')}`, argument));
  }

  async close(): Promise<void> {
    const socket = this.socket;
    this.socket = undefined;
    if (!socket || socket.destroyed) return;
    try {
      await Promise.race([this.request('QUIT'), new Promise((r) => setTimeout(r, 200))]);
    } catch {
      // already gone
    }
    socket.destroy();
  }
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
  addRoute(xid: string, port: number, nextHop = '', flags = 0, type?: RouteType): Promise<void> {
    const t = type ?? RouteControl.typeOf(xid);
    return this.client.write(`${this.table(t)}.add4`, `${xid},${port},${nextHop},${flags}`);
  }

  /** set4: adds or replaces. */
  setRoute(xid: string, port: number, nextHop = '', flags = 0, type?: RouteType): Promise<void> {
    const t = type ?? RouteControl.typeOf(xid);
    return this.client.write(`${this.table(t)}.set4`, `${xid},${port},${nextHop},${flags}`);
  }

  removeRoute(xid: string, type?: RouteType): Promise<void> {
    const t = type ?? RouteControl.typeOf(xid);
    return this.client.write(`${this.table(t)}.remove`, xid);
  }

  async listRoutes(type: RouteType): Promise<ListedRoute[]> {
    const text = await this.client.read(`${this.table(type)}.list`);
    return text
      .split('\n')
      .filter((line) => line.trim() !== '')
      .map((line) => {
        const [xid = '', port = '', nextHop = '', flags = '0'] = line.split(',');
        return { xid, port: Number(port), nextHop, flags: Number(flags) };
      });
  }

  /** The route for one XID (not the default), if present. */
  async route(xid: string): Promise<ListedRoute | undefined> {
    const routes = await this.listRoutes(RouteControl.typeOf(xid));
    const wanted = xid.toLowerCase();
    return routes.find((r) => r.xid.toLowerCase() === wanted);
  }

  /** xmig nodes only: the node's HID and AD (xia-core keeps these in files). */
  async hid(): Promise<string> {
    return (await this.client.read(`${this.router}/xrc.hid`)).trim();
  }

  async ad(): Promise<string | undefined> {
    return (await this.client.read(`${this.router}/xrc.ad`)).trim() || undefined;
  }
}
