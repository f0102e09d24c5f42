/**
 * sd_notify for daemons under systemd (Type=notify, WatchdogSec=): READY=1 once up,
 * WATCHDOG=1 every half watchdog period. Node.js cannot send on a Unix datagram
 * socket, so this uses systemd-notify(1), naming our PID (the unit sets
 * NotifyAccess=all). Outside systemd (no NOTIFY_SOCKET) it does nothing.
 */
import { execFile } from 'node:child_process';

export interface SystemdNotifier {
  ready(status?: string): void;
  status(text: string): void;
  stop(): void;
}

function notify(...assignments: string[]): void {
  execFile('systemd-notify', [`--pid=${process.pid}`, ...assignments], () => undefined);
}

export function systemdNotifier(env: NodeJS.ProcessEnv = process.env): SystemdNotifier {
  if (!env['NOTIFY_SOCKET']) return { ready: () => undefined, status: () => undefined, stop: () => undefined };
  const watchdogUsec = Number(env['WATCHDOG_USEC'] ?? 0);
  let timer: NodeJS.Timeout | undefined;
  if (watchdogUsec > 0) {
    timer = setInterval(() => notify('WATCHDOG=1'), Math.max(500, watchdogUsec / 2000));
    timer.unref();
  }
  return {
    ready: (status) => notify('READY=1', ...(status ? [`STATUS=${status}`] : [])),
    status: (text) => notify(`STATUS=${text}`),
    stop: () => {
      if (timer) clearInterval(timer);
      notify('STOPPING=1');
    },
  };
}
