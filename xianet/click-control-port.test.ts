import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import type { ControlError} from '../shared/click-control-client.js';
import { ControlClient, RouteControl } from '../shared/click-control-client.js';
import { Dag } from '../shared/dag.js';
import { Identity } from '../shared/identity.js';
import { Xid, XidType } from '../shared/xid.js';
import { ClickControlPort } from './click-control-port.js';
import { MemoryLink, MemorySegment } from './memory-link.js';
import { XiaNode } from './node.js';
import { Port } from './route-table.js';

const dir = mkdtempSync(join(tmpdir(), 'xmig-ctl-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function router(name = 'R1'): XiaNode {
  const node = new XiaNode({ name, role: 'router', identity: Identity.generate(), ad: Identity.generate().xid(XidType.AD) });
  node.addInterface(new MemoryLink(`${name}/0`, { segment: new MemorySegment('a') }));
  node.addInterface(new MemoryLink(`${name}/1`, { segment: new MemorySegment('b') }));
  return node;
}

async function serve(node: XiaNode, listen: ConstructorParameters<typeof ClickControlPort>[1]): Promise<{ port: ClickControlPort; routes: RouteControl; client: ControlClient }> {
  const port = new ClickControlPort(node, listen);
  await port.start();
  const client = new ControlClient('path' in listen ? { path: listen.path } : { host: '127.0.0.1', port: Number(port.address!.split(':').pop()) });
  cleanups.push(async () => {
    await client.close();
    await port.stop();
  });
  return { port, routes: new RouteControl(client, node.name), client };
}

const hid = (n: number): string => `HID:${n.toString(16).padStart(40, '0')}`;

describe('Click control port', () => {
  it.each([
    ['TCP', () => ({ port: 0 })],
    ['Unix socket', () => ({ path: join(dir, `c${Math.random()}.sock`) })],
  ])('adds, sets, lists and removes routes over %s, changing the tables at once', async (_, listen) => {
    const node = router();
    const l = listen();
    const { routes } = await serve(node, l);
    if ('path' in l) expect(statSync(l.path).mode & 0o777).toBe(0o600);
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
    await routes.removeRoute('-', 'AD');
    expect((await routes.listRoutes('AD'))[0]).toEqual({ xid: '-', port: Port.FALLBACK, nextHop: '', flags: 0 });
    expect(await routes.hid()).toBe(node.hid.toString());
    expect(await routes.ad()).toBe(node.ad!.toString());
  });

  it('answers errors with Click status codes and messages', async () => {
    const node = router();
    const { routes, client } = await serve(node, { port: 0 });
    const status = async (p: Promise<unknown>): Promise<string> => {
      try {
        await p;
        return 'ok';
      } catch (error) {
        return `${(error as ControlError).status} ${(error as Error).message}`;
      }
    };
    await routes.addRoute(hid(1), 0);
    expect(await status(routes.addRoute(hid(1), 0))).toMatch(/^520 .*duplicate XID/);
    expect(await status(routes.setRoute(hid(1), 9))).toMatch(/^520 .*invalid port/);
    expect(await status(routes.setRoute(hid(1), 0, 'AD:xyz'))).toMatch(/^520 .*invalid next hop xid/);
    expect(await status(routes.removeRoute(hid(7)))).toMatch(/^520 .*nonexistent XID/);
    expect(await status(client.write('R1/xrc/n/proc/rt_HID.add4', 'HID:zz,0'))).toMatch(/^520 .*invalid XID/);
    expect(await status(client.read('R1/xrc/n/proc/rt_FOO.list'))).toBe("510 No element named 'R1/xrc/n/proc/rt_FOO'");
    expect(await status(client.read('R1/xrc/n/proc/rt_HID.nope'))).toBe("511 No handler named 'R1/xrc/n/proc/rt_HID.nope'");
    expect(await status(client.read('R1/xrc/n/proc/rt_HID.add4'))).toMatch(/^530 .*write-only/);
    expect(await status(client.write('R1/xrc/n/proc/rt_HID.list', ''))).toMatch(/^530 .*read-only/);
    expect((await client.request('FROB x')).status).toBe(501);
    expect((await client.request('READ')).status).toBe(500);
    expect((await client.request('CHECKWRITE R1/xrc/n/proc/rt_HID.set4')).status).toBe(200);
    expect((await client.request('CHECKREAD R1/xrc/n/proc/rt_HID.set4')).status).toBe(511);
    expect((await client.request('LLRPC R1#1')).status).toBe(501);
    expect(await client.read('list')).toMatch(/^6\nR1\/xrc\/n\/proc\/rt_AD\n/);
  });

  it('speaks the exact bytes of Click: greeting, replies, DATA framing, Goodbye', async () => {
    const node = router();
    const { port } = await serve(node, { port: 0 });
    const socket = connect(Number(port.address!.split(':').pop()), '127.0.0.1');
    let received = '';
    socket.on('data', (c: Buffer) => (received += c.toString('latin1')));
    await new Promise((r) => socket.once('connect', r));
    socket.write(`WRITE R1/xrc/n/proc/rt_SID.set4 -,1,,0\r\nREAD R1/xrc/n/proc/rt_SID.list\r\nWRITEDATA R1/xrc/n/proc/rt_SID.remove 1\n-QUIT\r\n`);
    await new Promise((r) => socket.once('close', r));
    expect(received).toBe(
      'Click::ControlSocket/1.3\r\n' +
        "200 Write handler 'R1/xrc/n/proc/rt_SID.set4' OK\r\n" +
        "200 Read handler 'R1/xrc/n/proc/rt_SID.list' OK\r\nDATA 7\r\n-,1,,0\n" +
        "200 Write handler 'R1/xrc/n/proc/rt_SID.remove' OK\r\n" +
        '200 Goodbye!\r\n',
    );
  });

  it('garbage from one client does not disturb another', async () => {
    const node = router();
    const { port, routes } = await serve(node, { port: 0 });
    const bad = connect(Number(port.address!.split(':').pop()), '127.0.0.1');
    bad.on('error', () => undefined);
    await new Promise((r) => bad.once('connect', r));
    for (let i = 0; i < 200; i++) bad.write(Buffer.from(Array.from({ length: 100 }, (_, j) => (i * 7 + j * 13) % 256)));
    bad.write(Buffer.alloc(70_000, 0x41)); // a line longer than any command: the server drops this client
    for (let i = 0; i < 50; i++) await routes.setRoute(hid(i + 1), 0);
    expect(node.routes.table(XidType.HID).size).toBe(51);
    bad.destroy();
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
    const { routes } = await serve(node, { port: 0 });
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
