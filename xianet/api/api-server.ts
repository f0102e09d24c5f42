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
import { encodeFrame, FrameDecoder, type Frame, type Header } from './api-frames.js';
import { fromWire, toWire } from './api-json.js';
import type { DatagramSocket, NodeApi, NodeEventName } from './node-api.js';

const EVENTS: readonly NodeEventName[] = ['beacon', 'gateway', 'registered', 'beacon-rejected', 'beacon-stray'];

class ClientSession {
  private readonly decoder = new FrameDecoder();
  private readonly cleanups: Array<() => void | Promise<void>> = [];
  private readonly datagrams = new Map<string, DatagramSocket>();
  private readonly pings = new Map<number, AbortController>();
  private closed = false;

  constructor(
    private readonly socket: Socket,
    private readonly api: NodeApi,
    private readonly logger: Logger,
  ) {
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('close', () => void this.close());
    socket.on('error', () => socket.destroy());
  }

  private send(header: Header, body?: Uint8Array): void {
    if (!this.closed && !this.socket.destroyed) this.socket.write(encodeFrame(toWire(header) as Header, body));
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
        socket.onMessage(({ data, from }) => this.send({ event: 'datagram', sid: socket.sid, from }, data));
        this.cleanups.push(() => socket.close());
        return { header: { sid: socket.sid, address: await socket.address() } };
      }
      case 'send': {
        const socket = this.datagrams.get((header['sid'] as Xid).key);
        if (!socket) throw new Error(`SID ${String(header['sid'])} is not bound by this client`);
        await socket.send(header['dst'] as Dag, frame.body);
        return undefined;
      }
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

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const controller of this.pings.values()) controller.abort();
    for (const cleanup of this.cleanups.splice(0)) await cleanup();
    this.socket.destroy();
  }
}

export class ApiServer {
  private server: Server | undefined;
  private readonly sessions = new Set<ClientSession>();
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
    const server = createServer((socket) => {
      const session = new ClientSession(socket, this.api, this.logger);
      this.sessions.add(session);
      socket.on('close', () => this.sessions.delete(session));
    });
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

  async stop(): Promise<void> {
    for (const session of this.sessions) await session.close();
    this.sessions.clear();
    const server = this.server;
    this.server = undefined;
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
    rmSync(this.path, { force: true });
  }
}

