/**
 * `xmig tunnel`: TCP clients on host A reach a TCP service on host B through `tunnel
 * connect` (A) → XIA STREAM through router R1 → `tunnel serve` (B), on UDP links of MTU
 * 1500. Bytes arrive intact both ways, ends travel through, several connections at once;
 * a connection rides out B's node frozen for 3 s; a service that is down closes the
 * client's connection (the tunnel lives on, and carries the next one once it is up); a
 * connection over the cap is refused and counted; and bad targets are one-line errors.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Dag } from '../../shared/dag.js';
import { startXmig, type XmigProcess } from '../support/processes.js';
import { MIGRATION_HOSTS, UdpNetwork } from '../support/udp-network.js';
import { waitFor } from '../support/wait.js';

const network = new UdpNetwork(MIGRATION_HOSTS, { mtu: 1500 });
const dir = mkdtempSync(join(tmpdir(), 'xmig-tunnel-it-'));
const servers = new Set<Server>();
const processes = new Set<XmigProcess>();

beforeAll(() => network.start(), 120_000);
afterAll(async () => {
  await Promise.all([...processes].map((p) => p.stop()));
  for (const server of servers) server.close();
  await network.stop();
  rmSync(dir, { recursive: true, force: true });
});

/** A TCP echo service on loopback (what iperf3 or sshd would be); ends its side when the client ends. */
async function echoService(port = 0): Promise<{ server: Server; port: number }> {
  const server = createServer((socket) => {
    socket.on('error', () => undefined);
    socket.pipe(socket);
  });
  servers.add(server);
  await new Promise<void>((resolve, reject) => server.once('error', reject).listen(port, '127.0.0.1', () => resolve()));
  return { server, port: (server.address() as { port: number }).port };
}

async function serve(name: string, to: string, extra: string[] = []): Promise<{ process: XmigProcess; dag: string }> {
  const process = startXmig(['tunnel', 'serve', '--api', network.api('B'), '--key', join(dir, `${name}.key`), '--to', to, ...extra]);
  processes.add(process);
  const listening = await process.waitForLog('tunnel.listening', 60_000);
  return { process, dag: String(listening['dag']) };
}

async function connectEnd(to: string, extra: string[] = []): Promise<{ process: XmigProcess; port: number }> {
  const process = startXmig(['tunnel', 'connect', '--api', network.api('A'), '--to', to, ...extra]);
  processes.add(process);
  const listening = await process.waitForLog('tunnel.listening', 60_000);
  return { process, port: Number(String(listening['address']).split(':').pop()) };
}

function client(port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    socket.once('connect', () => resolve(socket)).once('error', reject);
  });
}

/** Writes `data`, ends, and collects what comes back until the far end ends: resolves with it, or how the connection ended otherwise. */
function roundTrip(socket: Socket, data: Buffer, endAfter = true): Promise<{ back: Buffer; ended: 'end' | 'closed' }> {
  return new Promise((resolve) => {
    const parts: Buffer[] = [];
    let ended: 'end' | 'closed' = 'closed';
    socket.on('data', (d: Buffer) => parts.push(d));
    socket.on('end', () => (ended = 'end'));
    socket.on('error', () => undefined);
    socket.on('close', () => resolve({ back: Buffer.concat(parts), ended }));
    socket.write(data);
    if (endAfter) socket.end();
  });
}

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

describe('xmig tunnel', () => {
  let port: number;
  let serveEnd: { process: XmigProcess; dag: string };

  beforeAll(async () => {
    const service = await echoService();
    serveEnd = await serve('echo', `127.0.0.1:${service.port}`);
    port = (await connectEnd(serveEnd.dag)).port;
  }, 120_000);

  it('carries bytes intact both ways, three connections at once, and their ends', async () => {
    const payloads = [randomBytes(4 << 20), randomBytes(1 << 20), randomBytes(3)];
    const results = await Promise.all(payloads.map(async (p) => roundTrip(await client(port), p)));
    for (const [i, r] of results.entries()) {
      expect(r.ended, `connection ${i}`).toBe('end');
      expect(r.back.length, `connection ${i}`).toBe(payloads[i]!.length);
      expect(sha(r.back), `connection ${i}`).toBe(sha(payloads[i]!));
    }
  }, 120_000);

  it("rides out B's node frozen for 3 s", async () => {
    const socket = await client(port);
    const first = randomBytes(256 << 10);
    const second = randomBytes(256 << 10);
    const back: Buffer[] = [];
    socket.on('data', (d: Buffer) => back.push(d));
    const closed = new Promise<void>((resolve) => socket.on('close', () => resolve()));
    socket.on('error', () => undefined);
    socket.write(first);
    await waitFor(() => Buffer.concat(back).length >= first.length, 60_000, 'the first bytes back');
    network.signal('B', 'SIGSTOP');
    try {
      socket.write(second);
      await new Promise((r) => setTimeout(r, 3000));
    } finally {
      network.signal('B', 'SIGCONT');
    }
    socket.end();
    await closed;
    const all = Buffer.concat(back);
    expect(all.length).toBe(first.length + second.length);
    expect(sha(all)).toBe(sha(Buffer.concat([first, second])));
  }, 120_000);

  it('closes the connection of a service that is down, and carries the next once it is up', async () => {
    const spare = await echoService();
    const downPort = spare.port;
    await new Promise<void>((resolve) => spare.server.close(() => resolve()));
    const down = await serve('down', `127.0.0.1:${downPort}`);
    const entry = await connectEnd(down.dag);
    const refused = await roundTrip(await client(entry.port), Buffer.from('hello'), false);
    expect(refused.back.length).toBe(0);
    await down.process.waitForLog('tunnel.unreachable', 30_000);
    await echoService(downPort);
    const carried = await roundTrip(await client(entry.port), Buffer.from('hello again'));
    expect(carried.back.toString()).toBe('hello again');
  }, 120_000);

  it('refuses a connection over --max-connections and counts it', async () => {
    const service = await echoService();
    const capped = await serve('capped', `127.0.0.1:${service.port}`, ['--max-connections', '1']);
    const entry = await connectEnd(capped.dag);
    const held = await client(entry.port);
    held.on('error', () => undefined);
    held.write('x');
    await new Promise<void>((resolve) => held.once('data', () => resolve()));
    const over = await roundTrip(await client(entry.port), Buffer.from('y'), false);
    expect(over.back.length).toBe(0);
    const refusal = await capped.process.waitForLog('tunnel.refused', 30_000);
    expect(refusal['reason']).toBe('cap');
    held.destroy();
  }, 120_000);

  it('says in one line what is wrong with a target that is not a tunnel, or a serve without a key', async () => {
    const host = Dag.hostAddress(network.ad('AD1'), network.hid('B')).toString();
    const notTunnel = startXmig(['tunnel', 'connect', '--api', network.api('A'), '--to', host]);
    processes.add(notTunnel);
    expect(await notTunnel.exited).not.toBe(0);
    expect(notTunnel.stderr.join('')).toMatch(/not at a tunnel's SID/);
    const keyless = startXmig(['tunnel', 'serve', '--api', network.api('B'), '--to', '127.0.0.1:9']);
    processes.add(keyless);
    expect(await keyless.exited).not.toBe(0);
    expect(keyless.stderr.join('')).toMatch(/--key FILE or --sid SID/);
  }, 60_000);
});
