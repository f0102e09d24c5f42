/**
 * STREAM throughput, side by side in one run: between two nodes over UDP on
 * loopback (in this process), through two `xmig node` daemons and their app API
 * sockets — with loopback's 64 KiB datagrams, and at MTU 1500 with and without UDP_GRO
 * on the links' sockets (XMIG_UDP_GRO=0) — and a plain TCP socket pair as the yardstick.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import { Identity } from '../shared/identity.js';
import { Xid, XidType } from '../shared/xid.js';
import { NodeClient } from '../xianet/api/api-client.js';
import { StreamTransport } from '../xianet/xstream/stream-transport.js';
import { INTER_AD } from '../xianet/topology.js';
import { udpLayout } from '../xianet/udp-topology.js';
import { twoUdpNodes } from './two-nodes.js';
import { XMIG_ARGV } from '../test/support/processes.js';

export interface StreamResult {
  bench: 'stream';
  path: string;
  megabytes: number;
  seconds: number;
  mbytePerSecond: number;
  ratioToTcp?: number;
}

const BLOCK = Buffer.alloc(1 << 20, 0xab);

/** Writes `bytes` into `writer` and resolves when `reader` has received all of it. */
async function pump(writer: Duplex, reader: Duplex, bytes: number): Promise<number> {
  const started = performance.now();
  const received = new Promise<void>((resolve, reject) => {
    let got = 0;
    reader.on('data', (d: Buffer) => {
      got += d.length;
      if (got >= bytes) resolve();
    });
    reader.on('error', reject);
  });
  for (let sent = 0; sent < bytes; sent += BLOCK.length) {
    if (!writer.write(BLOCK)) await new Promise((r) => writer.once('drain', r));
  }
  await received;
  return (performance.now() - started) / 1000;
}

function result(path: string, bytes: number, seconds: number): StreamResult {
  return { bench: 'stream', path, megabytes: bytes / 1e6, seconds: Math.round(seconds * 1000) / 1000, mbytePerSecond: Math.round(bytes / seconds / 1e5) / 10 };
}

async function tcpPair(bytes: number): Promise<StreamResult> {
  let serverSide: Socket | undefined;
  const server = createServer((s) => (serverSide = s));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const client = connect((server.address() as { port: number }).port, '127.0.0.1');
  await new Promise((r) => client.once('connect', r));
  while (!serverSide) await new Promise((r) => setImmediate(r));
  const seconds = await pump(client, serverSide, bytes);
  client.destroy();
  serverSide.destroy();
  server.close();
  return result('tcp socket pair (loopback)', bytes, seconds);
}

async function inProcess(bytes: number): Promise<StreamResult> {
  const { a, b, stop } = await twoUdpNodes();
  const sid = Xid.random(XidType.SID);
  const server = new StreamTransport(b);
  let accepted: Duplex | undefined;
  server.listen(sid, (c) => (accepted = c));
  const client = new StreamTransport(a);
  const connection = await client.connect(b.serviceAddress(sid));
  connection.write(Buffer.alloc(1));
  while (!accepted) await new Promise((r) => setImmediate(r));
  accepted.read(1);
  const seconds = await pump(connection, accepted, bytes);
  client.close();
  server.close();
  await stop();
  return result('xia stream, two nodes on UDP, one process', bytes, seconds);
}

async function throughDaemons(bytes: number, link: { mtu?: number; gro?: boolean } = {}): Promise<StreamResult> {
  const dir = mkdtempSync(join(tmpdir(), 'xmig-bench-'));
  // Two hosts on one segment: B and C of Fig. 1b are not neighbours, so use A and C behind R1.
  const layout = udpLayout(INTER_AD, { dir, basePort: 30000 + Math.floor(Math.random() * 20000), beaconIntervalMs: 100, logLevel: 'warn', ...(link.mtu ? { mtu: link.mtu } : {}) });
  const env = link.gro === false ? { ...process.env, XMIG_UDP_GRO: '0' } : process.env;
  const wanted = ['R1', 'A', 'C'];
  const children = [];
  for (const name of wanted) {
    const config = layout.configs.get(name)!;
    Identity.loadOrCreate(config.keyFile);
    if (config.adKeyFile) Identity.loadOrCreate(config.adKeyFile);
    const file = join(dir, `${name}.json`);
    writeFileSync(file, JSON.stringify(config));
    children.push(spawn(process.execPath, [...XMIG_ARGV, 'node', '--config', file], { stdio: 'ignore', env }));
  }
  try {
    const connectWhenUp = async (name: string): Promise<NodeClient> => {
      for (let i = 0; ; i++) {
        try {
          return await NodeClient.connect(layout.configs.get(name)!.apiSocket!);
        } catch (error) {
          if (i > 100) throw error;
          await new Promise((r) => setTimeout(r, 100));
        }
      }
    };
    const apiA = await connectWhenUp('A');
    const apiC = await connectWhenUp('C');
    while (!(await apiA.info()).ad || !(await apiC.info()).ad) await new Promise((r) => setTimeout(r, 100));
    await new Promise((r) => setTimeout(r, 500));
    const server = await apiA.listen();
    let accepted: Duplex | undefined;
    server.onConnection((c) => (accepted = c));
    const connection = await apiC.connect(await server.address());
    connection.on('error', () => undefined);
    connection.write(Buffer.alloc(1));
    while (!accepted) await new Promise((r) => setTimeout(r, 5));
    accepted.on('error', () => undefined);
    await new Promise((r) => accepted!.once('readable', r));
    accepted.read(1);
    const seconds = await pump(connection, accepted, bytes);
    connection.destroy();
    await apiA.close();
    await apiC.close();
    const how = link.mtu ? `, MTU ${link.mtu}${link.gro === false ? ', XMIG_UDP_GRO=0' : ''}` : '';
    return result(`xia stream via app API, two host daemons and a router on UDP${how}`, bytes, seconds);
  } finally {
    for (const child of children) child.kill('SIGTERM');
    rmSync(dir, { recursive: true, force: true });
  }
}

export async function runStreamBench(options: { megabytes?: number } = {}): Promise<StreamResult[]> {
  const bytes = (options.megabytes ?? 256) * (1 << 20);
  const tcp = await tcpPair(bytes);
  const results = [tcp, await inProcess(bytes), await throughDaemons(bytes), await throughDaemons(bytes, { mtu: 1500 }), await throughDaemons(bytes, { mtu: 1500, gro: false })];
  for (const r of results.slice(1)) r.ratioToTcp = Math.round((r.mbytePerSecond / tcp.mbytePerSecond) * 1000) / 1000;
  return results;
}
