/**
 * Mover throughput and CPU, stdin to stdout, side by side in one run:
 *
 *  - on loopback (64 KiB datagrams, no impairment), medians of `runs`, interleaved:
 *    a plain TCP pipe (two processes: stdin -> socket -> stdout), `xmig send | recv`
 *    with the control protocol over TCP, `xmig send | recv` over xianet (host
 *    daemons A and B behind router R1 on UDP, chunks SHA-1 verified), and the same
 *    with --via-node (the migration runs in the nodes; send and recv only pipe bytes);
 *  - over xianet at MTU 1500, a matrix of loss {0, 1, 5} % x delay {0, 10, 50} ms on
 *    each link (both segments A-R1 and R1-B impaired at every interface: a datagram
 *    from A to B crosses two impaired links, a round trip four), `matrixRuns` each,
 *    on the path `xmig migrate` takes (`--via-node`, pipes handed over to the nodes;
 *    XMIG_BENCH_MATRIX_PATH=direct for send and recv with their own stacks).
 *
 * The clock runs from the first byte written to the sender to the last byte out of
 * the receiver; process start-up is left out (the QEMU benchmark includes it). CPU
 * is counted for every process on the path: send and recv (their own user+system
 * time from the shell that runs them, less what they had spent starting up when they
 * said they were ready), nodes A, R1 and B (/proc deltas over the run), given as
 * CPU-seconds per GB moved. A run that does not finish within its
 * deadline counts as failed (with the bytes that did arrive).
 *
 * XMIG_BENCH_MB (default 256), XMIG_BENCH_RUNS (5), XMIG_BENCH_MATRIX_RUNS (1),
 * XMIG_BENCH_MATRIX=0 (loopback only), XMIG_BENCH_MATRIX_PATH (via-node or direct),
 * XMIG_BENCH_LOSSES / XMIG_BENCH_DELAYS (comma lists),
 * XMIG_BENCH_DEADLINE_S (240), XMIG_BENCH_LOG_DIR (send and recv log at debug level there,
 * one file per run: the per-round events for a timeline).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import { closeSync, readFileSync, writeFileSync } from 'node:fs';
import type { Socket } from 'node:net';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { WellKnownSid } from '../shared/xid.js';
import type { ImpairmentConfig } from '../xianet/link-impairment.js';
import { Fifos } from '../test/support/fifo.js';
import { XMIG_ARGV } from '../test/support/processes.js';
import { MIGRATION_HOSTS, UdpNetwork } from '../test/support/udp-network.js';
import { median } from './two-nodes.js';

export type ProcessName = 'send' | 'recv' | 'A' | 'R1' | 'B';
const PROCESSES: readonly ProcessName[] = ['send', 'recv', 'A', 'R1', 'B'];

export interface MoverResult {
  bench: 'mover';
  path: string;
  /** "loopback" (64 KiB datagrams) or an IP MTU. */
  mtu: 'loopback' | number;
  lossPercent: number;
  delayMsPerLink: number;
  megabytes: number;
  runs: number;
  completed: number;
  medianSeconds: number | null;
  mbytePerSecond: number | null;
  /** Spread: the slowest and fastest completed run. */
  mbytePerSecondRange?: [number, number];
  /** Loopback paths: against the TCP pipe. Matrix cells: against the lossless 0 ms cell. */
  ratio?: number | null;
  /** Matrix cells: MB/s over the lossless cell's at the same delay (the issue's "of lossless"). */
  ratioToLossless?: number | null;
  /** CPU-seconds per GB moved, per process, and all of them together (medians). */
  cpuSecondsPerGb: Partial<Record<ProcessName, number>> & { total: number; busiest: string };
  failures?: string[];
}

/** The yardstick: the same two-process shape with nothing but a TCP socket between. */
const PIPE_RECEIVER = `const s=require('net').createServer(c=>{c.pipe(process.stdout);c.on('end',()=>s.close())}).listen(0,'127.0.0.1',()=>console.error('ready '+s.address().port))`;
const PIPE_SENDER = `const c=require('net').connect(+process.argv[1],'127.0.0.1',()=>{console.error('ready');process.stdin.pipe(c)})`;

