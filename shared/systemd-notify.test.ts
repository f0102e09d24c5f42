import { mkdtempSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { activeResources, leftBehind } from './startable.js';
import { systemdNotifier, watchdogIntervalMs } from './systemd-notify.js';

interface Receiver {
  bind(path: string): void;
  close(): void;
  on(event: 'message', listener: (message: Buffer) => void): void;
}
const { createSocket } = createRequire(import.meta.url)('unix-dgram') as { createSocket: (type: 'unix_dgram') => Receiver };

/** What systemd does: a Unix datagram socket bound at NOTIFY_SOCKET, one message per datagram. */
function fakeManager(): { path: string; messages: string[]; next(match: RegExp): Promise<string>; close(): void } {
  const dir = mkdtempSync(join(tmpdir(), 'xmig-notify-'));
  const path = join(dir, 'notify');
  const socket = createSocket('unix_dgram');
  const messages: string[] = [];
  const waiters: Array<{ match: RegExp; resolve: (m: string) => void }> = [];
  socket.on('message', (data) => {
    const text = data.toString('utf8');
    messages.push(text);
    for (const waiter of [...waiters]) {
      if (waiter.match.test(text)) {
        waiters.splice(waiters.indexOf(waiter), 1);
        waiter.resolve(text);
      }
    }
  });
  socket.bind(path);
  return {
    path,
    messages,
    next: (match) => {
      const seen = messages.find((m) => match.test(m));
      if (seen) return Promise.resolve(seen);
      return new Promise((resolve) => waiters.push({ match, resolve }));
    },
    close: () => {
      socket.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

describe('systemdNotifier', () => {
  let manager: ReturnType<typeof fakeManager> | undefined;
  afterEach(() => {
    manager?.close();
    manager = undefined;
  });

  it('does nothing outside systemd', () => {
    const before = activeResources();
    const notifier = systemdNotifier({ env: {} });
    notifier.ready('up');
    notifier.stop();
    expect(leftBehind(before, activeResources())).toEqual({});
  });

  it('sends READY, STATUS, WATCHDOG and STOPPING as datagrams from this process, forking nothing', async () => {
    manager = fakeManager();
    const errors: Error[] = [];
    const before = activeResources();
    const notifier = systemdNotifier({ env: { NOTIFY_SOCKET: manager.path, WATCHDOG_USEC: '40000' }, onError: (e) => errors.push(e) });
    notifier.ready('node R1 up');
    expect(await manager.next(/^READY=1/)).toBe('READY=1\nSTATUS=node R1 up');
    notifier.status('draining');
    expect(await manager.next(/^STATUS=draining$/)).toBe('STATUS=draining');
    expect(await manager.next(/^WATCHDOG=1$/)).toBe('WATCHDOG=1');
    // No systemd-notify child at any point: every message came from our own socket.
    expect(activeResources()['ProcessWrap'] ?? 0).toBe(before['ProcessWrap'] ?? 0);
    notifier.stop();
    notifier.stop();
    expect(await manager.next(/^STOPPING=1$/)).toBe('STOPPING=1');
    expect(manager.messages.filter((m) => m === 'STOPPING=1')).toHaveLength(1);
    expect(leftBehind(before, activeResources())).toEqual({});
    expect(errors).toEqual([]);
  });

  it('reports a socket that is not there instead of throwing', async () => {
    const errors: Error[] = [];
    const seen = new Promise<void>((resolve) => {
      const notifier = systemdNotifier({
        env: { NOTIFY_SOCKET: join(tmpdir(), 'xmig-no-such-notify-socket') },
        onError: (error) => {
          errors.push(error);
          resolve();
        },
      });
      notifier.ready();
      notifier.stop();
    });
    await seen;
    expect(errors[0]?.message).toMatch(/send|ENOENT|-2/);
  });

  it('pings the watchdog at half its period, and only for the process it names', () => {
    expect(watchdogIntervalMs({})).toBeUndefined();
    expect(watchdogIntervalMs({ WATCHDOG_USEC: '30000000' })).toBe(15_000);
    expect(watchdogIntervalMs({ WATCHDOG_USEC: '30000000', WATCHDOG_PID: String(process.pid) })).toBe(15_000);
    expect(watchdogIntervalMs({ WATCHDOG_USEC: '30000000', WATCHDOG_PID: '1' })).toBeUndefined();
    expect(watchdogIntervalMs({ WATCHDOG_USEC: 'junk' })).toBeUndefined();
  });
});
