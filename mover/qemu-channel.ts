/**
 * QEMU's own `unix:` migration channel, held by the host's node (mover-service.ts, the
 * `qemuSocket` of a mover request): no `xmig send` / `xmig recv` process between QEMU
 * and the node, so the stream is copied once less on each host and nothing has to start
 * up while QEMU waits to write.
 *
 *  - Source: QEMU (`migrate unix:PATH`) connects; the node listens at PATH and takes the
 *    first connection as the stream. Any later one is refused (closed at once): one
 *    migration, one stream.
 *  - Destination: QEMU (`-incoming unix:PATH` or `migrate-incoming`) listens; the node
 *    connects, retrying while the socket is not there yet or not answering.
 *
 * The socket file gets mode 0660 (the node's group, e.g. `xmig`, may let a QEMU run by
 * another user in) and is removed when the channel closes, if it is still the one bound
 * here; a file at PATH that is not a dead socket is never replaced (unix-socket-file.ts).
 */
import { createServer, type Server, type Socket } from 'node:net';
import { XmigError } from '../shared/errors.js';
import { connectUnixSocket, listenUnixSocket, type SocketFile } from '../xianet/unix-socket-file.js';

/** The source's end: the node listening for QEMU. */
export interface QemuListener {
  readonly path: string;
  /** QEMU's connection: its migration stream, readable. Rejects if closed first. */
  readonly connection: Promise<Socket>;
  /** Stops listening and removes the socket file; QEMU's connection, if any, is left to its owner. */
  close(): void;
}

export async function listenForQemu(path: string): Promise<QemuListener> {
  let take: (socket: Socket) => void = () => undefined;
  let fail: (error: Error) => void = () => undefined;
  const connection = new Promise<Socket>((resolve, reject) => {
    take = resolve;
    fail = reject;
  });
  // Nobody may be left with an unhandled rejection if QEMU never came.
  connection.catch(() => undefined);
  let taken = false;
  const server: Server = createServer((socket) => {
    if (taken) {
      socket.destroy();
      return;
    }
    taken = true;
    take(socket);
  });
  const file: SocketFile = await listenUnixSocket(server, path, { mode: 0o660 });
  let closed = false;
  return {
    path,
    connection,
    close() {
      // Listening stops now; the server's 'close' waits for QEMU's connection, which is not ours to wait for.
      if (!closed) {
        fail(new XmigError('ERR_MIGRATION', `QEMU never connected to ${path}`));
        server.close();
        file.remove();
        closed = true;
      }
    },
  };
}

export interface ConnectToQemuOptions {
  /** How long a socket that is not there (or not answering) yet is tried for (default 10 s). */
  timeoutMs?: number;
  signal?: AbortSignal;
}

/** The destination's end: a connection to QEMU's incoming socket, its stream writable. */
export async function connectToQemu(path: string, options: ConnectToQemuOptions = {}): Promise<Socket> {
  try {
    return await connectUnixSocket(path, { retryMs: options.timeoutMs ?? 10_000, signal: options.signal });
  } catch (error) {
    throw new XmigError('ERR_MIGRATION', `cannot reach QEMU's incoming migration socket ${path} (is QEMU started with -incoming unix:${path}?): ${(error as Error).message}`, {
      cause: error,
    });
  }
}
