/**
 * Where the mover's CPU goes: one `xmig send | recv` over xianet on loopback (A -> R1
 * -> B), every process (the three daemons, send and recv) under `node --cpu-prof`, then
 * each profile's heaviest functions by self time, with the callers that spent most in
 * them. How bench/README.md's data-path profiles were taken.
 *
 *   npm run build && XMIG_ENTRY=dist/cli/main.js npx tsx bench/mover-profile.ts [direct|via-node] [MiB] [runs] [--perf] [--mtu <bytes>]
 *
 * The .cpuprofile files stay in the directory it prints (open them in Chrome's DevTools).
 * Profiles sample wall time: on a loaded machine the figures are inflated, the shares hold.
 *
 * --perf: the whole machine under `perf record -a -g` instead (root, and Debian's
 * linux-perf), the processes with `--perf-basic-prof` so JIT frames have names; each
 * process's samples then say what --cpu-prof cannot: the kernel's copies, page faults,
 * V8's GC threads (bench/perf-script.ts). perf.data stays in the directory it prints.
 *
 * --mtu 1500: every UDP link at that MTU (the matrix's lossless 0 ms cell), not loopback's 64 KiB.
 *
 * send and recv get real pipes (FIFOs), as QEMU's exec: gives them: with `via-node` the
 * nodes take them over (mover/stdio-handover.ts), and send and recv only wait.
 */
import { spawn, spawnSync } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import { closeSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { createInterface } from 'node:readline';
import { join } from 'node:path';
import { WellKnownSid } from '../shared/xid.js';
import { Fifos } from '../test/support/fifo.js';
import { startXmig, XMIG_ARGV } from '../test/support/processes.js';
import { MIGRATION_HOSTS, UdpNetwork } from '../test/support/udp-network.js';
import { formatProfile, PerfAggregate, PerfScriptReader } from './perf-script.js';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}

/** The top `n` functions by self time, each with its heaviest caller chain. */
export function summarise(file: string, n = 12): string {
  const profile = JSON.parse(readFileSync(file, 'utf8')) as { nodes: ProfileNode[]; samples: number[]; timeDeltas: number[] };
  const byId = new Map(profile.nodes.map((node) => [node.id, node]));
  const parent = new Map<number, number>();
  for (const node of profile.nodes) for (const child of node.children ?? []) parent.set(child, node.id);
  const label = (node: ProfileNode): string => `${node.callFrame.functionName || '(anonymous)'} ${node.callFrame.url.split('/').slice(-2).join('/')}:${node.callFrame.lineNumber + 1}`;
  const time = new Map<number, number>();
  profile.samples.forEach((id, i) => time.set(id, (time.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0)));
  const self = new Map<string, { us: number; callers: Map<string, number> }>();
  let busy = 0;
  for (const [id, us] of time) {
    const node = byId.get(id)!;
    if (node.callFrame.functionName === '(idle)') continue;
    busy += us;
    const entry = self.get(label(node)) ?? { us: 0, callers: new Map<string, number>() };
    entry.us += us;
    const chain: string[] = [];
    for (let at = parent.get(id); at !== undefined && chain.length < 3; at = parent.get(at)) chain.push(label(byId.get(at)!).split(' ')[0]!);
    const key = chain.join(' < ');
    entry.callers.set(key, (entry.callers.get(key) ?? 0) + us);
    self.set(label(node), entry);
  }
  const lines = [`busy ${(busy / 1e6).toFixed(2)} s`];
  for (const [name, { us, callers }] of [...self].sort((a, b) => b[1].us - a[1].us).slice(0, n)) {
    const top = [...callers].sort((a, b) => b[1] - a[1])[0]?.[0] ?? '';
    lines.push(`  ${(us / 1e3).toFixed(0).padStart(6)} ms ${((100 * us) / busy).toFixed(1).padStart(5)} %  ${name}${top ? `  < ${top}` : ''}`);
  }
  return lines.join('\n');
}

