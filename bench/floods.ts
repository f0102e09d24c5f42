/**
 * `npm run bench floods`: issue 14's floods against real daemons, one process each, as
 * they are deployed: routers R1 (AD1) and R2 (AD2) as `xmig node`, each with its own
 * `xmig router-plugin`, a name server (`xmig nameserver`) on R1, and a VM (`xmig node`
 * and `xmig agent`) whose link is switched between R1's segment and R2's by a UDP
 * switch in this process (a move, as the VM's host changing would do it). One flood at
 * a time comes from a stranger on the segments (this process): 100k bad notices, 5,000
 * fresh keys, 3,000 names, 20,000 idle control connections, 16 half-sent 16 MiB API
 * frames. For each: every daemon's RSS before, at its peak during the flood and the move
 * after it (sampled every 50 ms from /proc) and then, against the bound stated here; and a genuine
 * move of the VM, timed from the switch to the agent's registration under the new AD
 * and to the old gateway's plugin rewriting the VM's route toward the new one. The VM
 * goes R1 -> R2 -> R1 ... so every flood meets it at one side or the other. Every
 * daemon runs on from flood to flood: its RSS is what all floods so far left.
 */
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { cpus, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { parseConfig } from '../shared/config.js';
import { Dag } from '../shared/dag.js';
import { Identity } from '../shared/identity.js';
import { encodeMobility, MobilityType } from '../shared/mobility-message.js';
import { sealMoveNotice } from '../shared/move-notice.js';
import { WellKnownSid, Xid, XidType } from '../shared/xid.js';
import { encodeXip, NextHeader } from '../shared/xip-header.js';
import { NodeClient } from '../xianet/api/api-client.js';
import { NameClient } from '../xianet/names/name-client.js';
import { sealNameRecord } from '../xianet/names/name-record.js';
import { encodeNsMessage, NsType } from '../xianet/names/xns-message.js';
import { topologySchema } from '../xianet/topology.js';
import { TransportType } from '../xianet/transport-header.js';
import { udpLayout } from '../xianet/udp-topology.js';
import { encodeHostRegister } from '../xianet/xroute-message.js';
import { reapAll, startXmig, type XmigProcess } from '../test/support/processes.js';

const MB = 1024 * 1024;

/** What each daemon may hold at its peak under any one flood (VmRSS). */
export const RSS_BOUND_MB: Record<string, number> = { 'node R1': 320, 'node R2': 320, 'node VM': 200, 'plugin R1': 200, 'plugin R2': 200, nameserver: 200, agent: 160 };

export interface FloodResult {
  bench: 'floods';
  flood: string;
  seconds: number;
  /** Per daemon: RSS before, at the peak, after (MB), and whether the peak is within its bound. */
  rss: Record<string, { before: number; peak: number; after: number; bound: number; ok: boolean }>;
  /** The genuine move after the flood: ms from the switch to the agent's registration and to the old gateway's rewrite toward the new one. */
  move: { to: 'R1' | 'R2'; registeredMs: number; oldGatewayRewrittenMs: number } | { error: string };
  /** What the flood itself saw (how many of its connections the daemon closed, ...). */
  note?: string;
  machine: string;
}

const topology = parseConfig(topologySchema, {
  name: 'floods',
  ads: ['AD1', 'AD2'],
  segments: ['seg-A', 'seg-B', 'r1-r2'],
  nodes: [
    { name: 'R1', role: 'router', ad: 'AD1', interfaces: [{ segment: 'seg-A', hostFacing: true }, { segment: 'r1-r2' }] },
    { name: 'R2', role: 'router', ad: 'AD2', interfaces: [{ segment: 'seg-B', hostFacing: true }, { segment: 'r1-r2' }] },
    { name: 'VM', role: 'host', interfaces: [{ segment: 'seg-A' }] },
  ],
});

function rssMb(pid: number): number {
  try {
    return Math.round(Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) / 1024);
  } catch {
    return -1;
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function until(condition: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

const count = (p: XmigProcess, event: string, match: (l: Record<string, unknown>) => boolean = () => true): number =>
  p.logs.filter((l) => l['event'] === event && match(l)).length;

/**
 * The VM's link: the VM's interface talks to one port here, which relays to R1's
 * segment or R2's (from a port of each segment's, which the router has as its peer).
 */
class Switch {
  private vmSide!: UdpSocket;
  private sides!: Record<'A' | 'B', UdpSocket>;
  private vm: { port: number } | undefined;
  attached: 'A' | 'B' = 'A';
  routers: Record<'A' | 'B', number> = { A: 0, B: 0 };

  async start(): Promise<{ vm: number; A: number; B: number }> {
    const bind = async (): Promise<UdpSocket> => {
      const s = createSocket('udp4');
      await new Promise<void>((r) => s.bind(0, '127.0.0.1', r));
      return s;
    };
    this.vmSide = await bind();
    this.sides = { A: await bind(), B: await bind() };
    this.vmSide.on('message', (data, from) => {
      this.vm = { port: from.port };
      this.sides[this.attached].send(data, this.routers[this.attached], '127.0.0.1');
    });
    for (const side of ['A', 'B'] as const) {
      this.sides[side].on('message', (data) => {
        if (this.attached === side && this.vm) this.vmSide.send(data, this.vm.port, '127.0.0.1');
      });
    }
    return { vm: this.vmSide.address().port, A: this.sides.A.address().port, B: this.sides.B.address().port };
  }

  stop(): void {
    for (const s of [this.vmSide, this.sides.A, this.sides.B]) s.close();
  }
}

export async function runFloodBench(): Promise<FloodResult[]> {
  const dir = mkdtempSync(join(tmpdir(), 'xmig-floods-'));
  const layout = udpLayout(topology, { dir, basePort: 30000 + Math.floor(Math.random() * 20000), beaconIntervalMs: 100, helloIntervalMs: 300 });
  const sw = new Switch();
  const ports = await sw.start();
  const r1 = layout.configs.get('R1')!;
  const r2 = layout.configs.get('R2')!;
  const vmConfig = layout.configs.get('VM')!;
  // The VM talks to the switch; each router's host segment has the switch's port of it.
  vmConfig.interfaces[0]!.peers = [`127.0.0.1:${ports.vm}`];
  r1.interfaces[0]!.peers = [`127.0.0.1:${ports.A}`];
  r2.interfaces[0]!.peers = [`127.0.0.1:${ports.B}`];
  sw.routers = { A: r1.interfaces[0]!.port, B: r2.interfaces[0]!.port };
  for (const config of layout.configs.values()) {
    Identity.loadOrCreate(config.keyFile);
    if (config.adKeyFile) Identity.loadOrCreate(config.adKeyFile);
    writeFileSync(join(dir, `${config.name}.json`), JSON.stringify(config));
  }
  const processes = new Map<string, XmigProcess>();
  const attacker = createSocket('udp4');
  await new Promise<void>((r) => attacker.bind(0, '127.0.0.1', r));
  try {
    for (const name of ['R1', 'R2', 'VM']) processes.set(`node ${name}`, startXmig(['node', '--config', join(dir, `${name}.json`)]));
    await Promise.all([...processes.values()].map((p) => p.waitForLog('node.ready', 120_000)));
    const nameServer = startXmig(['nameserver', '--api', r1.apiSocket!, '--db', join(dir, 'names.log'), '--log-level', 'info']);
    processes.set('nameserver', nameServer);
    const nsDag = Dag.parse(String((await nameServer.waitForLog('nameserver.started', 120_000))['dag']));
    for (const [name, config] of [['R1', r1], ['R2', r2]] as const) {
      const plugin = startXmig(['router-plugin', '--api', config.apiSocket!, '--control', (config.controlPort as { path: string }).path, '--router', name, '--key', config.keyFile]);
      processes.set(`plugin ${name}`, plugin);
      await plugin.waitForLog('plugin.started', 120_000);
    }
    writeFileSync(
      join(dir, 'agent.json'),
      JSON.stringify({
        api: vmConfig.apiSocket,
        control: (vmConfig.controlPort as { path: string }).path,
        router: 'VM',
        keyFile: vmConfig.keyFile,
        stateFile: join(dir, 'agent-state.json'),
        names: [{ name: 'vm.floods' }],
        nameServer: nsDag.toString(),
        schedules: { refresh: false, reannounce: false, health: false },
      }),
    );
    const agent = startXmig(['agent', '--config', join(dir, 'agent.json')]);
    processes.set('agent', agent);
    await agent.waitForLog('agent.started', 120_000);
    // Registered at start (no move logged): the name resolves to the VM in AD1.
    const r1Api = await NodeClient.connect(r1.apiSocket!);
    const names = new NameClient(r1Api, { nameServer: nsDag });
    try {
      for (const deadline = Date.now() + 120_000; ; await sleep(200)) {
        const found = await names.resolve('vm.floods').catch(() => undefined);
        if (found?.dag.find(XidType.AD)) break;
        if (Date.now() > deadline) throw new Error(`the VM's name did not register:\n${agent.logs.slice(-8).map((l) => JSON.stringify(l)).join('\n')}`);
      }
    } finally {
      await names.close();
      await r1Api.close();
    }

    const vmHid = Identity.load(vmConfig.keyFile).xid(XidType.HID);
    const [r1Hid, r2Hid] = [r1, r2].map((c) => Identity.load(c.keyFile).xid(XidType.HID));
    const [ad1, ad2] = ['AD1', 'AD2'].map((a) => Identity.load(layout.adKeyFiles.get(a)!).xid(XidType.AD));
    const plugin1 = processes.get('plugin R1')!;
    const plugin2 = processes.get('plugin R2')!;
    const machine = `${cpus().length} cores (${cpus()[0]?.model ?? '?'}), ${Math.round(totalmem() / 2 ** 30)} GiB, Node.js ${process.version}`;

    /** A genuine move to the other router: the switch flips, the agent and R1 follow. */
    const move = async (): Promise<FloodResult['move']> => {
      const registered = count(agent, 'move.registered');
      const toR2 = sw.attached === 'A';
      const old = toR2 ? plugin1 : plugin2;
      const ofVm = (l: Record<string, unknown>): boolean => l['hid'] === vmHid.toString();
      const rewritten = count(old, 'route.rewritten', ofVm);
      const started = performance.now();
      sw.attached = toR2 ? 'B' : 'A';
      try {
        let registeredMs = -1;
        let oldGatewayRewrittenMs = -1;
        await until(
          () => {
            if (registeredMs < 0 && count(agent, 'move.registered') > registered) registeredMs = Math.round(performance.now() - started);
            if (oldGatewayRewrittenMs < 0 && count(old, 'route.rewritten', ofVm) > rewritten) oldGatewayRewrittenMs = Math.round(performance.now() - started);
            return registeredMs >= 0 && oldGatewayRewrittenMs >= 0;
          },
          120_000,
          'the move to converge',
        );
        return { to: toR2 ? 'R2' : 'R1', registeredMs, oldGatewayRewrittenMs };
      } catch (error) {
        return { error: (error as Error).message };
      }
    };

    const send = (port: number, dst: Dag, payload: Buffer, src = Dag.hostAddress(ad1!, Xid.random(XidType.HID))): Promise<void> =>
      new Promise((resolve) =>
        attacker.send(
          encodeXip({ dst, src, nextHeader: NextHeader.TRANSPORT, payload: Buffer.concat([Buffer.of(TransportType.DGRAM), payload]) }),
          port,
          '127.0.0.1',
          () => resolve(),
        ),
      );
    const segA = r1.interfaces[0]!.port;
    const segB = r2.interfaces[0]!.port;
    const toR1 = Dag.chain(r1Hid!, WellKnownSid.MOBILITY);
    const toR2 = Dag.chain(r2Hid!, WellKnownSid.MOBILITY);
    const notice = (key: Identity, seq: number, hid = key.xid(XidType.HID)): Buffer =>
      sealMoveNotice(
        { hid, newAd: ad2!, newRouterHid: r2Hid!, newLinkId: '', oldAd: ad1!, oldRouterHid: r1Hid!, oldLinkId: '', seq, timestamp: Date.now() },
        key,
      );

    const floods: Array<[string, () => Promise<string | void>]> = [
      [
        '100,000 bad notices to R1 and R2 (junk, forged, replayed, cut, bit-flipped)',
        async () => {
          const thief = Identity.generate();
          const forged = notice(thief, Date.now() + 1e9, vmHid);
          const captured = notice(Identity.load(vmConfig.keyFile), 1);
          for (let i = 0; i < 100_000; i++) {
            let bytes: Buffer;
            if (i % 5 === 0) bytes = randomBytes(40 + (i % 300));
            else if (i % 5 === 1) bytes = forged;
            else if (i % 5 === 2) bytes = captured;
            else if (i % 5 === 3) bytes = forged.subarray(0, i % forged.length);
            else {
              bytes = Buffer.from(captured);
              bytes[i % bytes.length]! ^= 1 << (i % 8);
            }
            await send(i % 2 ? segA : segB, i % 2 ? toR1 : toR2, encodeMobility(i % 3 ? MobilityType.NOTICE : MobilityType.FORWARDED, bytes));
          }
        },
      ],
      [
        '5,000 fresh keys (a notice each to R2, a HOST_REGISTER each to R1)',
        async () => {
          for (let i = 0; i < 5000; i++) {
            const key = Identity.generate();
            await send(segB, toR2, encodeMobility(MobilityType.NOTICE, notice(key, 1)));
            const register = encodeHostRegister({ hid: key.xid(XidType.HID), gatewayHid: r1Hid!, ad: ad1!, linkId: '', seq: 1, timestamp: Date.now() }, key);
            await send(segA, Dag.chain(r1Hid!, WellKnownSid.XROUTE), register, Dag.chain(key.xid(XidType.HID), WellKnownSid.XROUTE));
          }
        },
      ],
      [
        '3,000 names of one key, then one name each of 3,000 fresh keys',
        async () => {
          const squatter = Identity.generate();
          const dag = Dag.hostAddress(ad1!, Xid.random(XidType.HID));
          for (let i = 0; i < 6000; i++) {
            const owner = i < 3000 ? squatter : Identity.generate();
            const name = `squat-${i}`;
            const record = sealNameRecord({ name, dag, seq: 1, timestamp: Date.now(), migrated: false }, owner);
            await send(segA, nsDag, encodeNsMessage({ type: NsType.REGISTER, flags: 0, name, dag: dag.toDagString(), record, requestId: i + 1 }));
          }
        },
      ],
      [
        "20,000 idle connections to R1's control socket (500 at a time, held)",
        async () => {
          const held: Socket[] = [];
          const path = (r1.controlPort as { path: string }).path;
          for (let batch = 0; batch < 40; batch++) {
            await Promise.all(
              Array.from(
                { length: 500 },
                () =>
                  new Promise<void>((resolve) => {
                    const socket = connect(path);
                    held.push(socket);
                    socket.on('error', () => resolve());
                    socket.once('data', () => resolve());
                    socket.once('close', () => resolve());
                    socket.resume();
                  }),
              ),
            );
          }
          for (const socket of held) socket.destroy();
        },
      ],
      [
        "16 half-sent 16 MiB frames to R1's API socket (held until the node drops them)",
        async () => {
          const half = Buffer.alloc(8 * MB, 0x61);
          const sockets = await Promise.all(
            Array.from(
              { length: 16 },
              () =>
                new Promise<Socket>((resolve) => {
                  const socket = connect(r1.apiSocket!);
                  socket.on('error', () => undefined);
                  socket.resume();
                  socket.once('connect', () => {
                    const head = Buffer.alloc(6);
                    head.writeUInt32BE(16 * MB, 0);
                    head.writeUInt16BE(2, 4);
                    socket.write(Buffer.concat([head, Buffer.from('{}')]));
                    socket.write(half);
                    resolve(socket);
                  });
                }),
            ),
          );
          // The node times them out (or sheds them): wait for every one to be closed, at most a minute.
          const started = performance.now();
          const deadline = Date.now() + 60_000;
          const open = (): number => sockets.filter((s) => !s.destroyed && !s.readableEnded).length;
          while (open() > 0 && Date.now() < deadline) await sleep(100);
          const note = `${16 - open()} of 16 closed by the node within ${Math.round((performance.now() - started) / 1000)} s`;
          for (const socket of sockets) socket.destroy();
          return note;
        },
      ],
    ];

    const results: FloodResult[] = [];
    results.push({ bench: 'floods', flood: 'none (a genuine move first)', seconds: 0, rss: snapshot(processes, new Map()), move: await move(), machine });
    for (const [name, flood] of floods) {
      const before = new Map([...processes].map(([n, p]) => [n, rssMb(p.child.pid!)]));
      const peaks = new Map(before);
      const sampler = setInterval(() => {
        for (const [n, p] of processes) peaks.set(n, Math.max(peaks.get(n)!, rssMb(p.child.pid!)));
      }, 50);
      const started = performance.now();
      let note: string | void;
      let seconds = 0;
      let moved: FloodResult['move'];
      try {
        note = await flood();
        seconds = Math.round((performance.now() - started) / 100) / 10;
        await sleep(1000);
        // The peak takes in the move after the flood too: what a daemon still had queued.
        moved = await move();
      } finally {
        clearInterval(sampler);
      }
      const rss = snapshot(processes, peaks, before);
      for (const [n, p] of processes) if (p.child.exitCode !== null) rss[n] = { ...rss[n]!, ok: false };
      results.push({ bench: 'floods', flood: name, seconds, rss, move: moved, machine, ...(note ? { note } : {}) });
      process.stderr.write(`floods: ${name}: ${seconds} s, move ${JSON.stringify(moved)}\n`);
    }
    return results;
  } finally {
    attacker.close();
    for (const p of [...processes.values()].reverse()) await p.stop();
    await reapAll();
    sw.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

function snapshot(processes: Map<string, XmigProcess>, peaks: Map<string, number>, before?: Map<string, number>): FloodResult['rss'] {
  const out: FloodResult['rss'] = {};
  for (const [name, p] of processes) {
    const now = rssMb(p.child.pid!);
    const peak = Math.max(peaks.get(name) ?? now, now);
    const bound = RSS_BOUND_MB[name] ?? 256;
    out[name] = { before: before?.get(name) ?? now, peak, after: now, bound, ok: peak <= bound && p.child.exitCode === null };
  }
  return out;
}