const CLOCK_TICKS = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout.trim()) || 100;

/** User + system CPU seconds of a running process so far. */
function cpuSeconds(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS;
  } catch {
    return NaN;
  }
}

const LOG_DIR = process.env['XMIG_BENCH_LOG_DIR'];
const LOG_LEVEL = LOG_DIR ? 'debug' : 'info';
let logged = 0;

export interface Path {
  name: string;
  network?: UdpNetwork;
  receiver(): { command: string[]; ready: RegExp };
  sender(receiverReady: string): { command: string[]; ready: RegExp };
}

interface Started {
  child: ChildProcess;
  /** The sender's stdin, the receiver's stdout: real pipes, as QEMU's `exec:` gives them. */
  stdio: Socket;
  ready: Promise<string>;
  /** The command's own CPU seconds (user + system), once it has exited. */
  cpu: Promise<number>;
  /** Its CPU seconds so far (start-up, when asked at `ready`). */
  cpuNow(): number;
  /** Its stderr lines so far (the log). */
  lines: string[];
  kill(): void;
}

const fifos = new Fifos();
process.once('exit', () => fifos.remove());

/** The command bash runs for us (bash's first child). */
function commandPid(bash: number): number | undefined {
  try {
    const first = readFileSync(`/proc/${bash}/task/${bash}/children`, 'utf8').trim().split(' ')[0];
    return first ? Number(first) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Runs `command` under bash, which prints the children's CPU times (`times`) on
 * stderr when it ends; resolves `ready` with the first stderr line matching it.
 */
function start(command: string[], ready: RegExp, role: 'receiver' | 'sender'): Started {
  // Pipes, not Node's socket pairs: what QEMU's exec: gives, and what a node can take over.
  const pipe = fifos.open(role === 'sender');
  const child = spawn('bash', ['-c', '"$@"; code=$?; times >&2; exit $code', 'bash', ...command], {
    stdio: role === 'receiver' ? ['ignore', pipe.child, 'pipe'] : [pipe.child, 'ignore', 'pipe'],
    detached: true,
  });
  closeSync(pipe.child);
  const lines: string[] = [];
  const readyLine = new Promise<string>((resolve, reject) => {
    createInterface({ input: child.stderr! }).on('line', (line) => {
      lines.push(line);
      if (ready.test(line)) resolve(line);
    });
    child.once('exit', (code) => reject(new Error(`${command.slice(0, 4).join(' ')} exited (${code}) before it was ready:\n${lines.slice(-20).join('\n')}`)));
  });
  readyLine.catch(() => undefined);
  const cpu = new Promise<number>((resolve) =>
    child.once('close', () => {
      // `times`: the shell's own times, then its children's: "0m1.234s 0m0.567s".
      const last = lines.filter((l) => /^\d+m[\d.]+s \d+m[\d.]+s$/.test(l)).at(-1);
      if (!last) return resolve(NaN);
      const [user, system] = last.split(' ').map((t) => {
        const [m, s] = t.slice(0, -1).split('m');
        return Number(m) * 60 + Number(s);
      });
      resolve(user! + system!);
    }),
  );
  return {
    child,
    stdio: pipe.ours,
    ready: readyLine,
    lines,
    cpu,
    cpuNow: () => {
      const pid = commandPid(child.pid!);
      return pid === undefined ? NaN : cpuSeconds(pid);
    },
    kill: () => {
      pipe.ours.destroy();
      try {
        process.kill(-child.pid!, 'SIGKILL');
      } catch {
        // gone already
      }
    },
  };
}

export interface RunResult {
  seconds: number | null;
  received: number;
  cpu: Partial<Record<ProcessName, number>>;
  failure?: string;
}

export async function once(path: Path, data: Buffer, deadlineMs: number): Promise<RunResult> {
  const r = path.receiver();
  const receiver = start(r.command, r.ready, 'receiver');
  let sender: Started | undefined;
  const nodes = path.network ? (['A', 'R1', 'B'] as const).map((name) => ({ name, pid: path.network!.processes.get(name)!.child.pid! })) : [];
  const before = new Map(nodes.map((n) => [n.name, cpuSeconds(n.pid)]));
  let received = 0;
  try {
    const s = path.sender(await receiver.ready);
    sender = start(s.command, s.ready, 'sender');
    await sender.ready;
    // Start-up is not the transfer's: what each has spent by now is taken off its total.
    const startup = { send: sender.cpuNow(), recv: receiver.cpuNow() };
    const done = new Promise<void>((resolve, reject) => {
      receiver.stdio.on('data', (d: Buffer) => (received += d.length));
      receiver.stdio.once('end', () => (received === data.length ? resolve() : reject(new Error(`${received} of ${data.length} bytes arrived`))));
    });
    done.catch(() => undefined);
    const started = performance.now();
    const input = sender.stdio;
    input.on('error', () => undefined);
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`not done within ${deadlineMs / 1000} s`)), deadlineMs);
    });
    try {
      await Promise.race([
        (async () => {
          for (let offset = 0; offset < data.length; offset += 1 << 20) {
            if (!input.write(data.subarray(offset, offset + (1 << 20)))) await new Promise((resolve) => input.once('drain', resolve));
          }
          input.end();
          await done;
        })(),
        deadline,
      ]);
    } finally {
      clearTimeout(timer);
    }
    const seconds = (performance.now() - started) / 1000;
    const after = new Map(nodes.map((n) => [n.name, cpuSeconds(n.pid)]));
    // Both exit by themselves once DONE is acknowledged; their CPU comes with the exit.
    const exited = (p: Started): Promise<number> => Promise.race([p.cpu, new Promise<number>((resolve) => setTimeout(() => resolve(NaN), 10_000))]);
    const [sendCpu, recvCpu] = await Promise.all([exited(sender), exited(receiver)]);
    const cpu: RunResult['cpu'] = { send: sendCpu - startup.send, recv: recvCpu - startup.recv };
    for (const n of nodes) cpu[n.name] = after.get(n.name)! - before.get(n.name)!;
    return { seconds, received, cpu };
  } catch (error) {
    return { seconds: null, received, cpu: {}, failure: (error as Error).message.split('\n')[0] };
  } finally {
    if (LOG_DIR) {
      const slug = path.name.replace(/[^a-z0-9]+/gi, '-').toLowerCase();
      writeFileSync(join(LOG_DIR, `${String(++logged).padStart(2, '0')}-${slug}-${process.pid}.log`), [...(sender?.lines ?? []), ...receiver.lines].join('\n') + '\n');
    }
    sender?.kill();
    receiver.kill();
  }
}

