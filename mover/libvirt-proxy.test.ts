/**
 * The libvirt proxy's two ends over a real (in-process) xianet: host A's source proxy and
 * host B's target, with Unix servers on B standing in for libvirtd and the destination
 * QEMU's sockets. Each channel reaches its own socket with bytes both ways (an NBD server
 * speaks first), a socket nobody listens on is refused with the reason, only admitted
 * hosts get in, the source's sockets have the modes libvirt and QEMU need, what outside
 * input reaches the target's door never makes it throw or connect outside its directory,
 * and stop() leaves nothing behind.
 */
import { mkdirSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import fc from 'fast-check';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Dag } from '../shared/dag.js';
import { ConfigError } from '../shared/errors.js';
import { activeResources, leftBehind } from '../shared/startable.js';
import { WellKnownSid, type Xid } from '../shared/xid.js';
import { LocalNodeApi } from '../xianet/api/local-api.js';
import { InProcessNetwork, INTRA_AD } from '../xianet/topology.js';
import { admitXiaFrom, connectXia, listenXia, type Listening } from './connections.js';
import { encodeProxyMessage, ProxyChannel, ProxyMessageType } from './libvirt-proxy-messages.js';
import { channelSocket } from './libvirt-proxy-paths.js';
import { LibvirtProxySource } from './libvirt-proxy-source.js';
import { LibvirtProxyTarget } from './libvirt-proxy-target.js';

const root = mkdtempSync(join(tmpdir(), 'xmig-libvirt-proxy-'));
const network = new InProcessNetwork(INTRA_AD, { beaconIntervalMs: 50, helloIntervalMs: 200 });
const apiA = (): LocalNodeApi => new LocalNodeApi(network.stack('A'));
const apiB = (): LocalNodeApi => new LocalNodeApi(network.stack('B'));
let hidA: Xid;
let hidC: Xid;
const cleanups: Array<() => Promise<void> | void> = [];

beforeAll(async () => {
  await network.start();
  await network.ready();
  hidA = (await apiA().info()).hid;
  hidC = (await new LocalNodeApi(network.stack('C')).info()).hid;
});
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});
afterAll(async () => {
  await network.stop();
  rmSync(root, { recursive: true, force: true });
});

/** A Unix server at `path` that echoes what it gets, after saying `greeting` first if given. */
async function echoServer(path: string, greeting?: string): Promise<Server> {
  const server = createServer((socket) => {
    socket.on('error', () => undefined);
    if (greeting) socket.write(greeting);
    socket.pipe(socket);
  });
  await new Promise<void>((resolve) => server.listen(path, resolve));
  cleanups.push(() => new Promise<void>((resolve) => server.close(() => resolve())));
  return server;
}

