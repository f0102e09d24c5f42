/**
 * A listening Unix socket whose file has the owner group and mode it is configured
 * with from the moment it can be reached at its path: the server binds a temporary
 * name beside it, the file is given its mode and group, and only then renamed into
 * place. An existing file at the path is replaced only if it is a socket nobody
 * answers on (left by a crash); a live socket or any other file is refused, never
 * deleted. On close the file is removed only if it is still the one bound here.
 *
 * Connecting to a Unix socket needs write permission on its file, so the mode and
 * group are the access control: 0660 and group `xmig` let the node's user and the
 * group's members drive the control port, and nobody else.
 */
import { chmodSync, chownSync, lstatSync, readFileSync, renameSync, rmSync, statSync } from 'node:fs';
import { connect, type OnReadOpts, type Server, type Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { basename, dirname, join } from 'node:path';
import { ConfigError, errorMessage } from '../shared/errors.js';

/** The longest path a Unix socket address holds on Linux (sun_path less its NUL). */
export const SUN_PATH_MAX = 107;

export interface SocketFileOptions {
  /** Permission bits of the socket file (default 0660); bits for others are refused. */
  mode?: number;
  /** The group that owns it: a name from /etc/group or a gid (default: the process's). */
  group?: string | number;
}

/** A group name or number as a gid; a ConfigError naming the group if there is none. */
export function resolveGroup(group: string | number, groupFile = '/etc/group'): number {
  if (typeof group === 'number' || /^\d+$/.test(group)) return Number(group);
  let text: string;
  try {
    text = readFileSync(groupFile, 'utf8');
  } catch (error) {
    throw new ConfigError(`cannot look up group "${group}": ${errorMessage(error)}`);
  }
  for (const line of text.split('\n')) {
    const [name, , gid] = line.split(':');
    if (name === group && gid !== undefined && /^\d+$/.test(gid)) return Number(gid);
  }
  throw new ConfigError(`no group "${group}" in ${groupFile}`);
}

/** Whether something answers on the socket at `path` (a live server, not a leftover file). */
function answers(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = connect(path);
    const done = (alive: boolean): void => {
      probe.destroy();
      resolve(alive);
    };
    probe.once('connect', () => done(true));
    probe.once('error', () => done(false));
  });
}

/** Makes `path` free for a new socket: absent, or a dead socket (removed); otherwise a ConfigError. */
async function clearPath(path: string): Promise<void> {
  let stat;
  try {
    stat = lstatSync(path);
  } catch {
    return;
  }
  if (!stat.isSocket()) throw new ConfigError(`${path} exists and is not a socket; not replacing it`);
  if (await answers(path)) throw new ConfigError(`${path} is in use: another process listens on it`);
  rmSync(path, { force: true });
}

function listenOn(server: Server, path: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const failed = (error: Error): void => reject(new ConfigError(`cannot listen on ${path}: ${error.message}`, { cause: error }));
    server.once('error', failed);
    server.listen(path, () => {
      server.off('error', failed);
      resolve();
    });
  });
}

/** A socket file bound by `listenUnixSocket`; `remove()` deletes it if it is still this one. */
export interface SocketFile {
  readonly path: string;
  remove(): void;
}

/** Starts `server` listening on `path` with the file's mode and group set before it appears there. */
export async function listenUnixSocket(server: Server, path: string, options: SocketFileOptions = {}): Promise<SocketFile> {
  const mode = options.mode ?? 0o660;
  if (mode & 0o007) {
    throw new ConfigError(`socket mode ${mode.toString(8).padStart(4, '0')} lets every local user connect; use a group (e.g. 0660)`);
  }
  const gid = options.group === undefined ? undefined : resolveGroup(options.group);
  await clearPath(path);
  const temporary = join(dirname(path), `.${basename(path)}.${process.pid}`);
  // Binding under another name first needs room for it in a socket address; if there
  // is none, bind in place (then the file is briefly as the umask makes it).
  const staged = Buffer.byteLength(temporary) <= SUN_PATH_MAX;
  const bindPath = staged ? temporary : path;
  if (staged) await clearPath(temporary);
  await listenOn(server, bindPath);
  try {
    chmodSync(bindPath, mode);
    if (gid !== undefined) chownSync(bindPath, -1, gid);
    if (staged) renameSync(temporary, path);
  } catch (error) {
    await new Promise<void>((resolve) => server.close(() => resolve()));
    rmSync(bindPath, { force: true });
    throw new ConfigError(`cannot give ${path} mode ${mode.toString(8)}${gid === undefined ? '' : ` and group ${gid}`}: ${errorMessage(error)}`, {
      cause: error,
    });
  }
  const inode = statSync(path).ino;
  return {
    path,
    remove() {
      try {
        if (lstatSync(path).ino === inode) rmSync(path, { force: true });
      } catch {
        // already gone
      }
    },
  };
}

/**
 * Connects to the Unix socket at `path`, trying again (backing off from 20 ms to 250 ms)
 * while it is not there yet or nobody answers on it — a server that is just starting —
 * for up to `retryMs`. Other errors, or the time running out, end it with the last error;
 * `signal` ends it at once (an AbortError), waiting or connecting, and destroys the socket
 * if it fires after the connection is made, as net.connect's own `signal` does. The
 * signal is not handed to net.connect: that keeps a listener on it for every attempt.
 * `onread`: the socket reads into memory of the caller's (recycled-reads.ts) instead of
 * emitting 'data'.
 */
export async function connectUnixSocket(path: string, options: { retryMs: number; signal?: AbortSignal; onread?: OnReadOpts }): Promise<Socket> {
  const { signal } = options;
  const deadline = performance.now() + options.retryMs;
  for (let delay = 20; ; delay = Math.min(delay * 2, 250)) {
    if (signal?.aborted) throw abortError(signal);
    try {
      const socket = await connectOnce(path, options.onread, signal);
      if (signal) {
        const onAbort = (): void => void socket.destroy(abortError(signal));
        signal.addEventListener('abort', onAbort, { once: true });
        socket.once('close', () => signal.removeEventListener('abort', onAbort));
      }
      return socket;
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if ((code !== 'ENOENT' && code !== 'ECONNREFUSED') || performance.now() + delay > deadline || signal?.aborted) throw error;
      await sleep(delay, signal).catch(() => {
        throw abortError(signal!);
      });
    }
  }
}

/** One attempt: the connected socket, or its error (an AbortError if `signal` fires first). */
function connectOnce(path: string, onread: OnReadOpts | undefined, signal: AbortSignal | undefined): Promise<Socket> {
  return new Promise<Socket>((resolve, reject) => {
    const socket = connect({ path, onread });
    const onAbort = (): void => {
      socket.destroy();
      reject(abortError(signal!));
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    const onError = (error: Error): void => {
      signal?.removeEventListener('abort', onAbort);
      reject(error);
    };
    socket.once('error', onError);
    socket.once('connect', () => {
      signal?.removeEventListener('abort', onAbort);
      socket.off('error', onError);
      resolve(socket);
    });
  });
}

/** What net.connect's `signal` ends a socket with. */
function abortError(signal: AbortSignal): Error {
  return Object.assign(new Error('The operation was aborted', { cause: signal.reason as unknown }), { name: 'AbortError', code: 'ABORT_ERR' });
}