const round = (value: number, digits: number): number => Math.round(value * 10 ** digits) / 10 ** digits;

export function summarise(base: Omit<MoverResult, 'runs' | 'completed' | 'medianSeconds' | 'mbytePerSecond' | 'cpuSecondsPerGb' | 'failures'>, results: RunResult[], bytes: number): MoverResult {
  const ok = results.filter((r) => r.seconds !== null);
  const s = ok.length > 0 ? median(ok.map((r) => r.seconds!)) : null;
  const gb = bytes / 1e9;
  const cpu: MoverResult['cpuSecondsPerGb'] = { total: 0, busiest: '-' };
  let busiest = -1;
  for (const name of PROCESSES) {
    const values = ok.map((r) => r.cpu[name]).filter((v): v is number => v !== undefined && Number.isFinite(v));
    if (values.length === 0) continue;
    const perGb = round(median(values) / gb, 2);
    cpu[name] = perGb;
    cpu.total = round(cpu.total + perGb, 2);
    if (perGb > busiest) {
      busiest = perGb;
      cpu.busiest = name;
    }
  }
  const failures = results.filter((r) => r.failure).map((r) => `${r.failure} (${round(r.received / 1e6, 1)} MB arrived)`);
  return {
    ...base,
    runs: results.length,
    completed: ok.length,
    medianSeconds: s === null ? null : round(s, 3),
    mbytePerSecond: s === null ? null : round(bytes / s / 1e6, 1),
    ...(ok.length > 0 ? { mbytePerSecondRange: [round(bytes / Math.max(...ok.map((r) => r.seconds!)) / 1e6, 1), round(bytes / Math.min(...ok.map((r) => r.seconds!)) / 1e6, 1)] as [number, number] } : {}),
    cpuSecondsPerGb: cpu,
    ...(failures.length > 0 ? { failures } : {}),
  };
}

