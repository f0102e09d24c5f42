/**
 * Batched UDP sends (xianet/udp-batch.ts) against node:dgram per packet, side by side in
 * one run: the mover's MTU 1500, 0 % loss, 0 ms cell (A -> R1 -> B on UDP over loopback,
 * `xmig send | recv`), each run on a fresh network whose three daemons are started with
 * XMIG_UDP_BATCH=0 (node:dgram), or with the addon flushing at setImmediate (the
 * default) or at the microtask checkpoint (XMIG_UDP_BATCH_FLUSH=microtask), and its
 * sockets receiving with UDP_GRO (the default) or without (`batch-nogro`, XMIG_UDP_GRO=0).
 * Interleaved, so drift in the machine's load hits every mode alike. MB/s and CPU-s/GB
 * per process.
 *
 * XMIG_BENCH_MB (256), XMIG_BENCH_RUNS (3), XMIG_BENCH_DEADLINE_S (240),
 * XMIG_BENCH_UDP_MODES (dgram,batch-nogro,batch; also batch-microtask).
 */
import { randomFillSync } from 'node:crypto';
import { loadavg } from 'node:os';
import { MIGRATION_HOSTS, UdpNetwork } from '../test/support/udp-network.js';
import type { ImpairmentConfig } from '../xianet/link-impairment.js';
import { udpBatchAddon } from '../xianet/udp-batch.js';
import { moverTable, once, summarise, xianetPath, type MoverResult, type RunResult } from './mover.js';

const MODES: Record<string, Record<string, string>> = {
  dgram: { XMIG_UDP_BATCH: '0' },
  batch: { XMIG_UDP_BATCH: '1', XMIG_UDP_BATCH_FLUSH: 'immediate', XMIG_UDP_GRO: '1' },
  'batch-nogro': { XMIG_UDP_BATCH: '1', XMIG_UDP_BATCH_FLUSH: 'immediate', XMIG_UDP_GRO: '0' },
  'batch-microtask': { XMIG_UDP_BATCH: '1', XMIG_UDP_BATCH_FLUSH: 'microtask', XMIG_UDP_GRO: '1' },
};

export async function runUdpBatchBench(): Promise<Array<MoverResult & { mode: string; loadAverage: number[] }>> {
  const env = process.env;
  const { addon, reason } = udpBatchAddon();
  if (!addon) throw new Error(`udp-batch bench: the addon is not loadable (${reason})`);
  const megabytes = Number(env['XMIG_BENCH_MB'] ?? 256);
  const runs = Number(env['XMIG_BENCH_RUNS'] ?? 3);
  const deadlineMs = Number(env['XMIG_BENCH_DEADLINE_S'] ?? 240) * 1000;
  const modes = (env['XMIG_BENCH_UDP_MODES'] ?? 'dgram,batch-nogro,batch').split(',');
  const data = randomFillSync(Buffer.alloc(megabytes << 20));
  const impairment: ImpairmentConfig = { lossRate: 0, delayMs: 0 };
  const outcomes = new Map<string, RunResult[]>(modes.map((m) => [m, []]));
  const loads: number[] = [];
  const saved = { ...env };
  try {
    for (let run = 0; run < runs; run++) {
      for (const mode of modes) {
        const settings = MODES[mode];
        if (!settings) throw new Error(`udp-batch bench: unknown mode "${mode}"; known: ${Object.keys(MODES).join(', ')}`);
        Object.assign(process.env, settings); // the daemons inherit it
        const network = new UdpNetwork(MIGRATION_HOSTS, { mtu: 1500, impairments: { 'seg-A': impairment, 'seg-B': impairment } });
        await network.start();
        try {
          loads.push(loadavg()[0]!);
          const result = await once(xianetPath(`mtu 1500 0 % 0 ms, ${mode}`, network), data, deadlineMs);
          outcomes.get(mode)!.push(result);
          process.stderr.write(`udp-batch: run ${run + 1} ${mode}: ${result.seconds ? (data.length / result.seconds / 1e6).toFixed(1) : 'FAILED'} MB/s, load ${loadavg()[0]!.toFixed(1)}\n`);
        } finally {
          await network.stop();
        }
      }
    }
  } finally {
    for (const key of ['XMIG_UDP_BATCH', 'XMIG_UDP_BATCH_FLUSH', 'XMIG_UDP_GRO']) {
      if (saved[key] === undefined) delete process.env[key];
      else process.env[key] = saved[key];
    }
  }
  const loadAverage = [Math.min(...loads), Math.max(...loads)].map((l) => Math.round(l * 10) / 10);
  const results = modes.map((mode) => ({
    ...summarise({ bench: 'mover', path: `mtu 1500 0% 0ms ${mode}`, mtu: 1500, lossPercent: 0, delayMsPerLink: 0, megabytes: data.length / 1e6 }, outcomes.get(mode)!, data.length),
    mode,
    loadAverage,
  }));
  const table = moverTable(results).split('\n');
  // moverTable labels an MTU row by its cell; here the cell is one and the mode is what differs.
  process.stderr.write(`${[table[0], ...results.map((r, i) => r.mode.padEnd(28) + table[i + 1]!.slice(28))].join('\n')}\n(load average over the runs: ${loadAverage.join('-')})\n`);
  return results;
}
