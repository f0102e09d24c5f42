/**
 * How a full migration's disk should cross xianet, measured side by side in one run
 * (medians of `runs`, interleaved): the same megabytes of data, copied
 *
 *  - `nbd-tunnel`: as `xmig migrate --disk` does it — QEMU's mirror into the destination
 *    QEMU's NBD export, through the NBD tunnel (one STREAM) to `xmig disk-target`, over
 *    xianet (host daemons A and B behind router R1 on UDP). Clock: the mirror's sync phase;
 *  - `chunks`: the mover's chunk path, `xmig send | xmig recv` (SHA-1-named chunks,
 *    fetched and verified), over the same xianet: what the disk's bytes would cost if
 *    they went as chunks. Clock: first byte in to last byte out;
 *  - `nbd-tcp`: the TCP/IP baseline, `xmig migrate --disk --transport qemu-tcp`: QEMU's own
 *    NBD over TCP on loopback to the export `xmig disk-target --nbd-listen` opens, no xmig
 *    in the data path;
 *  - `nbd-local`: the mirror into the NBD export over a local Unix socket, no network:
 *    the most the NBD path can do here.
 *
 * The guests are no guests (the machines sit in their firmware): the disk is what moves.
 * XMIG_BENCH_DISK_MB (data, default 128; in a disk twice that size), XMIG_BENCH_RUNS (3).
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createServer, type AddressInfo } from 'node:net';
import { randomFillSync } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { WellKnownSid } from '../shared/xid.js';
import { QmpClient } from '../mover/qmp-client.js';
import { runXmig, startXmig, XMIG_ARGV } from '../test/support/processes.js';
import { MIGRATION_HOSTS, UdpNetwork } from '../test/support/udp-network.js';
import { waitFor } from '../test/support/wait.js';
import { median } from './two-nodes.js';

export interface DiskTransportResult {
  bench: 'disk-transport';
  path: 'nbd-tunnel' | 'chunks' | 'nbd-tcp' | 'nbd-local';
  megabytes: number;
  runs: number;
  medianSeconds: number;
  mbytePerSecond: number;
  /** NBD paths: bytes on the wire per byte of data (requests and headers included). */
  wirePerDataByte?: number;
  /** Against `chunks`. */
  ratio?: number;
}

const MIB = 1024 * 1024;