/** `perf record -a -g` of the whole machine until stop(); then `perf script` read per process. */
async function recordPerf(file: string): Promise<{ stop: () => Promise<void> }> {
  if (spawnSync('perf', ['--version']).status !== 0) throw new Error('--perf needs perf (Debian: apt-get install linux-perf)');
  const perf = spawn('perf', ['record', '-a', '-g', '-F', '499', '-o', file], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  perf.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number | null>((resolve) => perf.once('exit', resolve));
  // perf says nothing when it has started; a moment lets it open its events (or fail).
  await new Promise((resolve) => setTimeout(resolve, 500));
  if (perf.exitCode !== null) throw new Error(`perf record exited (${perf.exitCode}): ${stderr.trim()}`);
  return {
    async stop() {
      perf.kill('SIGINT');
      // perf writes its file on SIGINT; one that has not ended in 30 s will not.
      const timer = setTimeout(() => perf.kill('SIGKILL'), 30_000);
      await exited;
      clearTimeout(timer);
    },
  };
}

async function perfReport(file: string, names: Map<string, string>): Promise<string> {
  const aggregate = new PerfAggregate(new Set([...names.keys()].map(Number)));
  const script = spawn('perf', ['script', '-i', file, '-F', 'pid,tid,ip,sym,dso'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  script.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number | null>((resolve) => script.once('exit', resolve));
  const reader = new PerfScriptReader();
  for await (const line of createInterface({ input: script.stdout })) {
    const sample = reader.push(line);
    if (sample) aggregate.add(sample);
  }
  const last = reader.end();
  if (last) aggregate.add(last);
  const code = await exited;
  if (code !== 0) throw new Error(`perf script exited (${code}): ${stderr.trim().split('\n').slice(-3).join(' ')}`);
  return [...aggregate.byPid]
    .sort((a, b) => b[1].samples - a[1].samples)
    .map(([pid, profile]) => formatProfile(names.get(String(pid)) ?? String(pid), profile))
    .join('\n\n');
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  const mtuAt = argv.indexOf('--mtu');
  const mtu = mtuAt >= 0 ? Number(argv[mtuAt + 1]) : undefined;
  if (mtu !== undefined && !(Number.isInteger(mtu) && mtu >= 1280 && mtu <= 65_000)) throw new Error(`--mtu ${argv[mtuAt + 1]}: a whole number of bytes, 1280-65000`);
  const args = argv.filter((a, i) => a !== '--perf' && i !== mtuAt && i !== mtuAt + 1);
  const usePerf = argv.includes('--perf');
  const mode = args[0] === 'direct' ? 'direct' : 'via-node';
  const megabytes = Number(args[1] ?? 256);
  const runs = Number(args[2] ?? 1);
  const dir = mkdtempSync(join(tmpdir(), 'xmig-profile-'));
  // --perf-basic-prof also writes V8's code log (isolate-*-v8.log): into the profile's directory, not the cwd.
  const flags = usePerf ? ['--perf-basic-prof', `--logfile=${join(dir, 'v8.log')}`] : ['--cpu-prof', `--cpu-prof-dir=${dir}`];
  const perfFile = join(dir, 'perf.data');
  const network = new UdpNetwork(MIGRATION_HOSTS, mtu !== undefined ? { mtu } : {});
  const fifos = new Fifos();
  // The daemons under the profiler too: started as UdpNetwork.start() does, with the flags in front.
  const prefix = ['bash', '-c', `exec "$0" ${flags.join(' ')} "$@"`];
  const names = new Map<string, string>();
  for (const [name, config] of network.layout.configs) {
    const file = join(network.dir, `${name}.json`);
    writeFileSync(file, JSON.stringify(config));
    const node = startXmig(['node', '--config', file], { prefix });
    network.processes.set(name, node);
    names.set(String(node.child.pid), name);
  }
  await Promise.all([...network.processes.values()].map((p) => p.waitForLog('node.ready', 60_000)));
  const extra = mode === 'via-node' ? ['--via-node'] : [];
  const data = randomFillSync(Buffer.alloc(megabytes << 20));
  const perf = usePerf ? await recordPerf(perfFile) : undefined;
  try {
    for (let run = 0; run < runs; run++) {
      const xmig = (args: string[], role: 'send' | 'recv') => {
        // Real pipes, as QEMU's exec: gives them (a --via-node node takes them over).
        const pipe = fifos.open(role === 'send');
        const child = spawn(process.execPath, [...flags, ...XMIG_ARGV, ...args], { stdio: role === 'send' ? [pipe.child, 'ignore', 'pipe'] : ['ignore', pipe.child, 'pipe'] });
        closeSync(pipe.child);
        names.set(String(child.pid), `${role} ${run + 1}`);
        let stderr = '';
        child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
        return { child, stdio: pipe.ours, stderr: () => stderr, exited: new Promise<number | null>((resolve) => child.once('exit', resolve)) };
      };
      const until = async (what: () => boolean, label: string): Promise<void> => {
        for (const deadline = Date.now() + 60_000; !what(); ) {
          if (Date.now() > deadline) throw new Error(`no ${label} within 60 s`);
          await new Promise((resolve) => setTimeout(resolve, 50));
        }
      };
      const recv = xmig(['recv', '--api', network.api('B'), '--log-level', 'info', ...extra], 'recv');
      await until(() => recv.stderr().includes('recv.listening'), 'recv.listening');
      const send = xmig(['send', '--api', network.api('A'), '--to', network.serviceDag('B', 'AD1', WellKnownSid.MIGRATION).toString(), '--log-level', 'info', ...extra], 'send');
      await until(() => send.stderr().includes('send.connected'), 'send.connected');
      let received = 0;
      recv.stdio.on('data', (d: Buffer) => (received += d.length));
      const ended = new Promise((resolve) => recv.stdio.once('end', resolve));
      const started = performance.now();
      send.stdio.end(data);
      await ended;
      const seconds = (performance.now() - started) / 1000;
      process.stderr.write(`${mode} run ${run + 1}: ${received === data.length ? 'intact' : `${received} of ${data.length} bytes`}, ${((data.length / seconds) / 1e6).toFixed(1)} MB/s\n`);
      await Promise.all([send.exited, recv.exited]);
    }
  } finally {
    await perf?.stop();
    await network.stop();
    fifos.remove();
  }
  if (usePerf) {
    process.stdout.write(`\n${perfFile}\n\n${await perfReport(perfFile, names)}\n`);
    return;
  }
  for (const file of readdirSync(dir).filter((f) => f.endsWith('.cpuprofile'))) {
    const pid = file.split('.')[3]!;
    process.stdout.write(`\n${names.get(pid) ?? pid} (${join(dir, file)})\n${summarise(join(dir, file))}\n`);
  }
}

await main();
