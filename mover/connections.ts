/**
 * Control connections of a migration: over XIA (a STREAM through the local node)
 * or over plain TCP/IP (for the side-by-side comparison the paper makes).
 */
import { createServer, connect as tcpConnect, type Server, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { Dag } from '../shared/dag.js';
import { XmigError } from '../shared/errors.js';
import { XidType, type Xid } from '../shared/xid.js';
import type { NodeApi, StreamConnection, StreamServer } from '../xianet/api/node-api.js';

/**
 * Incoming connections, taken one at a time. A connection waiting here has nobody
 * reading it yet: it gets an error listener at once (an unhandled 'error' on it would
 * kill recv), leaves the queue if it fails or closes meanwhile, and at most `limit` wait
 * (more are refused, and counted, rather than piled up).
 */
export class ConnectionQueue<T extends Duplex> {
  private readonly ready: T[] = [];
  private readonly takers: Array<(c: T) => void> = [];
  private closed = false;
  /** Connections turned away because `limit` were already waiting, or after close(). */
  refused = 0;

  constructor(private readonly limit = 16) {}

  push(connection: T): void {
    connection.on('error', () => undefined);
    if (this.closed) {
      this.refused++;
      connection.destroy();
      return;
    }
    const taker = this.takers.shift();
    if (taker) {
      taker(connection);
      return;
    }
    if (this.ready.length >= this.limit) {
      this.refused++;
      connection.destroy();
      return;
    }
    this.ready.push(connection);
    connection.once('close', () => {
      const at = this.ready.indexOf(connection);
      if (at >= 0) this.ready.splice(at, 1);
    });
  }

  next(): Promise<T> {
    const ready = this.ready.shift();
    if (ready) return Promise.resolve(ready);
    if (this.closed) return Promise.reject(new XmigError('ERR_CONNECTION', 'no longer listening'));
    return new Promise((resolve) => this.takers.push(resolve));
  }

  /** Destroys what is waiting; later connections are refused. */
  close(): void {
    this.closed = true;
    for (const connection of this.ready.splice(0)) connection.destroy();
  }
}

export interface Listening {
  accept(): Promise<Duplex>;
  /** Where senders connect: a DAG (XIA) or host:port (TCP). */
  address: string;
  /** Connections refused because too many were waiting to be taken. */
  readonly refused: number;
  close(): Promise<void>;
}

export async function listenXia(api: NodeApi, sid: Xid): Promise<Listening> {
  const server: StreamServer = await api.listen(sid);
  const queue = new ConnectionQueue<StreamConnection>();
  server.onConnection((c) => queue.push(c));
  return {
    accept: () => queue.next(),
    address: (await server.address()).toString(),
    get refused() {
      return queue.refused;
    },
    close: async () => {
      queue.close();
      await server.close();
    },
  };
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
    get refused() {
      return queue.refused;
    },
    close: () => {
      queue.close();
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
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

/**
 * Who may migrate to this receiver: XIA senders by the HID their STREAM comes from,
 * TCP senders by IP address. Returns the refusal reason for anyone else.
 */
export function admitXiaFrom(hids: readonly Xid[]): (stream: Duplex) => string | undefined {
  const allowed = new Set(hids.map((hid) => hid.key));
  return (stream) => {
    const hid = (stream as Partial<StreamConnection>).remote?.find(XidType.HID);
    return hid && allowed.has(hid.key) ? undefined : `${hid?.toString() ?? 'a sender with no HID'} is not an allowed sender`;
  };
}

export function admitTcpFrom(addresses: readonly string[]): (stream: Duplex) => string | undefined {
  const plain = (address: string | undefined): string | undefined => address?.replace(/^::ffff:/, '');
  const allowed = new Set(addresses.map(plain));
  return (stream) => {
    const address = plain((stream as Partial<Socket>).remoteAddress);
    return address !== undefined && allowed.has(address) ? undefined : `${address ?? 'an unknown address'} is not an allowed sender`;
  };
}
