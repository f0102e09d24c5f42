/**
 * The shipped Wireshark dissector (tools/wireshark/xmig.lua) against a real capture:
 * dumpcap records the loopback UDP of an xianet network (router R1, hosts A and B) while
 * it beacons, registers, pings, carries a migration stream from `xmig send` to
 * `xmig recv` and a HID-move notice. tshark must decode every frame with the dissector
 * and flag none as malformed, and show the same DAGs as `xmig xip decode` does.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createSocket } from 'node:dgram';
import { createReadStream, existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { Identity } from '../../shared/identity.js';
import { encodeMobility, MobilityType } from '../../shared/mobility-message.js';
import { sealMoveNotice } from '../../shared/move-notice.js';
import { LinkType, PcapWriter } from '../../shared/pcap.js';
import { Dag } from '../../shared/dag.js';
import { encodeXip, NextHeader } from '../../shared/xip-header.js';
import { WellKnownSid, Xid, XidType } from '../../shared/xid.js';
import { NodeClient } from '../../xianet/api/api-client.js';
import { TransportType } from '../../xianet/transport-header.js';
import { SegmentWriter } from '../../xianet/xstream/stream-segment.js';
import { ChunkKind, encodeMessage, MessageType, type ControlMessage } from '../../mover/control-messages.js';
import { XMIG_ARGV } from '../support/processes.js';
import { commandExists, isRoot, requirement } from '../support/requirements.js';
import { MIGRATION_HOSTS, UdpNetwork } from '../support/udp-network.js';
import { udpBatchAddon } from '../../xianet/udp-batch.js';
import { waitFor } from '../support/wait.js';

const dissector = new URL('../../tools/wireshark/xmig.lua', import.meta.url).pathname;
const canCapture = requirement(
  commandExists('tshark') && commandExists('dumpcap') && isRoot(),
  'tshark and dumpcap as root (to capture on lo)',
  'install tshark (.ci/run does) and run as root',
);

function run(args: string[], stdin?: string): { child: ChildProcess; exited: Promise<number | null>; stderr: () => string } {
  const child = spawn(process.execPath, [...XMIG_ARGV, ...args], { stdio: ['pipe', 'ignore', 'pipe'] });
  child.stdin!.on('error', () => undefined);
  if (stdin) createReadStream(stdin).pipe(child.stdin!);
  else child.stdin!.end();
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  return { child, exited: new Promise((resolve) => child.on('exit', (code) => resolve(code))), stderr: () => stderr };
}

/** dumpcap on loopback for the network's UDP ports, until stopped (a big buffer: 64 KiB datagrams come in bursts). */
async function capture(file: string, ports: number[]): Promise<{ stop(): Promise<void> }> {
  const filter = `udp and (${ports.map((p) => `port ${p}`).join(' or ')})`;
  const child = spawn('dumpcap', ['-i', 'lo', '-B', '256', '-f', filter, '-w', file], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
  await waitFor(() => /Capturing on/.test(stderr) || child.exitCode !== null, 30_000, 'dumpcap to start');
  expect(child.exitCode, stderr).toBeNull();
  return {
    stop: async () => {
      // dumpcap drops what it has not read yet when told to stop, and on a busy machine it
      // lags: first wait until a marker datagram, sent after all the traffic, is in the file.
      const marker = Buffer.from(`xmig-capture-marker-${process.pid}-${Date.now()}`);
      const packet = encodeXip({ dst: Dag.chain(Xid.random(XidType.HID)), src: Dag.chain(Xid.random(XidType.HID)), payload: marker });
      const socket = createSocket('udp4');
      try {
        await waitFor(
          async () => {
            await new Promise<void>((resolve) => socket.send(packet, ports[0]!, '127.0.0.1', () => resolve()));
            return readFileSync(file).includes(marker);
          },
          60_000,
          'dumpcap to write out the whole capture',
          200,
        );
      } finally {
        socket.close();
      }
      child.kill('SIGINT');
      await exited;
    },
  };
}

/**
 * The capture's fields as tshark decodes them with the dissector. `ports`: the network's UDP
 * ports, named in the dissector's `udp_ports` preference as an operator would: Wireshark
 * gives some ports to other protocols first (12000-12004 are LLC's), and a test network's
 * block may lie there (a clean-clone CI run here decoded a whole capture as LLC).
 */
function tshark(file: string, fields: string[], ports: number[] = []): string[][] {
  const prefs = ports.length > 0 ? ['-o', `xmig_xip.udp_ports:${ports.join(',')}`] : [];
  const result = spawnSync('tshark', ['-n', '-r', file, '-X', `lua_script:${dissector}`, ...prefs, '-T', 'fields', '-E', 'occurrence=a', '-E', 'aggregator=|', ...fields.flatMap((f) => ['-e', f])], {
    encoding: 'utf8',
    maxBuffer: 256 << 20,
  });
  expect(result.status, result.stderr).toBe(0);
  // Lua errors go to stderr as well as into the tree.
  expect(result.stderr, 'tshark/Lua complaints').not.toMatch(/Lua|error/i);
  // Only the last newline goes: a row's trailing fields may be empty.
  return result.stdout.replace(/\n$/, '').split('\n').map((line) => line.split('\t'));
}

const hasTshark = requirement(commandExists('tshark'), 'tshark', 'install it: apt-get install tshark (.ci/run does)');

/** An IPv4/UDP datagram around `payload` (raw IPv4 link type; checksums left at 0, which Wireshark takes). */
function udp4(payload: Buffer, srcPort: number, dstPort: number): Buffer {
  const ip = Buffer.alloc(20);
  ip[0] = 0x45;
  ip.writeUInt16BE(28 + payload.length, 2);
  ip[8] = 64;
  ip[9] = 17;
  Buffer.from([127, 0, 0, 1]).copy(ip, 12);
  Buffer.from([127, 0, 0, 1]).copy(ip, 16);
  const udp = Buffer.alloc(8);
  udp.writeUInt16BE(srcPort, 0);
  udp.writeUInt16BE(dstPort, 2);
  udp.writeUInt16BE(8 + payload.length, 4);
  return Buffer.concat([ip, udp, payload]);
}

describe.skipIf(!hasTshark)('the xmig Wireshark dissector on a written capture', () => {
  it('decodes every mover control message type, KEEPALIVE included (a capture with one was malformed)', () => {
    const ad = Xid.random(XidType.AD);
    const cid = randomBytes(20);
    const messages: ControlMessage[] = [
      { type: MessageType.HELLO, session: randomBytes(16), mode: 0, source: Dag.hostAddress(ad, Xid.random(XidType.HID)).toString() },
      { type: MessageType.WELCOME, session: randomBytes(16), nextRound: 0 },
      { type: MessageType.OFFER, round: 0, chunks: [{ kind: ChunkKind.FETCH, length: 100, cid }, { kind: ChunkKind.ZERO, length: 4096 }] },
      { type: MessageType.ACK, round: 0 },
      { type: MessageType.REQUEST, cids: [cid] },
      { type: MessageType.DATA, cid, data: [randomBytes(100)] },
      { type: MessageType.KEEPALIVE },
      { type: MessageType.ERROR, message: 'a test' },
      { type: MessageType.DONE, rounds: 1, bytes: 4096 },
      { type: MessageType.DONE_ACK },
    ];
    const data = Buffer.concat(messages.map(encodeMessage));
    const writer = new SegmentWriter(data.length + 64, 0, randomBytes(8), 0);
    writer.stream(0, data, false);
    const segment = writer.buffer.subarray(1, writer.length);
    const packet = encodeXip({
      dst: Dag.hostAddress(ad, Xid.random(XidType.HID), WellKnownSid.MIGRATION),
      src: Dag.hostAddress(ad, Xid.random(XidType.HID), Xid.random(XidType.SID)),
      nextHeader: NextHeader.TRANSPORT,
      payload: Buffer.concat([Buffer.from([TransportType.STREAM]), segment]),
    });
    const pcap = new PcapWriter(LinkType.IPV4);
    pcap.add(udp4(packet, 17001, 17002));
    const file = join(mkdtempSync(join(tmpdir(), 'xmig-dissect-')), 'mover.pcap');
    writeFileSync(file, pcap.toBuffer());
    const rows = tshark(file, ['_ws.col.Info', 'xmig_mover.type', '_ws.malformed', '_ws.expert.severity', '_ws.expert.message']);
    expect(rows).toHaveLength(1);
    const [info, types, bad, severity, message] = rows[0]!;
    expect(bad, `${info} ${message}`).toBe('');
    expect(severity ?? '', `${info} ${message}`).not.toMatch(/error|warn/i);
    expect(types!.split('|').map(Number)).toEqual(messages.map((m) => m.type));
  });
});

describe.skipIf(!canCapture)('the xmig Wireshark dissector', () => {
  it('decodes a capture of beacons, pings, a migration stream, chunks and a notice with no malformed frame', async () => {
    const network = new UdpNetwork(MIGRATION_HOSTS);
    const ports = [...network.layout.configs.values()].flatMap((c) => c.interfaces.map((i) => i.port));
    // Not in network.dir: stopping the network removes that.
    const file = join(mkdtempSync(join(tmpdir(), 'xmig-capture-')), 'xianet.pcapng');
    const dumpcap = await capture(file, ports);
    try {
      await network.start();
      // XCMP: a few echoes from A to B.
      const ping = run(['ping', Dag.hostAddress(network.ad('AD1'), network.hid('B')).toString(), '-n', '3', '-i', '20', '--api', network.api('A')]);
      expect(await ping.exited, ping.stderr()).toBe(0);
      // A HID-move notice from A to its gateway's mobility SID (early: all that follows
      // is on the wire before the capture stops).
      const identity = Identity.load(network.layout.configs.get('A')!.keyFile);
      const r1 = network.hid('R1');
      const ad = network.ad('AD1');
      const notice = sealMoveNotice(
        { hid: identity.xid(XidType.HID), newAd: ad, newRouterHid: r1, newLinkId: 'seg-A', oldAd: ad, oldRouterHid: r1, oldLinkId: 'seg-B', seq: 1, timestamp: Date.now() },
        identity,
      );
      const api = await NodeClient.connect(network.api('A'));
      const socket = await api.bindDatagram();
      await socket.send(Dag.chain(ad, r1, WellKnownSid.MOBILITY), encodeMobility(MobilityType.NOTICE, notice));
      await socket.close();
      await api.close();
      // STREAM + CHUNK + the mover's control messages: 3 MiB from A to B.
      const input = join(network.dir, 'in.bin');
      writeFileSync(input, Buffer.concat([randomBytes(2 << 20), Buffer.alloc(1 << 20)]));
      const recv = run(['recv', '--api', network.api('B'), '--log-level', 'info']);
      await waitFor(() => recv.stderr().includes('"recv.listening"') || recv.child.exitCode !== null, 30_000, 'xmig recv to listen');
      const send = run(['send', '--api', network.api('A'), '--to', network.serviceDag('B', 'AD1', WellKnownSid.MIGRATION).toString()], input);
      expect(await send.exited, send.stderr()).toBe(0);
      expect(await recv.exited, recv.stderr()).toBe(0);
    } finally {
      await dumpcap.stop();
      await network.stop().catch(() => undefined);
    }
    expect(existsSync(file)).toBe(true);

    const rows = tshark(file, ['frame.number', 'udp.srcport', 'xmig_xip.version', '_ws.col.Protocol', '_ws.col.Info', 'xmig_xip.dst', 'xmig_xip.src', '_ws.malformed', '_ws.expert.severity', '_ws.expert.message'], ports);
    const frames = rows.map(([number, port, version, protocol, info, dst, src, bad, severity, message]) => ({ number, port, version, protocol, info, dst, src, bad, severity, message }));
    expect(frames.length).toBeGreaterThan(50);
    // Every UDP datagram of the network is XIP, and the dissector took every one: a UDP
    // GSO datagram (xianet/udp-batch.ts; captured before the kernel cuts it) holds several
    // XIP packets back to back, each a field occurrence of its own ("1|1|1").
    const undecoded = frames.filter((f) => !/^1(\|1)*$/.test(f.version ?? ''));
    expect(undecoded.map((f) => `${f.number} ${f.protocol} ${f.info}`)).toEqual([]);
    // With the addon the links batch: the capture must hold such datagrams, and they decode.
    if (udpBatchAddon().addon) expect(frames.filter((f) => f.version.includes('|')).length, 'UDP GSO datagrams in the capture').toBeGreaterThan(0);
    // Nothing malformed, no Lua error, no expert warning or error (notes, such as a
    // control message that continues in the next segment, are fine).
    expect(frames.filter((f) => f.bad !== '' || /error|warn/i.test(f.severity ?? '')).map((f) => `${f.number} ${f.info} ${f.message}`)).toEqual([]);

    const protocols = new Set(frames.map((f) => f.protocol));
    for (const p of ['XHCP', 'XROUTE', 'XCMP', 'xmig-mover', 'STREAM', 'CHUNK', 'xmig-mobility']) expect(protocols, p).toContain(p);
    const info = frames.map((f) => f.info).join('\n');
    for (const what of [/XHCP beacon seq=\d+ AD AD:/, /XCMP echo id=/, /XCMP echo reply/, /HELLO/, /OFFER round 0, \d+ chunks/, /ACK round 0/, /DONE \d+ rounds, 3145728 bytes/, /CHUNK REQUEST [0-9a-f]{40}/, /CHUNK DATA [0-9a-f]{40} id=\d+ 0-\d+ of \d+ no-store/, /HID-move notice NOTICE HID:/]) {
      expect(info, String(what)).toMatch(what);
    }

    // The dissector's DAGs are the ones xmig itself reads out of the capture.
    const decoded = spawnSync(process.execPath, [...XMIG_ARGV, 'xip', 'decode', '--pcap', file, '--udp-port', ...ports.map(String), '--json'], {
      encoding: 'utf8',
      maxBuffer: 256 << 20,
    });
    expect(decoded.status, decoded.stderr).toBe(0);
    const ours = decoded.stdout.trim().split('\n').map((l) => JSON.parse(l) as { frame: number; dst: string; src: string; malformed?: string });
    expect(ours.filter((o) => o.malformed)).toEqual([]);
    // xmig prints one line per XIP packet; tshark one row per frame, a GSO datagram's DAGs joined by "|".
    const perFrame = new Map<number, { dst: string[]; src: string[] }>();
    for (const o of ours) {
      const entry = perFrame.get(o.frame) ?? { dst: [], src: [] };
      entry.dst.push(o.dst);
      entry.src.push(o.src);
      perFrame.set(o.frame, entry);
    }
    expect([...perFrame].map(([frame, e]) => [frame, e.dst.join('|'), e.src.join('|')])).toEqual(frames.map((f) => [Number(f.number), f.dst, f.src]));
  }, 180_000);
});
