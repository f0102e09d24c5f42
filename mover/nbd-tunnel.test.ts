/**
 * The NBD tunnel's source end, against a real far end on a Unix socket standing in for
 * the STREAM to the disk target: each connection QEMU would make is opened with its
 * OPEN_NBD frame and then carried byte for byte both ways, with backpressure, counted;
 * one that breaks is reported lost; and stop() leaves no socket, listener or directory.
 */
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import { afterAll, describe, expect, it } from 'vitest';
import { activeResources, leftBehind } from '../shared/startable.js';
import { splice } from './byte-splice.js';
import { DiskMessageReader, DiskMessageType } from './disk-messages.js';
import { NbdTunnel } from './nbd-tunnel.js';

const dir = mkdtempSync(join(tmpdir(), 'xmig-tunnel-test-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** The far end: reads the opening frame, then echoes everything back; keeps what it was told. */
async function farEnd(): Promise<{ server: Server; path: string; sessions: Buffer[] }> {
  const path = join(dir, `far-${Math.random()}.sock`);
  const sessions: Buffer[] = [];
  const server = createServer((socket) => {
    socket.on('error', () => undefined);
    const reader = new DiskMessageReader();
    const onData = (chunk: Buffer): void => {
      const [open] = reader.push(chunk, 1);
      if (!open) return;
      socket.off('data', onData);
      if (open.type === DiskMessageType.OPEN_NBD) sessions.push(open.session);
      const rest = reader.rest();
      if (rest.length) socket.write(rest);
      socket.pipe(socket);
    };
    socket.on('data', onData);
  });
  await new Promise<void>((resolve) => server.listen(path, resolve));
  return { server, path, sessions };
}

const dial = (path: string) => (): Promise<Duplex> =>
  new Promise((resolve, reject) => {
    const socket = connect(path);
    socket.once('connect', () => resolve(socket)).once('error', reject);
  });

async function qemuSide(path: string): Promise<Socket> {
  const socket = connect(path);
  await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
  return socket;
}

function readExactly(socket: Socket, bytes: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    let got = 0;
    const onData = (chunk: Buffer): void => {
      parts.push(chunk);
      got += chunk.length;
      if (got >= bytes) {
        socket.off('data', onData);
        resolve(Buffer.concat(parts));
      }
    };
    socket.on('data', onData);
    socket.once('close', () => reject(new Error(`closed after ${got} of ${bytes} bytes`)));
  });
}

describe('NbdTunnel', () => {
  it('opens each connection with its session and carries 8 MiB both ways, counted', async () => {
    const far = await farEnd();
    const session = Buffer.alloc(16, 0x5a);
    const tunnel = new NbdTunnel({ connect: dial(far.path), session });
    await tunnel.start();
    const qemu = await qemuSide(tunnel.path);
    const data = Buffer.alloc(8 * 1024 * 1024);
    for (let i = 0; i < data.length; i += 4096) data.writeUInt32BE(i, i);
    const echoed = readExactly(qemu, data.length);
    qemu.write(data);
    expect((await echoed).equals(data)).toBe(true);
    expect(far.sessions).toEqual([session]);
    expect(tunnel.counts).toMatchObject({ toTarget: data.length, fromTarget: data.length, connections: 1 });
    qemu.destroy();
    await tunnel.stop();
    far.server.close();
  });

  it('reports a connection that breaks at the far end as lost, and one it cannot open', async () => {
    const far = await farEnd();
    // The tunnel's end of each connection, as a STREAM would be: it errors when the peer resets it.
    const remotes: Duplex[] = [];
    const tunnel = new NbdTunnel({
      connect: async () => {
        const remote = await dial(far.path)();
        remotes.push(remote);
        return remote;
      },
      session: Buffer.alloc(16),
    });
    const lost: string[] = [];
    tunnel.onLost((reason) => lost.push(reason));
    await tunnel.start();
    const qemu = await qemuSide(tunnel.path);
    qemu.on('error', () => undefined);
    qemu.write('hello');
    await readExactly(qemu, 5);
    const closed = new Promise((resolve) => qemu.once('close', resolve));
    remotes[0]!.destroy(new Error('reset by the peer'));
    await closed;
    await expect.poll(() => lost.length).toBe(1);
    expect(lost[0]).toBe('NBD tunnel connection lost: reset by the peer');
    far.server.close();
    // Nothing to connect to now: QEMU's connection is dropped, and that is said too.
    const again = await qemuSide(tunnel.path);
    await new Promise((resolve) => again.once('close', resolve));
    await expect.poll(() => lost.length).toBe(2);
    expect(lost[1]).toMatch(/^cannot open the NBD tunnel to the disk target/);
    await tunnel.stop();
  });

  it('refuses connections beyond its cap, and stops leaving no socket, listener or directory', async () => {
    const before = activeResources();
    const far = await farEnd();
    const tunnel = new NbdTunnel({ connect: dial(far.path), session: Buffer.alloc(16), maxConnections: 1 });
    await tunnel.start();
    const path = tunnel.path;
    const first = await qemuSide(path);
    first.write('x');
    await readExactly(first, 1);
    const second = await qemuSide(path);
    await new Promise((resolve) => second.once('close', resolve));
    expect(tunnel.counts.refused).toBe(1);
    // stop() drops what is live, quietly: the tunnel was told to go.
    const lost: string[] = [];
    tunnel.onLost((reason) => lost.push(reason));
    await tunnel.stop();
    await tunnel.stop();
    expect(lost).toEqual([]);
    expect(existsSync(path)).toBe(false);
    first.destroy();
    await new Promise<void>((resolve) => far.server.close(() => resolve()));
    await expect.poll(() => leftBehind(before, activeResources())).toEqual({});
  });
});

describe('splice', () => {
  it('passes an end through (half-close) and finishes cleanly once both sides end', async () => {
    const path = join(dir, `pair-${Math.random()}.sock`);
    const accepted = new Promise<Socket>((resolve) => {
      const server = createServer({ allowHalfOpen: true }, (s) => {
        server.close();
        resolve(s);
      });
      server.listen(path);
    });
    const a = connect({ path, allowHalfOpen: true });
    const b = await accepted;
    const innerPath = join(dir, `inner-${Math.random()}.sock`);
    const innerAccepted = new Promise<Socket>((resolve) => {
      const server = createServer({ allowHalfOpen: true }, (s) => {
        server.close();
        resolve(s);
      });
      server.listen(innerPath);
    });
    const c = connect({ path: innerPath, allowHalfOpen: true });
    const d = await innerAccepted;
    // a <-> b ==splice== c <-> d: what a writes comes out at d, and back.
    const joined = splice(b, c);
    a.end('request');
    const atD = await new Promise<string>((resolve) => {
      let text = '';
      d.on('data', (chunk: Buffer) => (text += chunk.toString()));
      d.on('end', () => resolve(text));
    });
    expect(atD).toBe('request');
    d.end('reply');
    const atA = await new Promise<string>((resolve) => {
      let text = '';
      a.on('data', (chunk: Buffer) => (text += chunk.toString()));
      a.on('end', () => resolve(text));
    });
    expect(atA).toBe('reply');
    expect(await joined.closed).toBeUndefined();
    expect(joined.counts).toEqual({ aToB: 7, bToA: 5 });
    a.destroy();
    d.destroy();
  });
});
