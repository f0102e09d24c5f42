/**
 * One control connection's commands and their replies, byte for byte as Click 2.0.1's
 * ControlSocket gives them (elements/userlevel/controlsocket.cc: parse_command,
 * read_command, write_command, check_command, llrpc_command): status codes, message
 * texts, multi-line replies ("520-..." then "520 ..."), `DATA n` after a read,
 * "200 Goodbye!" on QUIT/CLOSE. The recorded replies of a real router in
 * ../shared/fixtures/xia-core-click/ are this file's test vectors
 * (click-control-replay.test.ts); where xmig answers otherwise on purpose the README's
 * control-port table says why.
 *
 * Pure: no sockets, nothing thrown. The port (click-control-port.ts) frames requests
 * (click-command-reader.ts) and writes what this returns.
 */
import { timingSafeEqual } from 'node:crypto';
import type { RefusalReason } from '../shared/limits.js';
import type { ClickRequest } from './click-command-reader.js';
import type { ClickElement, ClickHandler, ClickNamespace, HandlerResult } from './click-handlers.js';
import { clickPrintable, clickUpper } from './click-syntax.js';

/** Click's status codes (controlsocket.hh CSERR_*). */
export const ClickStatus = {
  OK: 200,
  OK_WARNING: 220,
  SYNTAX: 500,
  UNIMPLEMENTED: 501,
  NO_SUCH_ELEMENT: 510,
  NO_SUCH_HANDLER: 511,
  HANDLER_ERROR: 520,
  DATA_TOO_BIG: 521,
  LLRPC_ERROR: 522,
  PERMISSION: 530,
  NO_ROUTER: 540,
  UNSPECIFIED: 590,
} as const;

export const CONTROL_SOCKET_GREETING = 'Click::ControlSocket/1.3';

/** Click's LARGEST_HANDLER_WRITE: a write handler gets at most this many bytes. */
export const LARGEST_HANDLER_WRITE = 65536;

const HELP_LINES = [
  'Commands supported:',
  'READ handler [arg...]   call read handler, return DATA',
  'READDATA handler len    call read handler with len data bytes, return DATA',
  'READUNTIL handler term  call read handler, take data until term, return DATA',
  'WRITE handler [arg...]  call write handler',
  'WRITEDATA handler len   call write handler, pass len data bytes',
  'WRITEUNTIL handler term call write handler, take data until term',
  'CHECKREAD handler       check if read handler is valid',
  'CHECKWRITE handler      check if write handler is valid',
  'LLRPC elt#number [len]  call LLRPC, pass len data bytes, return DATA',
  'QUIT                    close connection',
];

export interface SessionOptions {
  /** Writes allowed without authenticating (a Unix socket that is not read-only). */
  writable: boolean;
  /** The token that makes a connection writable through `WRITEDATA auth n` (TCP); none: no `auth` handler. */
  token?: Buffer;
  maxDataBytes?: number;
  /** Heard for every write handler that succeeded (logs). */
  onWrite?: (handler: string, data: string) => void;
  /** Heard for every refusal (metrics). */
  onRefusal?: (resource: string, reason: RefusalReason) => void;
}

export interface SessionReply {
  /** The bytes to send (latin1). */
  text: string;
  /** QUIT or CLOSE: send the reply, then close. */
  quit: boolean;
}

type Found = { element: ClickElement; handler: ClickHandler; root: boolean } | { status: number; error: string };

export class ClickControlSession {
  private writable: boolean;
  private readonly maxDataBytes: number;
  private readonly authHandler: ClickHandler | undefined;

  constructor(
    private readonly namespace: ClickNamespace,
    private readonly options: SessionOptions,
  ) {
    this.writable = options.writable;
    this.maxDataBytes = options.maxDataBytes ?? LARGEST_HANDLER_WRITE;
    const token = options.token;
    this.authHandler = token
      ? {
          name: 'auth',
          write: (data: string): HandlerResult => {
            const given = Buffer.from(data.trim(), 'latin1');
            if (given.length === token.length && timingSafeEqual(given, token)) {
              this.writable = true;
              return { ok: true, data: '' };
            }
            return { ok: false, errors: ['wrong token'] };
          },
        }
      : undefined;
  }

  /** Runs one request. */
  execute(request: ClickRequest): SessionReply {
    const out = new ReplyText();
    const quit = this.run(request, out);
    return { text: out.text, quit };
  }