export function xianetPath(name: string, network: UdpNetwork, extra: string[] = []): Path {
  const xmig = [process.execPath, ...XMIG_ARGV];
  return {
    name,
    network,
    receiver: () => ({ command: [...xmig, 'recv', '--api', network.api('B'), '--log-level', LOG_LEVEL, ...extra], ready: /recv\.listening/ }),
    sender: () => ({
      command: [...xmig, 'send', '--api', network.api('A'), '--to', network.serviceDag('B', 'AD1', WellKnownSid.MIGRATION).toString(), '--log-level', LOG_LEVEL, ...extra],
      ready: /send\.connected/,
    }),
  };
}

/** The matrix printed as a table that fits 100 columns: MB/s, ratio, CPU-s/GB per process. */
export function moverTable(results: MoverResult[]): string {
  const lines = ['path                          MB/s  ratio  vs 0%  CPU-s/GB: send  recv     A    R1     B  total'];
  const cell = (v: number | undefined | null, width: number): string => (v === undefined || v === null ? '-' : String(v)).padStart(width);
  for (const r of results) {
    const label = r.mtu === 'loopback' ? r.path.slice(0, 28) : `mtu ${r.mtu} ${r.lossPercent}% ${r.delayMsPerLink}ms/link`;
    const c = r.cpuSecondsPerGb;
    const rate = r.completed === 0 ? 'FAIL' : `${r.mbytePerSecond}${r.completed < r.runs ? '*' : ''}`;
    lines.push(
      `${label.padEnd(28)} ${rate.padStart(6)} ${cell(r.ratio, 6)} ${cell(r.ratioToLossless, 6)}        ${cell(c.send, 6)}${cell(c.recv, 6)}${cell(c.A, 6)}${cell(c.R1, 6)}${cell(c.B, 6)}${cell(c.total, 7)}`,
    );
  }
  return lines.join('\n');
}

