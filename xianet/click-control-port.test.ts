import { lstatSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Registry } from 'prom-client';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import type { ControlError } from '../shared/click-control-client.js';
import { ControlClient, RouteControl } from '../shared/click-control-client.js';
import { Dag } from '../shared/dag.js';
import { Identity } from '../shared/identity.js';
import { activeResources, leftBehind } from '../shared/startable.js';
import { Xid, XidType } from '../shared/xid.js';
import { ClickControlPort, type ClickControlPortOptions, type ControlListen } from './click-control-port.js';
import { MemoryLink, MemorySegment } from './memory-link.js';
import { XiaNode } from './node.js';
import { Port } from './route-table.js';

const dir = mkdtempSync(join(tmpdir(), 'xmig-ctl-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

let sockets = 0;
const socketPath = (): string => join(dir, `c${sockets++}.sock`);

function router(name = 'R1'): XiaNode {
  const node = new XiaNode({ name, role: 'router', identity: Identity.generate(), ad: Identity.generate().xid(XidType.AD) });
  node.addInterface(new MemoryLink(`${name}/0`, { segment: new MemorySegment('a') }));
  node.addInterface(new MemoryLink(`${name}/1`, { segment: new MemorySegment('b') }));
  return node;
}

async function started(node: XiaNode, listen: ControlListen, options: ClickControlPortOptions = {}): Promise<ClickControlPort> {
  const port = new ClickControlPort(node, listen, options);
  await port.start();
  cleanups.push(() => port.stop());
  return port;
}

async function serve(node: XiaNode, listen: ControlListen = { path: socketPath() }, options: ClickControlPortOptions = {}) {
  const port = await started(node, listen, options);
  const client = new ControlClient('path' in listen ? { path: listen.path } : { host: '127.0.0.1', port: port.tcpPort! });
  cleanups.push(() => client.stop());
  return { port, routes: new RouteControl(client, node.name), client };
}

/** A raw connection that collects what the server says. */
async function raw(port: ClickControlPort): Promise<{ socket: Socket; text: () => string; closed: Promise<void>; waitFor: (what: string | RegExp) => Promise<void> }> {
  const address = port.address!;
  const socket = port.tcpPort !== undefined ? connect(port.tcpPort, '127.0.0.1') : connect(address);
  let text = '';
  const waiters = new Set<() => void>();
  socket.on('data', (chunk: Buffer) => {
    text += chunk.toString('latin1');
    for (const w of waiters) w();
  });
  socket.on('error', () => undefined);
  const closed = new Promise<void>((resolve) => socket.once('close', () => {
    for (const w of waiters) w();
    resolve();
  }));
  cleanups.push(() => void socket.destroy());
  await new Promise((resolve) => socket.once('connect', resolve));
  const waitFor = (what: string | RegExp): Promise<void> =>
    new Promise((resolve, reject) => {
      const check = (): void => {
        if (typeof what === 'string' ? text.includes(what) : what.test(text)) {
          waiters.delete(check);
          resolve();
        } else if (socket.destroyed) {
          waiters.delete(check);
          reject(new Error(`closed before ${String(what)}; got ${JSON.stringify(text.slice(-300))}`));
        }
      };
      waiters.add(check);
      check();
    });
  return { socket, text: () => text, closed, waitFor };
}

const hid = (n: number): string => `HID:${n.toString(16).padStart(40, '0')}`;

async function status(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'ok';
  } catch (error) {
    return `${(error as ControlError).status} ${(error as Error).message}`;
  }
}

describe('Click control port: tables', () => {
  it.each([
    ['a Unix socket', () => ({ path: socketPath() })],
    ['TCP with a token', () => ({ port: 0, tokenFile: join(dir, `token${sockets++}`) })],
  ])('adds, sets, lists and removes routes over %s, changing the tables at once', async (_, listen) => {
    const node = router();
    const l = listen();
    const port = await started(node, l);
    const client = new ControlClient('path' in l ? { path: l.path } : { host: '127.0.0.1', port: port.tcpPort! }, 'tokenFile' in l ? { tokenFile: l.tokenFile } : {});
    cleanups.push(() => client.stop());
    const routes = new RouteControl(client, node.name);
    await routes.addRoute(hid(1), 0, hid(2), 0);
    expect(node.routes.route(Xid.parse(hid(1)))).toMatchObject({ port: 0, origin: 'control' });
    await routes.setRoute(hid(1), 1, hid(3), 5);
    expect(node.routes.route(Xid.parse(hid(1)))?.port).toBe(1);
    await routes.setRoute('-', 1, hid(3), 0, 'AD');
    const listed = await routes.listRoutes('AD');
    expect(listed[0]).toEqual({ xid: '-', port: 1, nextHop: hid(3), flags: 0 });
    expect(listed.some((r) => r.xid === node.ad!.toString() && r.port === Port.LOCAL)).toBe(true);
    expect(await routes.route(hid(1))).toEqual({ xid: hid(1), port: 1, nextHop: hid(3), flags: 5 });
    await routes.removeRoute(hid(1));
    expect(node.routes.route(Xid.parse(hid(1)))).toBeUndefined();
    // As on xia-core: removing the default route leaves it at port -1 (discard).
    await routes.removeRoute('-', 'AD');
    expect((await routes.listRoutes('AD'))[0]).toEqual({ xid: '-', port: Port.DISCARD, nextHop: '', flags: 0 });
    expect(node.routes.table(XidType.AD).defaultRoute?.port).toBe(Port.DISCARD);
    // The router's own XIDs, from its tables as on Click, and from xmig's N/xrc.
    expect(await routes.hid()).toBe(node.hid.toString());
    expect(await routes.ad()).toBe(node.ad!.toString());
    expect((await client.read(`${node.name}/xrc.hid`)).trim()).toBe(node.hid.toString());
  });

  it('answers errors with Click status codes and messages', async () => {
    const node = router();
    const { routes, client } = await serve(node);
    await routes.addRoute(hid(1), 0);
    expect(await status(routes.addRoute(hid(1), 0))).toBe("520 Write handler 'R1/xrc/n/proc/rt_HID.add4' error: duplicate XID: ");
    expect(await status(routes.setRoute(hid(1), 9))).toMatch(/^520 .*invalid port: R1 has no interface 9/);
    expect(await status(routes.setRoute(hid(1), -5))).toMatch(/^520 .*invalid port: -5 is not a port/);
    expect(await status(routes.setRoute(hid(1), 0, 'AD:xyz'))).toMatch(/^520 .*invalid next hop xid: $/);
    expect(await status(routes.removeRoute(hid(7)))).toMatch(/^520 .*nonexistent XID: $/);
    expect(await status(client.write('R1/xrc/n/proc/rt_HID.add4', 'HID:zz,0'))).toMatch(/^520 .*invalid XID: $/);
    expect(await status(client.write('R1/xrc/n/proc/rt_HID.add4', `${node.ad},0`))).toMatch(/^520 .*is not an HID/);
    expect(await status(client.read('R1/xrc/n/proc/rt_FOO.list'))).toBe("510 No element named 'R1/xrc/n/proc/rt_FOO'");
    expect(await status(client.read('R1/xrc/n/proc/rt_HID.nope'))).toBe("511 No handler named 'R1/xrc/n/proc/rt_HID.nope'");
    expect(await status(client.read('R1/xrc/n/proc/rt_HID.add4'))).toMatch(/^530 .*write-only/);
    expect(await status(client.write('R1/xrc/n/proc/rt_HID.list', ''))).toMatch(/^530 .*read-only/);
    expect((await client.request('FROB x')).status).toBe(501);
    expect((await client.request('READ')).status).toBe(500);
    expect((await client.request('CHECKWRITE R1/xrc/n/proc/rt_HID.set4')).status).toBe(200);
    expect((await client.request('CHECKREAD R1/xrc/n/proc/rt_HID.set4')).messages).toEqual(["Handler 'R1/xrc/n/proc/rt_HID.set4' not readable"]);
    expect((await client.request('LLRPC R1/xrc#1')).messages).toEqual(["Cannot call LLRPC 'R1/xrc#1' remotely"]);
    expect((await client.request('LLRPC R1/xrc#zz')).status).toBe(500);
    expect(await client.read('list')).toMatch(/^6\nR1\/xrc\/n\/proc\/rt_AD\n/);
    expect(await client.read('2.name')).toBe('R1/xrc/n/proc/rt_HID');
    expect(await client.read('.version')).toBe('2.0.1');
    expect((await client.request(`READ R1/xrc/n/proc/rt_HID.list x`)).status).toBe(590);
    // Click's integer syntax for ports and flags: hex, octal, underscores.
    await routes.setRoute(hid(2), 0, '', 0x10);
    await client.write('R1/xrc/n/proc/rt_HID.set4', `${hid(3)},0x1,,0_17`);
    expect(node.routes.route(Xid.parse(hid(3)))).toMatchObject({ port: 1, flags: 0o17 });
  });

  it('speaks the exact bytes of Click: greeting, replies, DATA framing, Goodbye, and the end of input', async () => {
    const node = router();
    const port = await started(node, { path: socketPath() });
    const c = await raw(port);
    c.socket.write(`WRITE R1/xrc/n/proc/rt_SID.set4 -,1,,0\r\nREAD R1/xrc/n/proc/rt_SID.list\r\nWRITEDATA R1/xrc/n/proc/rt_SID.remove 1\n-QUIT\r\n`);
    await c.closed;
    expect(c.text()).toBe(
      'Click::ControlSocket/1.3\r\n' +
        "200 Write handler 'R1/xrc/n/proc/rt_SID.set4' OK\r\n" +
        "200 Read handler 'R1/xrc/n/proc/rt_SID.list' OK\r\nDATA 7\r\n-,1,,0\n" +
        "200 Write handler 'R1/xrc/n/proc/rt_SID.remove' OK\r\n" +
        '200 Goodbye!\r\n',
    );
    // A command cut by the end of input is still run; data cut by it is "Not enough data".
    const d = await raw(port);
    d.socket.end('READ version\r\nWRITEDATA R1/xrc/n/proc/rt_SID.remove 10\r\nabc');
    await d.closed;
    // ... and, as on Click, the bytes the data did not take are then read as a command.
    expect(d.text()).toBe(
      "Click::ControlSocket/1.3\r\n200 Read handler 'version' OK\r\nDATA 5\r\n2.0.1500 Not enough data\r\n501 Command 'ABC' unimplemented\r\n",
    );
    // A CR LF split across two reads is one line end, before data too.
    const e = await raw(port);
    e.socket.write(`WRITEDATA R1/xrc/n/proc/rt_SID.set4 6\r`);
    await new Promise((r) => setTimeout(r, 20));
    e.socket.write(`\n-,0,,0QUIT\r\n`);
    await e.closed;
    expect(e.text()).toBe("Click::ControlSocket/1.3\r\n200 Write handler 'R1/xrc/n/proc/rt_SID.set4' OK\r\n200 Goodbye!\r\n");
  });

  it('a route set through the port changes forwarding immediately', async () => {
    const left = new MemorySegment('left');
    const right = new MemorySegment('right');
    const node = new XiaNode({ name: 'R9', role: 'router', identity: Identity.generate(), ad: Identity.generate().xid(XidType.AD) });
    node.addInterface(new MemoryLink('R9/0', { segment: left }));
    node.addInterface(new MemoryLink('R9/1', { segment: right }));
    const seen: string[] = [];
    for (const [name, segment] of [['L', left], ['R', right]] as const) {
      const sniffer = new MemoryLink(name, { segment });
      sniffer.onReceive(() => seen.push(name));
      node.neighbors.learn({ hid: Xid.parse(hid(name === 'L' ? 0xa : 0xb)), port: name === 'L' ? 0 : 1, address: sniffer.address!, expiresAt: Date.now() + 60_000 });
    }
    await node.start();
    cleanups.push(() => node.stop());
    const { routes } = await serve(node);
    const dst = Dag.chain(Xid.parse(hid(0x77)));
    const send = async (): Promise<void> => {
      node.sendPacket(dst, Buffer.from('x'));
      await new Promise((r) => setTimeout(r, 10));
    };
    await routes.setRoute(hid(0x77), 0, hid(0xa));
    await send();
    await routes.setRoute(hid(0x77), 1, hid(0xb));
    await send();
    await routes.removeRoute(hid(0x77));
    await send();
    expect(seen).toEqual(['L', 'R']);
    expect(node.counters.dropped.unreachable).toBe(1);
  });
});

describe('Click control port: who may use it', () => {
  it('is a Unix socket of mode 0660 by default, with the group it is given', async () => {
    const path = socketPath();
    await started(router(), { path, group: process.getgid!() });
    expect(statSync(path).mode & 0o777).toBe(0o660);
    expect(statSync(path).gid).toBe(process.getgid!());
    const other = socketPath();
    await started(router(), { path: other, mode: 0o600 });
    expect(statSync(other).mode & 0o777).toBe(0o600);
  });

  it('refuses modes open to every user, a group that does not exist, a live socket and a file that is not a socket', async () => {
    await expect(started(router(), { path: socketPath(), mode: 0o666 })).rejects.toThrow(/lets every local user connect/);
    await expect(started(router(), { path: socketPath(), group: 'no-such-group-xmig' })).rejects.toThrow(/no group "no-such-group-xmig"/);
    const live = socketPath();
    await started(router(), { path: live });
    await expect(started(router(), { path: live })).rejects.toThrow(/is in use/);
    const file = join(dir, 'not-a-socket');
    writeFileSync(file, 'keep me');
    await expect(started(router(), { path: file })).rejects.toThrow(/is not a socket; not replacing it/);
    expect(lstatSync(file).isFile()).toBe(true);
  });

  it('replaces a socket file nobody listens on (left by a crash)', async () => {
    const path = socketPath();
    // A process killed while it listens leaves its socket file behind.
    spawnSync(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(path)}, () => process.kill(process.pid, 'SIGKILL'))`]);
    expect(lstatSync(path).isSocket()).toBe(true);
    const { client } = await serve(router(), { path });
    expect(await client.read('version')).toBe('2.0.1');
  });

  it('listens on TCP only on loopback, and there is read-only without a token', async () => {
    for (const host of ['0.0.0.0', '10.1.2.3', '::', 'example.com']) {
      expect(() => new ClickControlPort(router(), { host, port: 0 })).toThrow(/not a loopback address/);
    }
    const node = router();
    const { client } = await serve(node, { host: '127.0.0.1', port: 0 });
    expect(await client.read('R1/xrc/n/proc/rt_HID.list')).toContain(node.hid.toString());
    expect(await status(client.write('R1/xrc/n/proc/rt_HID.set4', `${hid(1)},0,,0`))).toBe("530 Permission denied for 'R1/xrc/n/proc/rt_HID.set4'");
    expect((await client.request('CHECKWRITE R1/xrc/n/proc/rt_HID.set4')).status).toBe(530);
    expect(node.routes.route(Xid.parse(hid(1)))).toBeUndefined();
  });

  it('on TCP with a token, writes only after the token: a wrong one is refused', async () => {
    const tokenFile = join(dir, 'tcp-token');
    const node = router();
    const port = await started(node, { port: 0, tokenFile });
    expect(statSync(tokenFile).mode & 0o777).toBe(0o640);
    const wrong = join(dir, 'wrong-token');
    writeFileSync(wrong, 'f'.repeat(64));
    const thief = new ControlClient({ host: '127.0.0.1', port: port.tcpPort! }, { tokenFile: wrong });
    cleanups.push(() => thief.stop());
    expect(await status(thief.read('version'))).toMatch(/^530 .*refused the token/);
    const owner = new ControlClient({ host: '127.0.0.1', port: port.tcpPort! }, { tokenFile });
    cleanups.push(() => owner.stop());
    await owner.write('R1/xrc/n/proc/rt_HID.set4', `${hid(1)},0,,0`);
    expect(node.routes.route(Xid.parse(hid(1)))?.port).toBe(0);
    expect(port.refusals.count('write', 'forbidden')).toBe(1);
  });

  it('a read-only Unix socket refuses every write as Click READONLY does', async () => {
    const { client } = await serve(router(), { path: socketPath(), readOnly: true });
    expect(await status(client.write('R1/xrc/n/proc/rt_HID.remove', hid(1)))).toBe("530 Permission denied for 'R1/xrc/n/proc/rt_HID.remove'");
  });
});

describe('Click control port: bounded whatever clients do', () => {
  it('holds at most maxConnections: a new one closes the one quiet longest, and a genuine client still gets through', async () => {
    const node = router();
    const port = await started(node, { path: socketPath() }, { limits: { maxConnections: 8 } });
    const idle: Socket[] = [];
    let closedByServer = 0;
    // In batches the listen backlog takes, each accepted before the next, so every one of them gets in.
    const accepted = (): number => port.connectionCount + port.refusals.count('connection', 'cap');
    for (let batch = 0; batch < 10; batch++) {
      const opened = Array.from({ length: 100 }, () => {
        const s = connect(port.address!);
        s.on('close', () => closedByServer++);
        s.resume();
        idle.push(s);
        cleanups.push(() => void s.destroy());
        return new Promise<void>((resolve, reject) => s.once('connect', resolve).once('error', reject));
      });
      await Promise.all(opened);
      await waitUntil(() => accepted() === idle.length, `the server to accept ${idle.length} connections`);
    }
    const client = new ControlClient({ path: port.address! });
    cleanups.push(() => client.stop());
    await client.write('R1/xrc/n/proc/rt_HID.set4', `${hid(5)},0,,0`);
    expect(node.routes.route(Xid.parse(hid(5)))?.port).toBe(0);
    await waitUntil(() => closedByServer >= 1000 - 7, 'the server to close all but 7 of the idle connections');
    expect(port.connectionCount).toBeLessThanOrEqual(8);
    expect(port.refusals.count('connection', 'cap')).toBe(1000 + 1 - 8);
  });

  it('closes a connection idle too long, and one whose command does not complete in time', async () => {
    const port = await started(router(), { path: socketPath() }, { limits: { idleTimeoutMs: 50, commandTimeoutMs: 50 } });
    const idle = await raw(port);
    await idle.closed;
    const slow = await raw(port);
    slow.socket.write('WRITEDATA R1/xrc/n/proc/rt_HID.set4 100\r\nHID:');
    await slow.closed;
    expect(slow.text()).toBe('Click::ControlSocket/1.3\r\n');
    expect(port.refusals.count('connection', 'timeout')).toBe(2);
    expect(port.connectionCount).toBe(0);
  });

  it('answers a 1 MiB WRITEDATA 521 as Click does, without holding it, and the connection goes on', async () => {
    const node = router();
    const port = await started(node, { path: socketPath() });
    const c = await raw(port);
    c.socket.write(`WRITEDATA R1/xrc/n/proc/rt_HID.set4 ${1 << 20}\r\n`);
    let peak = 0;
    for (let i = 0; i < 16; i++) {
      await new Promise<void>((resolve) => c.socket.write(Buffer.alloc(1 << 16, 0x41), () => resolve()));
      peak = Math.max(peak, port.bufferedBytes);
    }
    c.socket.write(`WRITE R1/xrc/n/proc/rt_HID.set4 ${hid(9)},1,,0\r\n`);
    await c.waitFor("200 Write handler 'R1/xrc/n/proc/rt_HID.set4' OK");
    expect(c.text()).toBe(
      "Click::ControlSocket/1.3\r\n521 Data too large for write handler 'R1/xrc/n/proc/rt_HID.set4'\r\n200 Write handler 'R1/xrc/n/proc/rt_HID.set4' OK\r\n",
    );
    expect(peak).toBeLessThan(70 * 1024);
    expect(node.routes.route(Xid.parse(hid(9)))?.port).toBe(1);
    expect(port.refusals.count('data', 'budget')).toBe(1);
  });

  it('skips a WRITEUNTIL body and a line over their limits, answering as Click would', async () => {
    const port = await started(router(), { path: socketPath() }, { limits: { maxDataBytes: 1024, maxLineBytes: 2048 } });
    const c = await raw(port);
    c.socket.write(`WRITEUNTIL R1/xrc/n/proc/rt_HID.set4 EOF\r\n${'x,'.repeat(5000)}\r\nEOF   \r\n`);
    c.socket.write(`WRITE R1/xrc/n/proc/rt_HID.set4 ${'y'.repeat(100_000)}\r\n`);
    c.socket.write(`READ R1/xrc/n/proc/rt_HID.list ${'z'.repeat(100_000)}\r\nQUIT\r\n`);
    await c.closed;
    expect(c.text()).toBe(
      'Click::ControlSocket/1.3\r\n' +
        "521 Data too large for write handler 'R1/xrc/n/proc/rt_HID.set4'\r\n" +
        "521 Data too large for write handler 'R1/xrc/n/proc/rt_HID.set4'\r\n" +
        "590-Read handler 'R1/xrc/n/proc/rt_HID.list' error:\r\n590 read handler 'R1/xrc/n/proc/rt_HID.list' does not take parameters\r\n" +
        '200 Goodbye!\r\n',
    );
    expect(port.refusals.count('line', 'budget')).toBe(2);
    expect(port.refusals.count('data', 'budget')).toBe(1);
  });

  it('keeps what all connections hold under its budget by closing the one holding most', async () => {
    const port = await started(router(), { path: socketPath() }, { limits: { maxBufferedBytes: 64 * 1024, maxDataBytes: 60 * 1024 } });
    const big = await raw(port);
    big.socket.write(`WRITEDATA R1/xrc/n/proc/rt_HID.set4 ${60 * 1024}\r\n${'a'.repeat(50 * 1024)}`);
    const small = await raw(port);
    small.socket.write(`WRITEDATA R1/xrc/n/proc/rt_HID.set4 ${30 * 1024}\r\n${'b'.repeat(20 * 1024)}`);
    await big.closed;
    expect(port.refusals.count('connection', 'budget')).toBe(1);
    small.socket.write(`${'b'.repeat(10 * 1024)}`);
    await small.waitFor('520');
    expect(port.bufferedBytes).toBe(0);
  });

  it('stops reading a client that does not read its replies, and loses none of them', async () => {
    const port = await started(router(), { path: socketPath() }, { limits: { maxOutputBytes: 4096 } });
    const c = await raw(port);
    c.socket.pause();
    const requests = 'READ R1/xrc/n/proc/rt_HID.handlers\r\n'.repeat(20_000);
    c.socket.write(requests);
    await new Promise((r) => setTimeout(r, 100));
    // Whenever it is looked at: what waits to be sent is one reply past the limit at most.
    expect(port.pendingOutputBytes).toBeLessThanOrEqual(4096 + 512);
    c.socket.resume();
    c.socket.write('QUIT\r\n');
    await c.closed;
    expect(c.text().split("200 Read handler 'R1/xrc/n/proc/rt_HID.handlers' OK").length - 1).toBe(20_000);
    expect(c.text().endsWith('200 Goodbye!\r\n')).toBe(true);
  });

  it('counts refusals on the registry, every series there at 0 from the start', async () => {
    const registry = new Registry();
    await started(router(), { path: socketPath() }, { registry });
    const text = await registry.metrics();
    for (const [resource, reason] of [
      ['connection', 'cap'],
      ['connection', 'timeout'],
      ['connection', 'budget'],
      ['line', 'budget'],
      ['data', 'budget'],
      ['write', 'forbidden'],
    ]) {
      expect(text).toContain(`xianet_control_refusals_total{resource="${resource}",reason="${reason}"} 0`);
    }
    expect(text).toContain('xianet_control_connections 0');
    expect(text).toContain('xianet_control_buffered_bytes 0');
  });
});

describe('Click control port: lifecycle', () => {
  it('start and stop are idempotent; stop closes every connection and leaves no socket, timer or file', async () => {
    const before = activeResources();
    const path = socketPath();
    const port = new ClickControlPort(router(), { path }, { limits: { idleTimeoutMs: 60_000 } });
    await Promise.all([port.start(), port.start()]);
    const clients = await Promise.all([raw(port), raw(port), raw(port)]);
    const client = new ControlClient({ path });
    await client.read('version');
    await port.stop();
    await port.stop();
    await Promise.all(clients.map((c) => c.closed));
    await client.stop();
    expect(() => lstatSync(path)).toThrow();
    // Handles closed in this turn of the event loop are gone after its close phase.
    for (let i = 0; i < 2; i++) await new Promise((resolve) => setImmediate(resolve));
    expect(leftBehind(before, activeResources())).toEqual({});
  });
});

async function waitUntil(condition: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 20_000;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}