  private run(request: ClickRequest, out: ReplyText): boolean {
    const { words, line } = request;
    if (request.lineTooLong) this.options.onRefusal?.('line', 'budget');
    if (request.body?.tooLarge) this.options.onRefusal?.('data', 'budget');
    const command = clickUpper(words[0]!.text);
    const rest = (from: number): string => (words.length > from ? line.slice(words[from]!.start, words[words.length - 1]!.end) : '');
    switch (command) {
      case 'READ':
      case 'GET':
      case 'WRITE':
      case 'SET': {
        if (words.length < 2) return out.message(ClickStatus.SYNTAX, 'Wrong number of arguments');
        const data = { text: rest(2), tooLarge: request.lineTooLong };
        if (command[0] === 'R' || command[0] === 'G') this.readCommand(out, words[1]!.text, data);
        else this.writeCommand(out, words[1]!.text, data);
        return false;
      }
      case 'READDATA':
      case 'WRITEDATA':
      case 'SETDATA': {
        if (words.length !== 3) return out.message(ClickStatus.SYNTAX, 'Wrong number of arguments');
        // Click 2.0.1 sends "500-Syntax error in '%s'" here, a continuation line no final line
        // follows (a printf argument taken for its continuation flag); xmig ends the reply.
        if (!request.body) return out.message(ClickStatus.SYNTAX, `Syntax error in '${command}'`);
        if (request.body.incomplete) return out.message(ClickStatus.SYNTAX, 'Not enough data');
        if (command[0] === 'R') this.readCommand(out, words[1]!.text, request.body);
        else this.writeCommand(out, words[1]!.text, request.body);
        return false;
      }
      case 'READUNTIL':
      case 'WRITEUNTIL': {
        if (words.length < 2 || !request.body) return out.message(ClickStatus.SYNTAX, 'Wrong number of arguments');
        if (request.body.incomplete) return out.message(ClickStatus.SYNTAX, 'Not enough data');
        if (command[0] === 'R') this.readCommand(out, words[1]!.text, request.body);
        else this.writeCommand(out, words[1]!.text, request.body);
        return false;
      }
      case 'CHECKREAD':
      case 'CHECKWRITE':
        if (words.length !== 2) return out.message(ClickStatus.SYNTAX, 'Wrong number of arguments');
        this.checkCommand(out, words[1]!.text, command === 'CHECKWRITE');
        return false;
      case 'LLRPC':
        if (words.length !== 2 && words.length !== 3) return out.message(ClickStatus.SYNTAX, 'Wrong number of arguments');
        if (words.length === 3 && !request.body) return out.message(ClickStatus.SYNTAX, "Syntax error in 'llrpc'");
        if (request.body?.incomplete) return out.message(ClickStatus.SYNTAX, 'Not enough data');
        this.llrpcCommand(out, words[1]!.text);
        return false;
      case 'CLOSE':
      case 'QUIT':
        if (words.length !== 1) out.message(ClickStatus.SYNTAX, 'Bad command syntax');
        out.message(ClickStatus.OK, 'Goodbye!');
        return true;
      case 'HELP':
        HELP_LINES.forEach((text, i) => out.message(ClickStatus.OK, text, i < HELP_LINES.length - 1));
        return false;
      default:
        return out.message(ClickStatus.UNIMPLEMENTED, `Command '${command}' unimplemented`);
    }
  }

  /** ControlSocket::parse_handler: "element.handler" (first dot), a root handler, or an element number. */
  private find(fullName: string): Found {
    let canonical = fullName;
    const firstDot = fullName.indexOf('.');
    if (firstDot === 0 || (firstDot === 1 && fullName[0] === '0')) canonical = fullName.slice(firstDot + 1);
    const dot = canonical.indexOf('.');
    let element: ClickElement;
    let handlerName: string;
    let root = false;
    if (dot >= 0) {
      const elementName = canonical.slice(0, dot);
      const found = this.namespace.element(elementName);
      if (!found) return { status: ClickStatus.NO_SUCH_ELEMENT, error: `No element named '${elementName}'` };
      element = found;
      handlerName = canonical.slice(dot + 1);
    } else {
      element = this.namespace.root;
      handlerName = canonical;
      root = true;
    }
    const handler = root && handlerName === 'auth' && this.authHandler ? this.authHandler : element.handlers.get(handlerName);
    if (!handler) return { status: ClickStatus.NO_SUCH_HANDLER, error: `No handler named '${fullName}'` };
    return { element, handler, root };
  }

