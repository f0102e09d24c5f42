/**
 * Control connections of a migration: over XIA (a STREAM through the local node)
 * or over plain TCP/IP (for the side-by-side comparison the paper makes).
 */
import { createServer, connect as tcpConnect, type Server, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { Dag } from '../shared/dag.js';
import { XmigError } from '../shared/errors.js';
import type { Xid } from '../shared/xid.js';
import type { NodeApi, StreamConnection, StreamServer } from '../xianet/api/node-api.js';

/** Incoming connections, taken one at a time. */
export class ConnectionQueue<T extends Duplex> {
  private readonly ready: T[] = [];
  private readonly takers: Array<(c: T) => void> = [];

  push(connection: T): void {
    const taker = this.takers.shift();
    if (taker) taker(connection);
    else this.ready.push(connection);
  }

  next(): Promise<T> {
    const ready = this.ready.shift();
    if (ready) return Promise.resolve(ready);
    return new Promise((resolve) => this.takers.push(resolve));
  }
}

export interface Listening {
  accept(): Promise<Duplex>;
  /** Where senders connect: a DAG (XIA) or host:port (TCP). */
  address: string;
  close(): Promise<void>;
}

export async function listenXia(api: NodeApi, sid: Xid): Promise<Listening> {
  const server: StreamServer = await api.listen(sid);
  const queue = new ConnectionQueue<StreamConnection>();
  server.onConnection((c) => queue.push(c));
  return { accept: () => queue.next(), address: (await server.address()).toString(), close: () => server.close() };
}

export async function listenTcp(host: string, port: number): Promise<Listening> {
  const queue = new ConnectionQueue<Socket>();
  const server: Server = createServer((socket) => {
    socket.setNoDelay(true);
    queue.push(socket);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  const address = server.address() as { address: string; port: number };
  return {
    accept: () => queue.next(),
    address: `${address.address}:${address.port}`,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

/**
 * Hypervisor hosts do not move, so the control connection need not ride out long
 * outages as a VM's connections do: a receiver that went silent is given up on
 * after `outageTimeoutMs`, and the resume logic takes over from there.
 */
export function connectXia(api: NodeApi, dst: Dag, outageTimeoutMs = 3000): () => Promise<Duplex> {
  return () => api.connect(dst, { connectTimeoutMs: 3000, outageTimeoutMs });
}

export function connectTcp(host: string, port: number): () => Promise<Duplex> {
  return () =>
    new Promise<Duplex>((resolve, reject) => {
      const socket = tcpConnect(port, host);
      socket.setNoDelay(true);
      socket.once('connect', () => {
        socket.off('error', onError);
        resolve(socket);
      });
      const onError = (error: Error): void => reject(new XmigError('ERR_UNREACHABLE', `cannot reach ${host}:${port}: ${error.message}`));
      socket.once('error', onError);
    });
}