export async function runDiskTransportBench(options: { megabytes?: number; runs?: number } = {}): Promise<DiskTransportResult[]> {
  const megabytes = options.megabytes ?? Number(process.env['XMIG_BENCH_DISK_MB'] ?? 128);
  const runs = options.runs ?? Number(process.env['XMIG_BENCH_RUNS'] ?? 3);
  const dir = mkdtempSync(join(tmpdir(), 'xmig-bench-disk-'));
  const network = new UdpNetwork(MIGRATION_HOSTS);
  await network.start();
  const qemus: ChildProcess[] = [];
  const data = Buffer.allocUnsafe(megabytes * MIB);
  randomFillSync(data);
  const dataFile = join(dir, 'data.bin');
  writeFileSync(dataFile, data);
  const diskMb = megabytes * 2;
  const startQemu = (name: string, image: string, incoming?: string): string => {
    const qmp = join(dir, `${name}.qmp`);
    rmSync(qmp, { force: true });
    qemus.push(
      spawn('qemu-system-x86_64', [
        '-machine', 'pc,accel=tcg', '-m', '64', '-display', 'none', '-nodefaults', '-no-user-config',
        '-blockdev', `driver=qcow2,node-name=disk0,file.driver=file,file.filename=${image}`, '-device', 'virtio-blk-pci,drive=disk0,id=vda',
        '-qmp', `unix:${qmp},server=on,wait=off`, ...(incoming ? ['-incoming', incoming] : []),
      ], { stdio: 'ignore' }),
    );
    return qmp;
  };
  const images = (run: string): { source: string; target: string } => {
    const source = join(dir, `${run}-src.qcow2`);
    const target = join(dir, `${run}-dst.qcow2`);
    execFileSync('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', dataFile, source]);
    execFileSync('qemu-img', ['resize', '-q', source, `${diskMb}M`]);
    execFileSync('qemu-img', ['create', '-f', 'qcow2', target, `${diskMb}M`]);
    return { source, target };
  };
  const connect = async (qmp: string): Promise<QmpClient> => {
    let client: QmpClient | undefined;
    await waitFor(async () => (client = await QmpClient.connect(qmp).catch(() => undefined)) !== undefined, 20_000, qmp);
    return client!;
  };
  const stopAll = (): void => {
    for (const q of qemus.splice(0)) q.kill('SIGKILL');
  };
  const xmig = [process.execPath, ...XMIG_ARGV].join(' ');

  const freePort = (): Promise<number> =>
    new Promise((resolve) => {
      const server = createServer().listen(0, '127.0.0.1', () => {
        const { port } = server.address() as AddressInfo;
        server.close(() => resolve(port));
      });
    });

  /** QEMU's own transports: tcp: for RAM, NBD over TCP for the disk, the disk target over TCP. */
  const tcp = async (run: string): Promise<{ seconds: number }> => {
    const { source, target } = images(run);
    const [ram, control, nbd] = [await freePort(), await freePort(), await freePort()];
    const sourceQmp = startQemu(`${run}-src`, source);
    const destQmp = startQemu(`${run}-dst`, target, `tcp:127.0.0.1:${ram}`);
    await (await connect(sourceQmp)).close();
    const diskTarget = startXmig(['disk-target', '--qmp', destQmp, '--transport', 'tcp', '--listen', `127.0.0.1:${control}`, '--nbd-listen', `127.0.0.1:${nbd}`]);
    await diskTarget.waitForLog('disk-target.listening', 30_000);
    const result = await runXmig(['migrate', '--qmp', sourceQmp, '--transport', 'qemu-tcp', '--to', `127.0.0.1:${ram}`, '--disk', '--disk-to', `127.0.0.1:${control}`, '--json', '--no-progress'], 600_000);
    stopAll();
    await diskTarget.stop();
    if (result.code !== 0) throw new Error(`nbd-tcp: ${result.stderr}${result.stdout}`);
    const report = JSON.parse(result.stdout) as { disk: { phases: Array<{ phase: string; startMs: number; endMs: number }> } };
    const sync = report.disk.phases.find((p) => p.phase === 'mirror-sync')!;
    return { seconds: (sync.endMs - sync.startMs) / 1000 };
  };

  const tunnel = async (run: string): Promise<{ seconds: number; wire: number }> => {
    const { source, target } = images(run);
    const sourceQmp = startQemu(`${run}-src`, source);
    const destQmp = startQemu(`${run}-dst`, target, `exec:${xmig} recv --api ${network.api('B')}`);
    await (await connect(sourceQmp)).close();
    const diskTarget = startXmig(['disk-target', '--qmp', destQmp, '--api', network.api('B')]);
    await diskTarget.waitForLog('disk-target.listening', 30_000);
    const receiver = network.serviceDag('B', 'AD1', WellKnownSid.MIGRATION).toString();
    const result = await runXmig(['migrate', '--qmp', sourceQmp, '--to', receiver, '--api', network.api('A'), '--disk', '--xmig', xmig, '--json', '--no-progress'], 600_000);
    stopAll();
    await diskTarget.stop();
    if (result.code !== 0) throw new Error(`nbd-tunnel: ${result.stderr}${result.stdout}`);
    const report = JSON.parse(result.stdout) as { disk: { phases: Array<{ phase: string; startMs: number; endMs: number }>; wire: { toTarget: number } } };
    const sync = report.disk.phases.find((p) => p.phase === 'mirror-sync')!;
    return { seconds: (sync.endMs - sync.startMs) / 1000, wire: report.disk.wire.toTarget };
  };

  const local = async (run: string): Promise<{ seconds: number }> => {
    const { source, target } = images(run);
    const a = await connect(startQemu(`${run}-src`, source));
    const b = await connect(startQemu(`${run}-dst`, target, 'defer'));
    const socket = join(dir, `${run}-nbd.sock`);
    await b.execute('nbd-server-start', { addr: { type: 'unix', data: { path: socket } } });
    await b.execute('block-export-add', { type: 'nbd', id: 'e', 'node-name': 'disk0', name: 'e', writable: true });
    await a.execute('blockdev-add', { driver: 'nbd', 'node-name': 't', server: { type: 'unix', path: socket }, export: 'e' });
    const ready = new Promise<void>((resolve) => a.onEvent((e) => e.event === 'BLOCK_JOB_READY' && resolve()));
    const started = performance.now();
    await a.execute('blockdev-mirror', { 'job-id': 'm', device: 'disk0', target: 't', sync: 'full' });
    await ready;
    const seconds = (performance.now() - started) / 1000;
    await a.close();
    await b.close();
    stopAll();
    return { seconds };
  };

  const chunks = async (): Promise<{ seconds: number }> => {
    const recv = spawn(process.execPath, [...XMIG_ARGV, 'recv', '--api', network.api('B'), '--log-level', 'info'], { stdio: ['ignore', 'pipe', 'pipe'] });
    await new Promise<void>((resolve, reject) => {
      createInterface({ input: recv.stderr! }).on('line', (line) => line.includes('recv.listening') && resolve());
      recv.once('exit', (code) => reject(new Error(`recv exited ${code}`)));
    });
    let received = 0;
    const done = new Promise<void>((resolve) => recv.stdout!.on('data', (d: Buffer) => (received += d.length)).once('end', () => resolve()));
    const receiver = network.serviceDag('B', 'AD1', WellKnownSid.MIGRATION).toString();
    const send = spawn(process.execPath, [...XMIG_ARGV, 'send', '--api', network.api('A'), '--to', receiver], { stdio: ['pipe', 'ignore', 'ignore'] });
    const started = performance.now();
    send.stdin!.end(data);
    await done;
    const seconds = (performance.now() - started) / 1000;
    if (received !== data.length) throw new Error(`chunks: ${received} of ${data.length} bytes arrived`);
    return { seconds };
  };

  const times: Record<DiskTransportResult['path'], number[]> = { 'nbd-tunnel': [], chunks: [], 'nbd-tcp': [], 'nbd-local': [] };
  const wires: number[] = [];
  try {
    for (let run = 0; run < runs; run++) {
      const t = await tunnel(`t${run}`);
      times['nbd-tunnel'].push(t.seconds);
      wires.push(t.wire);
      times.chunks.push((await chunks()).seconds);
      times['nbd-tcp'].push((await tcp(`c${run}`)).seconds);
      times['nbd-local'].push((await local(`l${run}`)).seconds);
    }
  } finally {
    stopAll();
    await network.stop();
    rmSync(dir, { recursive: true, force: true });
  }
  const chunkSeconds = median(times.chunks);
  return (['nbd-tunnel', 'chunks', 'nbd-tcp', 'nbd-local'] as const).map((path) => {
    const seconds = median(times[path]);
    return {
      bench: 'disk-transport',
      path,
      megabytes,
      runs,
      medianSeconds: Number(seconds.toFixed(3)),
      mbytePerSecond: Number((megabytes / seconds).toFixed(1)),
      ...(path === 'nbd-tunnel' ? { wirePerDataByte: Number((median(wires) / data.length).toFixed(4)) } : {}),
      ratio: Number((chunkSeconds / seconds).toFixed(2)),
    };
  });
}