  private readCommand(out: ReplyText, name: string, param: { text: string; tooLarge: boolean }): void {
    const found = this.find(name);
    if ('error' in found) return void out.message(found.status, found.error);
    const { handler, element, root } = found;
    if (!handler.read) return void out.message(ClickStatus.PERMISSION, `Handler '${name}' write-only`);
    let result: HandlerResult;
    if ((param.text !== '' || param.tooLarge) && !handler.readParam) {
      const unparsed = root ? handler.name : `${element.name}.${handler.name}`;
      result = { ok: false, errors: [`read handler '${unparsed}' does not take parameters`] };
    } else {
      result = handler.read(param.text);
    }
    if (!result.ok) return void out.transfer(ClickStatus.UNSPECIFIED, `Read handler '${name}' error`, result.errors);
    out.message(ClickStatus.OK, `Read handler '${name}' OK`);
    out.data(result.data);
  }

  private writeCommand(out: ReplyText, name: string, data: { text: string; tooLarge: boolean }): void {
    const found = this.find(name);
    if ('error' in found) return void out.message(found.status, found.error);
    const { handler } = found;
    if (!handler.write) return void out.message(ClickStatus.PERMISSION, `Handler '${name}' read-only`);
    if (!this.writable && handler !== this.authHandler) {
      this.options.onRefusal?.('write', 'forbidden');
      return void out.message(ClickStatus.PERMISSION, `Permission denied for '${name}'`);
    }
    if (data.tooLarge || data.text.length > this.maxDataBytes) {
      return void out.message(ClickStatus.DATA_TOO_BIG, `Data too large for write handler '${name}'`);
    }
    const result = handler.write(data.text);
    if (!result.ok) {
      if (handler === this.authHandler) {
        this.options.onRefusal?.('write', 'forbidden');
        return void out.message(ClickStatus.PERMISSION, `Permission denied for '${name}'`);
      }
      return void out.transfer(ClickStatus.HANDLER_ERROR, `Write handler '${name}' error`, result.errors);
    }
    if (handler !== this.authHandler) this.options.onWrite?.(name, data.text);
    out.message(ClickStatus.OK, `Write handler '${name}' OK`);
  }

  private checkCommand(out: ReplyText, name: string, write: boolean): void {
    const found = this.find(name);
    if ('error' in found) return void out.message(found.status, found.error);
    const ok = write ? found.handler.write !== undefined : found.handler.read !== undefined;
    if (write && ok && !this.writable && found.handler !== this.authHandler) {
      return void out.message(ClickStatus.PERMISSION, `Permission denied for '${name}'`);
    }
    if (ok) return void out.message(ClickStatus.OK, `${write ? 'Write' : 'Read'} handler '${name}' OK`);
    out.message(ClickStatus.NO_SUCH_HANDLER, `Handler '${name}' ${write ? 'not writable' : 'not readable'}`);
  }

  /** xmig's elements have no LLRPCs: after Click's checks of the name, every call is refused as not remote. */
  private llrpcCommand(out: ReplyText, name: string): void {
    const hash = name.indexOf('#');
    const number = hash < 0 ? '' : name.slice(hash + 1);
    const match = /^\+?(?:0[xX])?([0-9a-fA-F](?:_?[0-9a-fA-F])*)$/.exec(number);
    if (!match || Number.parseInt(match[1]!.replaceAll('_', ''), 16) > 0xffffffff) {
      return void out.message(ClickStatus.SYNTAX, `Syntax error in LLRPC name '${name}'`);
    }
    const found = this.find(`${name.slice(0, hash)}.name`);
    if ('error' in found) return void out.message(found.status, found.error);
    out.message(ClickStatus.UNIMPLEMENTED, `Cannot call LLRPC '${name}' remotely`);
  }
}

/** A reply being written, line by line as Click's connection::message() writes them. */
class ReplyText {
  text = '';

  /** One status line; true so `return out.message(...)` reads as "not QUIT". */
  message(code: number, message: string, continuation = false): false {
    this.text += `${code}${continuation ? '-' : ' '}${clickPrintable(message)}\r\n`;
    return false;
  }

  /** connection::transfer_messages: the summary (with ":" when lines follow), then each line. */
  transfer(code: number, summary: string, messages: readonly string[]): void {
    if (messages.length > 0) this.message(code, `${summary}:`, true);
    else this.message(code, summary);
    messages.forEach((message, i) => this.message(code, message, i < messages.length - 1));
  }

  data(data: string): void {
    this.text += `DATA ${data.length}\r\n${data}`;
  }
}
