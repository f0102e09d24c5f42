import { getEventListeners } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { connectUnixSocket } from './unix-socket-file.js';

const dir = mkdtempSync(join(tmpdir(), 'xmig-unix-'));
const servers: Server[] = [];
const accepted = new Set<Socket>();
afterEach(async () => {
  for (const socket of accepted) socket.destroy();
  accepted.clear();
  for (const s of servers.splice(0)) await new Promise((resolve) => s.close(resolve));
});
process.on('exit', () => rmSync(dir, { recursive: true, force: true }));

const listen = (path: string): Promise<Server> =>
  new Promise((resolve) => {
    const server = createServer((socket) => {
      accepted.add(socket);
      socket.on('error', () => undefined);
    });
    servers.push(server);
    server.listen(path, () => resolve(server));
  });

describe('connectUnixSocket', () => {
  // The clean-clone CI printed MaxListenersExceededWarning from mover tests: every attempt
  // handed the caller's signal to net.connect, which kept a listener on it for each.
  it('keeps one listener on the signal however often it tries, and none once the socket is closed', async () => {
    const path = join(dir, 'late.sock');
    const controller = new AbortController();
    setTimeout(() => void listen(path), 600); // past a dozen attempts (20 ms, doubling to 250 ms)
    const socket = await connectUnixSocket(path, { retryMs: 5_000, signal: controller.signal });
    const connected = getEventListeners(controller.signal, 'abort').length;
    socket.destroy();
    await new Promise((resolve) => socket.once('close', resolve));
    expect(connected).toBeLessThanOrEqual(1);
    expect(getEventListeners(controller.signal, 'abort')).toHaveLength(0);
  });

  it('ends at once when the signal fires while it waits between attempts', async () => {
    const controller = new AbortController();
    const started = performance.now();
    setTimeout(() => controller.abort(), 400);
    const error = await connectUnixSocket(join(dir, 'never.sock'), { retryMs: 10_000, signal: controller.signal }).catch((e: Error) => e);
    expect(error).toMatchObject({ name: 'AbortError' });
    expect(performance.now() - started).toBeLessThan(5_000);
    expect(getEventListeners(controller.signal, 'abort')).toHaveLength(0);
  });

  it('destroys a connected socket when the signal fires later, as net.connect({ signal }) does', async () => {
    const path = join(dir, 'up.sock');
    await listen(path);
    const controller = new AbortController();
    const socket = await connectUnixSocket(path, { retryMs: 1_000, signal: controller.signal });
    const closed = new Promise<Error | undefined>((resolve) => {
      let seen: Error | undefined;
      socket.on('error', (e) => (seen = e));
      socket.once('close', () => resolve(seen));
    });
    controller.abort();
    expect(await closed).toMatchObject({ name: 'AbortError' });
    expect(getEventListeners(controller.signal, 'abort')).toHaveLength(0);
  });

  it('gives up with the last error once its time is up', async () => {
    const error = await connectUnixSocket(join(dir, 'gone.sock'), { retryMs: 200 }).catch((e: NodeJS.ErrnoException) => e);
    expect(error).toMatchObject({ code: 'ENOENT' });
  });
});
