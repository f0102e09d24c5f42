/**
 * Fuzzed UDP datagrams into running daemons: `xmig node` processes (router R1 with the
 * mobility plugin in its process, hosts A and B), a name server on R1 and `xmig recv` on
 * B. 12,000 datagrams go to their UDP ports from a socket of nobody's: XIP packets
 * generated and mutated over the network's own XIDs (test/support/xip-arbitraries.ts),
 * carrying DGRAM, STREAM, CHUNK and XCMP payloads and every service's messages (XHCP,
 * xroute, HID-move notices, the name service, CHUNK requests and fragments, mover control
 * messages in new STREAMs), mutated at their own layer and then as packets. No process
 * dies, no node counts an internal drop (a part that threw), and afterwards the network
 * still forwards and answers: an xping across R1, a name registered and resolved, and a
 * migration stream from A's `xmig send` to B's `xmig recv` arrives intact.
 */
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createSocket } from 'node:dgram';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Dag } from '../../shared/dag.js';
import { Identity } from '../../shared/identity.js';
import { WellKnownSid, Xid, XidType } from '../../shared/xid.js';
import { NodeClient } from '../../xianet/api/api-client.js';
import { NameClient } from '../../xianet/names/name-client.js';
import { XMIG_ARGV, startXmig, type XmigProcess } from '../support/processes.js';
import { MIGRATION_HOSTS, UdpNetwork } from '../support/udp-network.js';
import { waitFor } from '../support/wait.js';
import { mutation, serviceMessages, xipPacket } from '../support/xip-arbitraries.js';

const DATAGRAMS = 12_000;

let net: UdpNetwork;
let nameServer: XmigProcess;
let nameServerDag: Dag;
let nameServerMetrics: string;
let apiA: NodeClient;

/** `xmig` with stdin from `input` and stdout hashed (send and recv speak the migration stream there). */
function mover(args: string[], input?: Buffer) {
  const child = spawn(process.execPath, [...XMIG_ARGV, ...args], { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, XMIG_LOG_LEVEL: 'info' } });
  const hash = createHash('sha256');
  let bytes = 0;
  let stderr = '';
  child.stdout!.on('data', (d: Buffer) => {
    hash.update(d);
    bytes += d.length;
  });
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  child.stdin!.on('error', () => undefined);
  child.stdin!.end(input);
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  return { child, exited, stderr: () => stderr, digest: () => hash.digest('hex'), bytes: () => bytes };
}

beforeAll(async () => {
  net = new UdpNetwork(MIGRATION_HOSTS, { metrics: true });
  net.layout.configs.get('R1')!.plugins = ['mobility'];
  await net.start();
  nameServer = startXmig(['nameserver', '--api', net.api('R1'), '--db', join(net.dir, 'names.log'), '--log-level', 'info', '--metrics-port', '0']);
  nameServerDag = Dag.parse(String((await nameServer.waitForLog('nameserver.started', 60_000))['dag']));
  nameServerMetrics = String((await nameServer.waitForLog('metrics.listening', 60_000))['url']);
  apiA = await NodeClient.connect(net.api('A'));
  // Joined: A reaches B across R1.
  await waitFor(async () => ((await apiA.ping(Dag.hostAddress(net.ad('AD1'), net.hid('B')), { count: 1, timeoutMs: 5000 })).received === 1), 120_000, 'A to reach B', 200);
}, 180_000);

afterAll(async () => {
  await apiA?.close();
  await nameServer?.stop();
  await net?.stop();
});

