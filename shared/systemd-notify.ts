/**
 * sd_notify for daemons under systemd (Type=notify, WatchdogSec=): READY=1 once up,
 * WATCHDOG=1 every half watchdog period, STOPPING=1 on the way down.
 *
 * Each message is one datagram written from this process to the Unix datagram socket
 * systemd names in NOTIFY_SOCKET, as libsystemd's sd_notify() does. Node.js 20 has no
 * Unix datagram sockets (node:dgram is UDP only, node:net is stream only), so the socket
 * comes from unix-dgram, a small native binding. The sender is the service's main
 * process, so the units say NotifyAccess=main; forking systemd-notify(1) per message, as
 * before, needed NotifyAccess=all. Outside systemd (no NOTIFY_SOCKET) it does nothing.
 */
import { createRequire } from 'node:module';

export interface SystemdNotifier {
  ready(status?: string): void;
  status(text: string): void;
  /** Says STOPPING=1, stops the watchdog and closes the socket. Idempotent. */
  stop(): void;
}

/** What unix-dgram's socket offers that we use. */
interface UnixDgramSocket {
  send(buffer: Buffer, offset: number, length: number, path: string, callback?: (error?: Error) => void): void;
  close(): void;
  on(event: 'error', listener: (error: Error) => void): void;
}

type CreateSocket = (type: 'unix_dgram') => UnixDgramSocket;

let createSocketCache: CreateSocket | undefined;
function unixDgram(): CreateSocket {
  // Loaded only under systemd: commands QEMU starts (send, recv) never pay for it.
  createSocketCache ??= (createRequire(import.meta.url)('unix-dgram') as { createSocket: CreateSocket }).createSocket;
  return createSocketCache;
}

export interface NotifierOptions {
  env?: NodeJS.ProcessEnv;
  /** Told when a datagram cannot be sent (the daemon logs it; it never throws). */
  onError?: (error: Error) => void;
}

const QUIET: SystemdNotifier = { ready: () => undefined, status: () => undefined, stop: () => undefined };

/** The watchdog interval: half of WATCHDOG_USEC (as sd_watchdog_enabled advises), or none. */
export function watchdogIntervalMs(env: NodeJS.ProcessEnv): number | undefined {
  const usec = Number(env['WATCHDOG_USEC'] ?? 0);
  if (!Number.isFinite(usec) || usec <= 0) return undefined;
  // WATCHDOG_PID, when set, names the process meant to ping; another one must not.
  const pid = env['WATCHDOG_PID'];
  if (pid !== undefined && pid !== '' && Number(pid) !== process.pid) return undefined;
  return Math.max(1, Math.floor(usec / 2000));
}

export function systemdNotifier(options: NotifierOptions = {}): SystemdNotifier {
  const env = options.env ?? process.env;
  const path = env['NOTIFY_SOCKET'];
  if (!path) return QUIET;
  const onError = options.onError ?? (() => undefined);
  if (path.startsWith('@')) {
    // systemd's own managers use a path; abstract sockets are not reachable through unix-dgram.
    onError(new Error(`NOTIFY_SOCKET ${path} is an abstract socket; sd_notify is off`));
    return QUIET;
  }
  let socket: UnixDgramSocket | undefined;
  try {
    socket = unixDgram()('unix_dgram');
    socket.on('error', onError);
  } catch (error) {
    onError(error as Error);
    return QUIET;
  }
  const send = (...assignments: string[]): void => {
    if (!socket) return;
    const message = Buffer.from(assignments.join('\n'), 'utf8');
    socket.send(message, 0, message.length, path, (error) => {
      if (error) onError(error);
    });
  };
  const interval = watchdogIntervalMs(env);
  let timer: NodeJS.Timeout | undefined;
  if (interval !== undefined) {
    timer = setInterval(() => send('WATCHDOG=1'), interval);
    timer.unref();
  }
  return {
    ready: (status) => send('READY=1', ...(status ? [`STATUS=${status}`] : [])),
    status: (text) => send(`STATUS=${text}`),
    stop: () => {
      if (!socket) return;
      if (timer) clearInterval(timer);
      timer = undefined;
      send('STOPPING=1');
      socket.close();
      socket = undefined;
    },
  };
}