export async function runMoverBench(
  options: { megabytes?: number; runs?: number; matrixRuns?: number; matrix?: boolean; matrixPath?: 'direct' | 'via-node'; losses?: number[]; delays?: number[] } = {},
): Promise<MoverResult[]> {
  const env = process.env;
  const megabytes = options.megabytes ?? Number(env['XMIG_BENCH_MB'] ?? 256);
  const runs = options.runs ?? Number(env['XMIG_BENCH_RUNS'] ?? 5);
  const matrixRuns = options.matrixRuns ?? Number(env['XMIG_BENCH_MATRIX_RUNS'] ?? 1);
  const matrix = options.matrix ?? env['XMIG_BENCH_MATRIX'] !== '0';
  const viaNode = (options.matrixPath ?? env['XMIG_BENCH_MATRIX_PATH'] ?? 'via-node') !== 'direct';
  const deadlineMs = Number(env['XMIG_BENCH_DEADLINE_S'] ?? 240) * 1000;
  const list = (text: string | undefined): number[] | undefined => (text ? text.split(',').map(Number) : undefined);
  const losses = options.losses ?? list(env['XMIG_BENCH_LOSSES']) ?? [0, 1, 5];
  const delays = options.delays ?? list(env['XMIG_BENCH_DELAYS']) ?? [0, 10, 50];
  // Random data: nothing for the mover's zero-chunk shortcut (a real migration stream has plenty).
  const data = randomFillSync(Buffer.alloc(megabytes << 20));
  const xmig = [process.execPath, ...XMIG_ARGV];
  const results: MoverResult[] = [];

  const loopback = new UdpNetwork(MIGRATION_HOSTS);
  await loopback.start();
  try {
    const paths: Path[] = [
      {
        name: 'tcp pipe (node, stdin -> socket -> stdout)',
        receiver: () => ({ command: [process.execPath, '-e', PIPE_RECEIVER], ready: /^ready \d+/ }),
        sender: (ready) => ({ command: [process.execPath, '-e', PIPE_SENDER, ready.split(' ')[1]!], ready: /^ready/ }),
      },
      {
        name: 'xmig send | recv, control protocol over TCP',
        receiver: () => ({ command: [...xmig, 'recv', '--transport', 'tcp', '--listen', '127.0.0.1:0', '--log-level', LOG_LEVEL], ready: /recv\.listening/ }),
        sender: (ready) => ({ command: [...xmig, 'send', '--transport', 'tcp', '--to', (JSON.parse(ready) as { address: string }).address, '--log-level', LOG_LEVEL], ready: /send\.connected/ }),
      },
      xianetPath('xmig send | recv over xianet (A -> R1 -> B on UDP)', loopback),
      xianetPath('xmig send | recv --via-node over xianet', loopback, ['--via-node']),
    ];
    const outcomes = new Map<Path, RunResult[]>(paths.map((p) => [p, []]));
    // Interleaved, so drift in the machine's load hits every path alike.
    for (let run = 0; run < runs; run++) for (const path of paths) outcomes.get(path)!.push(await once(path, data, deadlineMs));
    for (const path of paths) results.push(summarise({ bench: 'mover', path: path.name, mtu: 'loopback', lossPercent: 0, delayMsPerLink: 0, megabytes: data.length / 1e6 }, outcomes.get(path)!, data.length));
  } finally {
    await loopback.stop();
  }
  const pipe = results[0]!.mbytePerSecond;
  for (const r of results) r.ratio = pipe && r.mbytePerSecond ? round(r.mbytePerSecond / pipe, 3) : null;

  if (matrix) {
    const cells: MoverResult[] = [];
    for (const delay of delays) {
      for (const loss of losses) {
        const impairment: ImpairmentConfig = { lossRate: loss / 100, delayMs: delay };
        const network = new UdpNetwork(MIGRATION_HOSTS, { mtu: 1500, impairments: { 'seg-A': impairment, 'seg-B': impairment } });
        await network.start();
        try {
          const path = xianetPath(`xianet mtu 1500, ${loss} % loss, ${delay} ms per link${viaNode ? ', via node' : ''}`, network, viaNode ? ['--via-node'] : []);
          const outcomes: RunResult[] = [];
          for (let run = 0; run < matrixRuns; run++) outcomes.push(await once(path, data, deadlineMs));
          const cell = summarise({ bench: 'mover', path: path.name, mtu: 1500, lossPercent: loss, delayMsPerLink: delay, megabytes: data.length / 1e6 }, outcomes, data.length);
          cells.push(cell);
          process.stderr.write(`mover: ${cell.path}: ${cell.mbytePerSecond ?? 'FAILED'} MB/s${cell.failures ? ` (${cell.failures.join('; ')})` : ''}\n`);
        } finally {
          await network.stop();
        }
      }
    }
    const lossless = cells.find((c) => c.lossPercent === 0 && c.delayMsPerLink === 0)?.mbytePerSecond;
    for (const c of cells) {
      c.ratio = lossless && c.mbytePerSecond ? round(c.mbytePerSecond / lossless, 3) : null;
      const sameDelay = cells.find((d) => d.lossPercent === 0 && d.delayMsPerLink === c.delayMsPerLink)?.mbytePerSecond;
      c.ratioToLossless = sameDelay && c.mbytePerSecond ? round(c.mbytePerSecond / sameDelay, 3) : null;
    }
    results.push(...cells);
  }
  process.stderr.write(`${moverTable(results)}\n(* some runs failed; ratio: loopback rows vs the TCP pipe, mtu rows vs mtu 1500 0% 0ms; vs 0%: vs the same delay without loss)\n`);
  return results;
}