async function dial(path: string): Promise<Socket> {
  const socket = connect(path);
  socket.on('error', () => undefined);
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

const closed = (socket: Socket): Promise<void> => (socket.destroyed ? Promise.resolve() : new Promise((resolve) => socket.once('close', () => resolve())));

interface Pair {
  source: LibvirtProxySource;
  target: LibvirtProxyTarget;
  sourceDir: string;
  targetDir: string;
  libvirtd: string;
  lost: string[];
}

/** A's source proxy for `domain`, B's target; the target admits `from` (default A). */
async function pair(domain: string, options: { from?: Xid; channels?: Array<'libvirtd' | 'migration' | 'nbd'> } = {}): Promise<Pair> {
  const base = mkdtempSync(join(root, 'pair-'));
  const sourceDir = join(base, 'source');
  const targetDir = join(base, 'target');
  const libvirtd = join(base, 'libvirt-sock');
  const listening = await listenXia(apiB(), WellKnownSid.LIBVIRT);
  const target = new LibvirtProxyTarget({
    listen: async () => listening,
    admit: admitXiaFrom([options.from ?? hidA]),
    dir: targetDir,
    libvirtdSocket: libvirtd,
    ...(options.channels ? { channels: options.channels } : {}),
  });
  await target.start();
  const source = new LibvirtProxySource({ domain, connect: connectXia(apiA(), Dag.parse(listening.address)), dir: sourceDir, qemuGroup: process.getgid!() });
  const lost: string[] = [];
  source.onLost((channel, reason) => lost.push(`${channel}: ${reason}`));
  await source.start();
  cleanups.push(async () => {
    await source.stop();
    await target.stop();
  });
  return { source, target, sourceDir, targetDir, libvirtd, lost };
}

describe('libvirt proxy, source and target over xianet', () => {
  it('joins each channel to its own socket on the far host and carries bytes both ways, counted', async () => {
    const p = await pair('web1');
    mkdirSync(join(p.targetDir, 'web1'), { recursive: true });
    await echoServer(p.libvirtd);
    await echoServer(channelSocket(p.targetDir, 'web1', 'migration'));
    // An NBD server speaks first: its greeting must reach QEMU even though QEMU has sent nothing.
    await echoServer(channelSocket(p.targetDir, 'web1', 'nbd'), 'NBDMAGIC');

    const nbd = await dial(channelSocket(p.sourceDir, 'web1', 'nbd'));
    expect((await readExactly(nbd, 8)).toString()).toBe('NBDMAGIC');
    const migration = await dial(channelSocket(p.sourceDir, 'web1', 'migration'));
    const stream = Buffer.alloc(4 * 1024 * 1024);
    for (let i = 0; i < stream.length; i += 4096) stream.writeUInt32BE(i, i);
    const echoed = readExactly(migration, stream.length);
    migration.write(stream);
    expect((await echoed).equals(stream)).toBe(true);
    const rpc = await dial(channelSocket(p.sourceDir, 'web1', 'libvirtd'));
    rpc.write('hello libvirtd');
    expect((await readExactly(rpc, 14)).toString()).toBe('hello libvirtd');

    expect(p.source.counts.migration).toMatchObject({ toRemote: stream.length, fromRemote: stream.length, connections: 1 });
    expect(p.source.counts.nbd).toMatchObject({ fromRemote: 8, connections: 1 });
    expect(p.target.counts.migration).toMatchObject({ connections: 1, fromSource: stream.length, toSource: stream.length });
    expect(p.target.counts.libvirtd).toMatchObject({ connections: 1, fromSource: 14, toSource: 14 });
    expect(p.lost).toEqual([]);
    for (const s of [nbd, migration, rpc]) s.destroy();
  });

  it('gives libvirtd and QEMU their sockets: libvirtd.sock and migration.sock 0600, nbd.sock 0660 for QEMU\'s group, a 0750 directory', async () => {
    const p = await pair('web2');
    const mode = (path: string): string => (statSync(path).mode & 0o777).toString(8);
    expect(mode(join(p.sourceDir, 'web2'))).toBe('750');
    expect(mode(channelSocket(p.sourceDir, 'web2', 'libvirtd'))).toBe('600');
    expect(mode(channelSocket(p.sourceDir, 'web2', 'migration'))).toBe('600');
    expect(mode(channelSocket(p.sourceDir, 'web2', 'nbd'))).toBe('660');
    expect(statSync(channelSocket(p.sourceDir, 'web2', 'nbd')).gid).toBe(process.getgid!());
    expect(p.source.uris).toEqual({
      desturi: `qemu+unix:///system?socket=${p.sourceDir}/web2/libvirtd.sock`,
      migrateuri: `unix://${p.sourceDir}/web2/migration.sock`,
      disksUri: `unix://${p.sourceDir}/web2/nbd.sock`,
    });
  });

  it('refuses a channel whose socket nobody listens on, and says why at the source', async () => {
    const p = await pair('web3');
    const migration = await dial(channelSocket(p.sourceDir, 'web3', 'migration'));
    await closed(migration);
    await expect.poll(() => p.lost.length).toBe(1);
    expect(p.lost[0]).toMatch(/^migration: cannot open the libvirt proxy migration channel to the destination: the proxy target refused: cannot connect to .*\/web3\/migration\.sock: ENOENT; is the destination QEMU waiting/);
    expect(p.target.counts.migration.refused).toBe(1);
  });

  it('refuses a channel the target does not serve', async () => {
    const p = await pair('web4', { channels: ['libvirtd', 'migration'] });
    const nbd = await dial(channelSocket(p.sourceDir, 'web4', 'nbd'));
    await closed(nbd);
    await expect.poll(() => p.lost.length).toBe(1);
    expect(p.lost[0]).toMatch(/the nbd channel is not served on this host/);
  });

  it('lets in only the hosts it admits: libvirtd is root on the far host', async () => {
    // The refusal is a reset right behind the accept. On memory links both go out in one
    // batch, and xianet's connect() then resolves a connection that has already failed
    // (its 'error' comes before the caller can listen); packets one turn apart, as UDP
    // delivers them, are what the proxy meets in real use.
    for (const segment of ['seg-A', 'seg-B']) network.segment(segment).impairments = { delayMs: 1 };
    cleanups.push(() => {
      for (const segment of ['seg-A', 'seg-B']) network.segment(segment).impairments = {};
    });
    const p = await pair('web5', { from: hidC });
    await echoServer(p.libvirtd);
    const rpc = await dial(channelSocket(p.sourceDir, 'web5', 'libvirtd'));
    await closed(rpc);
    await expect.poll(() => p.target.refusals['libvirt-stream/forbidden']).toBe(1);
    expect(p.target.counts.libvirtd.connections).toBe(0);
    expect(p.lost).toHaveLength(1);
  });

  it('refuses a domain name that cannot be a directory name before listening anywhere', () => {
    for (const domain of ['../etc', 'a/b', '.hidden', '']) {
      expect(() => new LibvirtProxySource({ domain, connect: () => Promise.reject(new Error('unused')), dir: root })).toThrow(ConfigError);
    }
  });

  it('stops leaving no socket, stream, timer or file behind', async () => {
    const before = activeResources();
    const p = await pair('web6');
    mkdirSync(join(p.targetDir, 'web6'), { recursive: true });
    const server = await echoServer(channelSocket(p.targetDir, 'web6', 'migration'));
    const migration = await dial(channelSocket(p.sourceDir, 'web6', 'migration'));
    migration.write('x');
    await readExactly(migration, 1);
    // A refused one too: its answer's grace timer must go with stop().
    const refused = await dial(channelSocket(p.sourceDir, 'web6', 'nbd'));
    await closed(refused);
    await p.source.stop();
    await p.target.stop();
    await closed(migration);
    await new Promise<void>((resolve) => server.close(() => resolve()));
    cleanups.splice(0);
    await expect.poll(() => leftBehind(before, activeResources())).toEqual({});
    expect(() => statSync(join(p.sourceDir, 'web6'))).toThrow();
  });
});

describe("the target's door under outside input", () => {
  /** A target whose streams are handed in directly: one end of a socket pair each. */
  async function door(): Promise<{ target: LibvirtProxyTarget; send: (bytes: Buffer) => Promise<void>; dir: string; joined: () => number }> {
    const dir = mkdtempSync(join(root, 'door-'));
    mkdirSync(join(dir, 'd', 'web'), { recursive: true });
    let accepted = 0;
    await echoServer(join(dir, 'd', 'web', 'migration.sock'));
    const queue: Duplex[] = [];
    const waiting: Array<(d: Duplex) => void> = [];
    const listening: Listening = {
      accept: () => new Promise((resolve) => (queue.length ? resolve(queue.shift()!) : waiting.push(resolve))),
      address: 'test',
      refused: 0,
      close: async () => undefined,
    };
    const target = new LibvirtProxyTarget({ listen: async () => listening, admit: () => undefined, dir: join(dir, 'd'), libvirtdSocket: join(dir, 'nothing'), openTimeoutMs: 2000 });
    await target.start();
    const pipe = join(dir, 'pipe.sock');
    const relay = createServer((inner) => {
      accepted++;
      const taker = waiting.shift();
      if (taker) taker(inner);
      else queue.push(inner);
    });
    await new Promise<void>((resolve) => relay.listen(pipe, resolve));
    cleanups.push(async () => {
      await target.stop();
      await new Promise<void>((resolve) => relay.close(() => resolve()));
    });
    const send = async (bytes: Buffer): Promise<void> => {
      const outer = await dial(pipe);
      outer.resume();
      outer.end(bytes);
      await closed(outer);
    };
    return { target, send, dir, joined: () => accepted };
  }

  it('turns generated, mutated and random openings into a refusal or a join inside its directory, never a throw', async () => {
    const d = await door();
    const open = encodeProxyMessage({ type: ProxyMessageType.OPEN, channel: ProxyChannel.MIGRATION, domain: 'web' });
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(
          fc.uint8Array({ maxLength: 80 }).map((b) => Buffer.from(b)),
          fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 4 }).map((flips) => {
            const frame = Buffer.from(open);
            for (const [at, value] of flips) frame[at % frame.length] = value;
            return frame;
          }),
        ),
        async (bytes) => {
          await d.send(bytes);
        },
      ),
      { numRuns: 60 },
    );
    // Nothing joined anything but the one socket there is; everything else was refused.
    const counts = d.target.counts;
    expect(counts.libvirtd.connections).toBe(0);
    expect(counts.nbd.connections).toBe(0);
    expect(d.joined()).toBe(60);
  });
});
