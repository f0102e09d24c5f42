/**
 * The node's control port: Click's ControlSocket protocol
 * (click-2.0.1/elements/userlevel/controlsocket.cc) with xia-core's element and
 * handler names (elements/xia/xiaxidroutetable.cc, daemons/common/XIARouter.cc),
 * so whatever drives an xia-core router's tables drives this node's too.
 *
 * Elements and handlers, for a node named N:
 *   N/xrc/n/proc/rt_AD|rt_HID|rt_SID|rt_CID|rt_IP
 *       write add4, set4  "XID,port,nexthop,flags" ("-" = default route; nexthop may be empty)
 *       write add, set    "XID port" (xia-core's older form)
 *       write remove      "XID"
 *       read  list        one "XID,port,nexthop,flags" line per route, the default first
 *   N/xrc (xmig's own, read): hid, ad, address, counters (JSON), neighbors (one line each)
 *   root (read): list (element count, then names), version
 *
 * Adding an existing route fails ("duplicate XID"); a missing default route lists
 * as port -7 (FALLBACK: try the DAG's next edge), and setting it to -7 removes it.
 */
import { chmodSync, rmSync } from 'node:fs';
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { silentLogger, type Logger } from '../shared/logger.js';
import { parseXidTypeName, Xid, xidTypeName, XidType } from '../shared/xid.js';
import type { XiaNode } from './node.js';
import { Port, type RouteEntry } from './route-table.js';

export const CONTROL_SOCKET_GREETING = 'Click::ControlSocket/1.3';
export const ClickStatus = {
  OK: 200,
  OK_WARNING: 220,
  SYNTAX: 500,
  UNIMPLEMENTED: 501,
  NO_SUCH_ELEMENT: 510,
  NO_SUCH_HANDLER: 511,
  HANDLER_ERROR: 520,
  DATA_TOO_BIG: 521,
  PERMISSION: 530,
} as const;

const MAX_LINE = 64 * 1024;
const MAX_DATA = 1024 * 1024;
const TABLE_TYPES = ['AD', 'HID', 'SID', 'CID', 'IP'] as const;

export type ControlListen = { host?: string; port: number } | { path: string };

/** A handler failed: becomes "520-Write handler 'h' error:" and the message. */
class HandlerError extends Error {}

interface Reply {
  lines: Array<[number, string]>;
  data?: string;
}

export class ClickControlPort {
  private server: Server | undefined;
  private readonly sockets = new Set<Socket>();
  private listenAddress: string | undefined;
  private readonly logger: Logger;

  constructor(
    private readonly node: XiaNode,
    private readonly listen: ControlListen,
    logger?: Logger,
  ) {
    this.logger = logger ?? silentLogger();
  }

  /** "host:port" or the socket path, once started. */
  get address(): string | undefined {
    return this.listenAddress;
  }