describe('running daemons under fuzzed UDP datagrams', () => {
  it(`take ${DATAGRAMS.toLocaleString('en')} generated and mutated datagrams of every transport: none dies, and the network still forwards and answers`, async () => {
    const ad = net.ad('AD1');
    const [r1, a, b] = ['R1', 'A', 'B'].map((n) => net.hid(n));
    const recvDag = Dag.hostAddress(ad, b!, WellKnownSid.MIGRATION);
    // B's receiver, only for A; it takes the strangers' streams and goes on waiting.
    const recv = mover(['recv', '--api', net.api('B'), '--from', a!.toString()]);
    await waitFor(() => recv.stderr().includes('"recv.listening"') || recv.child.exitCode !== null, 60_000, 'xmig recv to listen', 20);
    expect(recv.child.exitCode, recv.stderr()).toBeNull();

    const [cid] = await apiA.publishChunks([randomBytes(3000)]);
    const chunkDag = Dag.hostAddress(ad, a!, cid);
    const known = [r1!, a!, b!, ad, cid!, WellKnownSid.MOBILITY, WellKnownSid.NAME_SERVER, WellKnownSid.MIGRATION, Xid.random(XidType.SID)];
    const messages = serviceMessages({ ad, routerHid: r1!, nameServer: nameServerDag, chunks: [chunkDag], migration: [recvDag] });
    const services = [recvDag, chunkDag, nameServerDag, Dag.hostAddress(ad, b!), Dag.hostAddress(ad, a!)];
    expect(new Set(messages.map((m) => m.service))).toEqual(new Set(['xhcp', 'xroute', 'mobility', 'names', 'chunk', 'mover']));

    // Every UDP port of the network: R1's two interfaces, A's and B's.
    const ports = [...net.layout.configs.values()].flatMap((c) => c.interfaces.map((i) => i.port));
    const socket = createSocket('udp4');
    await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
    let sent = 0;
    try {
      await fc.assert(
        fc.asyncProperty(xipPacket(known, services, messages), mutation, fc.constantFrom(...ports), async (packet, mutate, port) => {
          const datagram = mutate(packet);
          if (datagram.length === 0) return;
          await new Promise<void>((resolve) => socket.send(datagram, port, '127.0.0.1', () => resolve()));
          // Yield now and then: the daemons read as they are sent, and the kernel's buffers are not the test.
          if (++sent % 100 === 0) await new Promise((r) => setTimeout(r, 5));
        }),
        { numRuns: DATAGRAMS },
      );
    } finally {
      socket.close();
    }
    expect(sent).toBeGreaterThanOrEqual(DATAGRAMS * 0.95);

    // No process died.
    for (const [name, process] of net.processes) expect(process.child.exitCode, `${name}: ${process.stderr.join('\n')}`).toBeNull();
    expect(nameServer.child.exitCode, nameServer.stderr.join('\n')).toBeNull();
    expect(recv.child.exitCode, recv.stderr()).toBeNull();
    // The datagrams reached the nodes, and no part of a node threw on one.
    await waitFor(async () => (await net.metric('R1', 'xianet_packets_dropped_total', { reason: 'malformed' })) > 0, 60_000, 'R1 to count malformed packets');
    for (const name of ['R1', 'A', 'B']) expect(await net.metric(name, 'xianet_packets_dropped_total', { reason: 'internal' }), name).toBe(0);
    // And deep: the plugin judged notices, the name server answered requests. (The mover
    // messages, in STREAMs from forged sources, end at the STREAM handshake: never
    // confirmed, never handed to recv; its own parser is fuzzed in mover/*.test.ts.)
    expect(await net.metric('R1', 'xmig_plugin_notices_received_total')).toBeGreaterThan(0);
    expect(await net.metric('R1', 'xmig_plugin_notices_rejected_total')).toBeGreaterThan(0);
    const nsText = await (await fetch(nameServerMetrics)).text();
    const nsRequests = [...nsText.matchAll(/^xmig_nameserver_requests_total\{[^}]*\} (\d+)/gm)].reduce((sum, m) => sum + Number(m[1]), 0);
    expect(nsRequests).toBeGreaterThan(0);

    // Still forwarding and answering: an xping across R1 ...
    const pinged = await apiA.ping(Dag.hostAddress(ad, b!), { count: 5, intervalMs: 20, timeoutMs: 30_000 });
    expect(pinged.received).toBe(5);
    // ... the name server registers and resolves ...
    const names = new NameClient(apiA, { nameServer: nameServerDag });
    try {
      const owner = Identity.load(net.layout.configs.get('A')!.keyFile);
      const dag = Dag.hostAddress(ad, a!);
      await names.register('after-the-fuzz.test', dag, owner);
      expect((await names.resolve('after-the-fuzz.test')).dag.equals(dag)).toBe(true);
    } finally {
      await names.close();
    }
    // ... and B's receiver takes A's migration stream, intact.
    const data = Buffer.concat([randomBytes(2 << 20), Buffer.alloc(1 << 20)]);
    const send = mover(['send', '--api', net.api('A'), '--to', recvDag.toString()], data);
    expect(await send.exited, send.stderr()).toBe(0);
    expect(await recv.exited, recv.stderr()).toBe(0);
    expect(recv.bytes()).toBe(data.length);
    expect(recv.digest()).toBe(createHash('sha256').update(data).digest('hex'));
  }, 600_000);
});
