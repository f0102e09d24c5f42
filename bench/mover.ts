/**
 * Mover throughput, stdin to stdout, side by side in one run (medians of `runs`):
 * a plain TCP pipe (two processes: stdin -> socket -> stdout), `xmig send | recv`
 * with the control protocol over TCP, and `xmig send | recv` over xianet (host
 * daemons A and B behind router R1 on UDP, chunks SHA-1 verified). The clock runs
 * from the first byte written to the sender to the last byte out of the receiver;
 * process start-up is left out (the QEMU benchmark includes it).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import { createInterface } from 'node:readline';
import { WellKnownSid } from '../shared/xid.js';
import { XMIG_ARGV } from '../test/support/processes.js';
import { MIGRATION_HOSTS, UdpNetwork } from '../test/support/udp-network.js';
import { median } from './two-nodes.js';

export interface MoverResult {
  bench: 'mover';
  path: string;
  megabytes: number;
  runs: number;
  medianSeconds: number;
  mbytePerSecond: number;
  ratioToTcpPipe?: number;
}

/** The yardstick: the same two-process shape with nothing but a TCP socket between. */
const PIPE_RECEIVER = `const s=require('net').createServer(c=>{c.pipe(process.stdout);c.on('end',()=>s.close())}).listen(0,'127.0.0.1',()=>console.error('ready '+s.address().port))`;
const PIPE_SENDER = `const c=require('net').connect(+process.argv[1],'127.0.0.1',()=>{console.error('ready');process.stdin.pipe(c)})`;

interface Path {
  name: string;
  receiver(): { command: string[]; ready: RegExp };
  sender(receiverReady: string): { command: string[]; ready: RegExp };
}

/** Spawns a process and resolves with the first stderr line matching `ready`. */
function start(command: string[], ready: RegExp, stdio: 'receiver' | 'sender'): { child: ChildProcess; ready: Promise<string> } {
  const child = spawn(command[0]!, command.slice(1), { stdio: stdio === 'receiver' ? ['ignore', 'pipe', 'pipe'] : ['pipe', 'ignore', 'pipe'] });
  const lines: string[] = [];
  const readyLine = new Promise<string>((resolve, reject) => {
    createInterface({ input: child.stderr! }).on('line', (line) => {
      lines.push(line);
      if (ready.test(line)) resolve(line);
    });
    child.once('exit', (code) => reject(new Error(`${command.slice(0, 4).join(' ')} exited (${code}) before it was ready:\n${lines.join('\n')}`)));
  });
  readyLine.catch(() => undefined);
  return { child, ready: readyLine };
}

async function once(path: Path, data: Buffer): Promise<number> {
  const r = path.receiver();
  const receiver = start(r.command, r.ready, 'receiver');
  const s = path.sender(await receiver.ready);
  const sender = start(s.command, s.ready, 'sender');
  try {
    await sender.ready;
    let received = 0;
    const done = new Promise<void>((resolve, reject) => {
      receiver.child.stdout!.on('data', (d: Buffer) => (received += d.length));
      receiver.child.stdout!.once('end', () => (received === data.length ? resolve() : reject(new Error(`${path.name}: ${received} of ${data.length} bytes arrived`))));
    });
    const started = performance.now();
    const input = sender.child.stdin!;
    for (let offset = 0; offset < data.length; offset += 1 << 20) {
      if (!input.write(data.subarray(offset, offset + (1 << 20)))) await new Promise((resolve) => input.once('drain', resolve));
    }
    input.end();
    await done;
    return (performance.now() - started) / 1000;
  } finally {
    sender.child.kill('SIGKILL');
    receiver.child.kill('SIGKILL');
  }
}

export async function runMoverBench(options: { megabytes?: number; runs?: number } = {}): Promise<MoverResult[]> {
  const megabytes = options.megabytes ?? 256;
  const runs = options.runs ?? 5;
  // Random data: nothing for the mover's zero-chunk shortcut (a real migration stream has plenty).
  const data = randomFillSync(Buffer.alloc(megabytes << 20));
  const network = new UdpNetwork(MIGRATION_HOSTS);
  await network.start();
  const xmig = [process.execPath, ...XMIG_ARGV];
  const paths: Path[] = [
    {
      name: 'tcp pipe (node, stdin -> socket -> stdout)',
      receiver: () => ({ command: [process.execPath, '-e', PIPE_RECEIVER], ready: /^ready \d+/ }),
      sender: (ready) => ({ command: [process.execPath, '-e', PIPE_SENDER, ready.split(' ')[1]!], ready: /^ready/ }),
    },
    {
      name: 'xmig send | recv, control protocol over TCP',
      receiver: () => ({ command: [...xmig, 'recv', '--transport', 'tcp', '--listen', '127.0.0.1:0', '--log-level', 'info'], ready: /recv\.listening/ }),
      sender: (ready) => ({ command: [...xmig, 'send', '--transport', 'tcp', '--to', (JSON.parse(ready) as { address: string }).address, '--log-level', 'info'], ready: /send\.connected/ }),
    },
    {
      name: 'xmig send | recv over xianet (A -> R1 -> B on UDP)',
      receiver: () => ({ command: [...xmig, 'recv', '--api', network.api('B'), '--log-level', 'info'], ready: /recv\.listening/ }),
      sender: () => ({
        command: [...xmig, 'send', '--api', network.api('A'), '--to', network.serviceDag('B', 'AD1', WellKnownSid.MIGRATION).toString(), '--log-level', 'info'],
        ready: /send\.connected/,
      }),
    },
  ];
  const results: MoverResult[] = [];
  try {
    const seconds = new Map<Path, number[]>(paths.map((p) => [p, []]));
    // Interleaved, so drift in the machine's load hits every path alike.
    for (let run = 0; run < runs; run++) for (const path of paths) seconds.get(path)!.push(await once(path, data));
    for (const path of paths) {
      const s = median(seconds.get(path)!);
      results.push({ bench: 'mover', path: path.name, megabytes: data.length / 1e6, runs, medianSeconds: Math.round(s * 1000) / 1000, mbytePerSecond: Math.round(data.length / s / 1e5) / 10 });
    }
  } finally {
    await network.stop();
  }
  for (const r of results) r.ratioToTcpPipe = Math.round((r.mbytePerSecond / results[0]!.mbytePerSecond) * 1000) / 1000;
  return results;
}