  async start(): Promise<void> {
    const server = createServer((socket) => this.serve(socket));
    const listen = this.listen;
    if ('path' in listen) rmSync(listen.path, { force: true });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      const done = (): void => {
        server.off('error', reject);
        resolve();
      };
      if ('path' in listen) server.listen(listen.path, done);
      else server.listen(listen.port, listen.host ?? '127.0.0.1', done);
    });
    if ('path' in listen) {
      chmodSync(listen.path, 0o600);
      this.listenAddress = listen.path;
    } else {
      const address = server.address() as AddressInfo;
      this.listenAddress = `${address.address}:${address.port}`;
    }
    this.server = server;
    this.logger.info('control.listening', { address: this.listenAddress });
  }

  async stop(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    this.sockets.clear();
    const server = this.server;
    this.server = undefined;
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
    if ('path' in this.listen) rmSync(this.listen.path, { force: true });
  }

  private serve(socket: Socket): void {
    this.sockets.add(socket);
    socket.on('close', () => this.sockets.delete(socket));
    socket.on('error', () => socket.destroy());
    socket.setNoDelay(true);
    socket.write(`${CONTROL_SOCKET_GREETING}\r\n`);
    let buffer: Buffer = Buffer.alloc(0);
    let closed = false;
    socket.on('data', (chunk: Buffer) => {
      if (closed) return;
      buffer = buffer.length === 0 ? chunk : Buffer.concat([buffer, chunk]);
      for (;;) {
        const newline = buffer.indexOf(0x0a);
        if (newline < 0) {
          if (buffer.length > MAX_LINE) socket.destroy();
          return;
        }
        const line = buffer.toString('latin1', 0, newline).replace(/\r$/, '');
        const words = line.trim().split(/\s+/).filter(Boolean);
        let consumed = newline + 1;
        let data: string | undefined;
        const command = words[0]?.toUpperCase();
        if ((command === 'WRITEDATA' || command === 'READDATA' || command === 'SETDATA') && words.length === 3 && /^\d+$/.test(words[2]!)) {
          const length = Number(words[2]);
          if (length > MAX_DATA) {
            socket.destroy();
            return;
          }
          if (buffer.length < consumed + length) return; // wait for the data bytes
          data = buffer.toString('latin1', consumed, consumed + length);
          consumed += length;
        }
        buffer = buffer.subarray(consumed);
        if (words.length === 0) continue;
        const reply = this.execute(words, line, data);
        socket.write(formatReply(reply));
        if (command === 'QUIT' || command === 'CLOSE') {
          closed = true;
          socket.end();
          return;
        }
      }
    });
  }

  /** Runs one command line; never throws. */
  execute(words: string[], line: string, data?: string): Reply {
    const command = words[0]!.toUpperCase();
    const argument = (): string => {
      // Everything after the handler name, as Click passes it.
      const match = /^\s*\S+\s+\S+\s?(.*)$/.exec(line);
      return match ? match[1]! : '';
    };
    switch (command) {
      case 'READ':
      case 'GET':
      case 'WRITE':
      case 'SET':
        if (words.length < 2) return single(ClickStatus.SYNTAX, 'Wrong number of arguments');
        return this.call(command[0] === 'R' || command[0] === 'G' ? 'read' : 'write', words[1]!, argument());
      case 'READDATA':
      case 'WRITEDATA':
      case 'SETDATA':
        if (words.length !== 3) return single(ClickStatus.SYNTAX, 'Wrong number of arguments');
        if (data === undefined) return single(ClickStatus.SYNTAX, `Syntax error in '${command}'`);
        return this.call(command[0] === 'R' ? 'read' : 'write', words[1]!, data);
      case 'CHECKREAD':
      case 'CHECKWRITE': {
        if (words.length !== 2) return single(ClickStatus.SYNTAX, 'Wrong number of arguments');
        const write = command === 'CHECKWRITE';
        const found = this.find(words[1]!);
        if ('reply' in found) return found.reply;
        const ok = write ? found.write !== undefined : found.read !== undefined;
        if (!ok) return single(ClickStatus.NO_SUCH_HANDLER, `Handler '${words[1]}' not ${write ? 'writable' : 'readable'}`);
        return single(ClickStatus.OK, `${write ? 'Write' : 'Read'} handler '${words[1]}' OK`);
      }
      case 'LLRPC':
        return single(ClickStatus.UNIMPLEMENTED, `Cannot call LLRPC '${words[1] ?? ''}' remotely`);
      case 'QUIT':
      case 'CLOSE':
        return single(ClickStatus.OK, 'Goodbye!');
      case 'HELP':
        return {
          lines: [
            [200, 'Commands supported:'],
            [200, 'READ handler [arg...]   call read handler, return DATA'],
            [200, 'READDATA handler len    call read handler with len data bytes, return DATA'],
            [200, 'WRITE handler [arg...]  call write handler'],
            [200, 'WRITEDATA handler len   call write handler, pass len data bytes'],
            [200, 'CHECKREAD handler       check if read handler is valid'],
            [200, 'CHECKWRITE handler      check if write handler is valid'],
            [200, 'QUIT                    close connection'],
          ],
        };
      default:
        return single(ClickStatus.UNIMPLEMENTED, `Command '${command}' unimplemented`);
    }
  }

  private call(kind: 'read' | 'write', name: string, argument: string): Reply {
    const found = this.find(name);
    if ('reply' in found) return found.reply;
    const handlerName = name;
    if (kind === 'read') {
      if (!found.read) return single(ClickStatus.PERMISSION, `Handler '${handlerName}' write-only`);
      try {
        const data = found.read();
        return { lines: [[ClickStatus.OK, `Read handler '${handlerName}' OK`]], data };
      } catch (error) {
        return handlerError('Read', handlerName, error);
      }
    }
    if (!found.write) return single(ClickStatus.PERMISSION, `Handler '${handlerName}' read-only`);
    try {
      found.write(argument.trim());
      this.logger.debug('control.write', { handler: handlerName, argument: argument.trim() });
      return single(ClickStatus.OK, `Write handler '${handlerName}' OK`);
    } catch (error) {
      return handlerError('Write', handlerName, error);
    }
  }

  /** Resolves "element.handler" (or a root handler) to its read/write functions. */
  private find(fullName: string): { read?: () => string; write?: (argument: string) => void } | { reply: Reply } {
    const dot = fullName.lastIndexOf('.');
    const element = dot < 0 ? '' : fullName.slice(0, dot);
    const handler = dot < 0 ? fullName : fullName.slice(dot + 1);
    const prefix = `${this.node.name}/xrc/n/proc/rt_`;
    if (element === '') {
      if (handler === 'list') return { read: () => this.elementList() };
      if (handler === 'version') return { read: () => 'xmig-0.1.0\n' };
      return { reply: single(ClickStatus.NO_SUCH_HANDLER, `No handler named '${fullName}'`) };
    }
    if (element.startsWith(prefix)) {
      const typeName = element.slice(prefix.length);
      const type = (TABLE_TYPES as readonly string[]).includes(typeName) ? parseXidTypeName(typeName) : undefined;
      if (type === undefined) return { reply: single(ClickStatus.NO_SUCH_ELEMENT, `No element named '${element}'`) };
      switch (handler) {
        case 'list':
          return { read: () => this.listRoutes(type) };
        case 'add4':
        case 'set4':
          return { write: (argument) => this.setRoute(type, argument, handler === 'add4') };
        case 'add':
        case 'set':
          return { write: (argument) => this.setRouteOld(type, argument, handler === 'add') };
        case 'remove':
          return { write: (argument) => this.removeRoute(type, argument) };
        default:
          return { reply: single(ClickStatus.NO_SUCH_HANDLER, `No handler named '${fullName}'`) };
      }
    }
    if (element === `${this.node.name}/xrc`) {
      const node = this.node;
      const reads: Partial<Record<string, () => string>> = {
        hid: () => `${node.hid}\n`,
        ad: () => (node.ad ? `${node.ad}\n` : ''),
        address: () => `${node.address().toString()}\n`,
        counters: () => `${JSON.stringify(node.counters)}\n`,
        neighbors: () =>
          node.neighbors
            .list()
            .map((n) => `${n.hid},${n.port},${n.address},${n.role ?? ''},${n.ad?.toString() ?? ''}\n`)
            .join(''),
      };
      const read = Object.hasOwn(reads, handler) ? reads[handler] : undefined;
      if (read) return { read };
      return { reply: single(ClickStatus.NO_SUCH_HANDLER, `No handler named '${fullName}'`) };
    }
    return { reply: single(ClickStatus.NO_SUCH_ELEMENT, `No element named '${element}'`) };
  }

  private elementList(): string {
    const names = [...TABLE_TYPES.map((t) => `${this.node.name}/xrc/n/proc/rt_${t}`), `${this.node.name}/xrc`];
    return `${names.length}\n${names.join('\n')}\n`;
  }

  private listRoutes(type: number): string {
    const table = this.node.routes.table(type);
    const line = (xid: string, entry: { port: number; nextHop: Xid | undefined; flags: number }): string =>
      `${xid},${entry.port},${entry.nextHop?.toString() ?? ''},${entry.flags}\n`;
    const fallback = table.defaultRoute;
    let text = fallback ? line('-', fallback) : line('-', { port: Port.FALLBACK, nextHop: undefined, flags: 0 });
    for (const entry of table.list()) if (entry.xid) text += line(entry.xid.toString(), entry);
    return text;
  }

  private parseXid(text: string, type: number, what: string, argument: string): Xid {
    let xid: Xid;
    try {
      xid = Xid.parse(text);
    } catch {
      throw new HandlerError(`invalid ${what}: ${argument}`);
    }
    if (what === 'XID' && xid.type !== type) {
      throw new HandlerError(`invalid XID: ${text} is not an ${xidTypeName(type)}`);
    }
    return xid;
  }

  private setRoute(type: number, argument: string, addOnly: boolean): void {
    const args = argument.split(',').map((a) => a.trim());
    if (args.length < 2 || args.length > 4 || args[0] === '') throw new HandlerError(`invalid route: ${argument}`);
    const port = parseInteger(args[1]!);
    if (port === undefined) throw new HandlerError(`invalid port: ${argument}`);
    let flags = 0;
    if (args.length === 4) {
      const parsed = parseInteger(args[3]!);
      if (parsed === undefined || parsed < 0) throw new HandlerError(`invalid flags: ${argument}`);
      flags = parsed;
    }
    const nextHopText = args[2] ?? '';
    const nextHop = nextHopText === '' ? undefined : this.parseXid(nextHopText, XidType.HID, 'next hop xid', argument);
    if (port >= 0 && !this.node.interface(port)) throw new HandlerError(`invalid port: ${argument} (no interface ${port})`);
    const table = this.node.routes.table(type);
    if (args[0] === '-') {
      if (addOnly && table.defaultRoute) throw new HandlerError('duplicate default route: -');
      if (port === Port.FALLBACK) {
        this.node.routes.remove(type, undefined);
        return;
      }
      this.node.routes.set(type, { xid: undefined, port, nextHop, flags, origin: 'control' });
      return;
    }
    const xid = this.parseXid(args[0]!, type, 'XID', args[0]!);
    if (addOnly && table.get(xid)) throw new HandlerError(`duplicate XID: ${args[0]}`);
    const entry: RouteEntry = { xid, port, nextHop, flags, origin: 'control' };
    this.node.routes.set(type, entry);
  }

  private setRouteOld(type: number, argument: string, addOnly: boolean): void {
    const [xid, portText] = argument.trim().split(/\s+/);
    if (!xid) return;
    if (portText === undefined || parseInteger(portText) === undefined) throw new HandlerError(`invalid port: ${portText ?? ''}`);
    this.setRoute(type, `${xid},${portText},,0`, addOnly);
  }

  private removeRoute(type: number, argument: string): void {
    const text = argument.trim();
    if (text === '') return;
    if (text === '-') {
      this.node.routes.remove(type, undefined);
      return;
    }
    const xid = this.parseXid(text, type, 'XID', text);
    if (!this.node.routes.remove(type, xid)) throw new HandlerError(`nonexistent XID: ${text}`);
  }
}

function parseInteger(text: string): number | undefined {
  return /^[-+]?\d+$/.test(text) ? Number(text) : undefined;
}

function single(code: number, message: string): Reply {
  return { lines: [[code, message]] };
}

function handlerError(kind: 'Read' | 'Write', handler: string, error: unknown): Reply {
  const message = error instanceof Error ? error.message : String(error);
  return {
    lines: [
      [ClickStatus.HANDLER_ERROR, `${kind} handler '${handler}' error:`],
      [ClickStatus.HANDLER_ERROR, message],
    ],
  };
}

function formatReply(reply: Reply): string {
  const text = reply.lines
    .map(([code, message], i) => `${code}${i < reply.lines.length - 1 ? '-' : ' '}${printable(message)}\r\n`)
    .join('');
  return reply.data === undefined ? text : `${text}DATA ${Buffer.byteLength(reply.data, 'latin1')}\r\n${reply.data}`;
}

/** Click's String::printable: control characters escaped so one message stays one line. */
function printable(message: string): string {
  let out = '';
  for (const c of message) {
    const code = c.charCodeAt(0);
    out += code < 0x20 || code === 0x7f ? `\\${code.toString(8).padStart(3, '0')}` : c;
  }
  return out;
}
