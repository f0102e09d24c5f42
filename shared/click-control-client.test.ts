import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { ClickControlPort } from '../xianet/click-control-port.js';
import { MemoryLink, MemorySegment } from '../xianet/memory-link.js';
import { XiaNode } from '../xianet/node.js';
import { ControlClient, ControlError, parseControlTarget } from './click-control-client.js';
import { Identity } from './identity.js';
import { activeResources, leftBehind } from './startable.js';
import { XidType } from './xid.js';

const dir = mkdtempSync(join(tmpdir(), 'xmig-client-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});
let n = 0;
const socketPath = (): string => join(dir, `s${n++}.sock`);

function router(): XiaNode {
  const node = new XiaNode({ name: 'R1', role: 'router', identity: Identity.generate(), ad: Identity.generate().xid(XidType.AD) });
  node.addInterface(new MemoryLink('R1/0', { segment: new MemorySegment('a') }));
  return node;
}

/** A server that counts connections and answers as `answer` says (or not at all). */
async function scripted(answer: (line: string, socket: Socket) => void): Promise<{ path: string; accepted: () => number; server: Server }> {
  const path = socketPath();
  let accepted = 0;
  const server = createServer((socket) => {
    accepted++;
    socket.on('error', () => undefined);
    socket.write('Click::ControlSocket/1.3\r\n');
    let buffer = '';
    socket.on('data', (chunk: Buffer) => {
      buffer += chunk.toString('latin1');
      for (let at = buffer.indexOf('\n'); at >= 0; at = buffer.indexOf('\n')) {
        const line = buffer.slice(0, at).replace(/\r$/, '');
        buffer = buffer.slice(at + 1);
        answer(line, socket);
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(path, resolve));
  cleanups.push(() => new Promise<void>((resolve) => server.close(() => resolve())));
  return { path, accepted: () => accepted, server };
}

/** Handles closed in this turn of the event loop are gone after its close phase: two turns on, they are. */
async function closePhase(): Promise<void> {
  for (let i = 0; i < 2; i++) await new Promise((resolve) => setImmediate(resolve));
}

const clickLike = (line: string, socket: Socket): void => {
  if (/^QUIT/.test(line)) socket.end('200 Goodbye!\r\n');
  else if (/^READ /.test(line)) socket.write(`200 Read handler '${line.slice(5)}' OK\r\nDATA 5\r\n2.0.1`);
};

describe('ControlClient', () => {
  it('says QUIT on its own connection when stopped, opens no other, and leaves nothing behind', async () => {
    const before = activeResources();
    const quits: string[] = [];
    const server = await scripted((line, socket) => {
      if (/^QUIT/.test(line)) quits.push(line);
      clickLike(line, socket);
    });
    const client = new ControlClient({ path: server.path });
    expect(await client.read('version')).toBe('2.0.1');
    await client.stop();
    await client.stop();
    expect(server.accepted()).toBe(1);
    expect(quits).toEqual(['QUIT']);
    await expect(client.read('version')).rejects.toMatchObject({ code: 'ERR_STATE' });
    await new Promise<void>((resolve) => server.server.close(() => resolve()));
    await closePhase();
    expect(leftBehind(before, activeResources())).toEqual({});
  });

  it('close() of a client that never connected connects to nothing', async () => {
    const server = await scripted(clickLike);
    const client = new ControlClient({ path: server.path });
    await client.close();
    expect(server.accepted()).toBe(0);
  });

  it('gives up on a request at its deadline and on abort, and the next request gets a new connection', async () => {
    let silent = true;
    const heard: string[] = [];
    const server = await scripted((line, socket) => {
      heard.push(line);
      if (!silent) clickLike(line, socket);
    });
    const client = new ControlClient({ path: server.path }, { timeoutMs: 100 });
    cleanups.push(() => client.stop());
    await expect(client.read('version')).rejects.toMatchObject({ code: 'ERR_TIMEOUT' });
    const aborted = new AbortController();
    const pending = client.read('version', { signal: aborted.signal, timeoutMs: 60_000 });
    while (heard.length < 2) await new Promise((r) => setTimeout(r, 5));
    aborted.abort(new Error('enough'));
    await expect(pending).rejects.toThrow('enough');
    silent = false;
    expect(await client.read('version')).toBe('2.0.1');
    expect(server.accepted()).toBe(3);
  });

  it('replaces a connection the server dropped while it was idle, without the caller seeing it', async () => {
    const node = router();
    const path = socketPath();
    const port = new ClickControlPort(node, { path }, { limits: { idleTimeoutMs: 30 } });
    await port.start();
    cleanups.push(() => port.stop());
    const client = new ControlClient({ path });
    cleanups.push(() => client.stop());
    expect(await client.read('version')).toBe('2.0.1');
    // The port closes the idle connection; the client's next request goes out on a new one.
    while (port.connectionCount > 0) await new Promise((r) => setTimeout(r, 10));
    await client.write('R1/xrc/n/proc/rt_HID.set4', `HID:${'a'.repeat(40)},0,,0`);
    expect(port.refusals.count('connection', 'timeout')).toBeGreaterThanOrEqual(1);
  });

  it('sends a request again once when its kept connection turns out dead before any reply', async () => {
    let first = true;
    const server = await scripted((line, socket) => {
      if (first && /^READ/.test(line)) {
        first = false;
        socket.destroy(); // the connection dies under the request, before a byte of reply
        return;
      }
      clickLike(line, socket);
    });
    const client = new ControlClient({ path: server.path });
    cleanups.push(() => client.stop());
    await client.start();
    expect(await client.read('version')).toBe('2.0.1');
    expect(server.accepted()).toBe(2);
  });

  it('speaks TCP too, and parses multi-line errors', async () => {
    const server = createServer((socket) => {
      socket.write('Click::ControlSocket/1.3\r\n');
      socket.on('data', () => socket.write("520-Write handler 'x.set4' error:\r\n520 invalid route: \r\n"));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    cleanups.push(() => new Promise<void>((resolve) => server.close(() => resolve())));
    const port = (server.address() as { port: number }).port;
    const client = new ControlClient(`127.0.0.1:${port}`);
    cleanups.push(() => client.stop());
    const error = (await client.write('x.set4', 'bogus').catch((e: unknown) => e)) as ControlError;
    expect(error).toBeInstanceOf(ControlError);
    expect(error.status).toBe(520);
    expect(error.message).toBe("Write handler 'x.set4' error: invalid route: ");
  });

  it('refuses a server that is not a Click control socket, and one that cannot be reached', async () => {
    const server = createServer((socket) => socket.end('SSH-2.0-OpenSSH\r\n'));
    const path = socketPath();
    await new Promise<void>((resolve) => server.listen(path, resolve));
    cleanups.push(() => new Promise<void>((resolve) => server.close(() => resolve())));
    const client = new ControlClient(path);
    await expect(client.read('version')).rejects.toThrow(/not a Click control socket/);
    await client.stop();
    const nowhere = new ControlClient(join(dir, 'nobody.sock'));
    await expect(nowhere.read('version')).rejects.toMatchObject({ code: 'ERR_UNREACHABLE' });
    await nowhere.stop();
  });

  it('parses targets: paths, host:port, [v6]:port', () => {
    expect(parseControlTarget('/run/xmig/control.sock')).toEqual({ path: '/run/xmig/control.sock' });
    expect(parseControlTarget('127.0.0.1:7777')).toEqual({ host: '127.0.0.1', port: 7777 });
    expect(parseControlTarget('[::1]:7777')).toEqual({ host: '::1', port: 7777 });
    expect(parseControlTarget('localhost:7777')).toEqual({ host: 'localhost', port: 7777 });
    expect(parseControlTarget('relative.sock')).toEqual({ path: 'relative.sock' });
  });
});
