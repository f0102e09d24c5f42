/**
 * `xmig lab [options]`: runs the experiment (lab/run.ts) and shows it — progress on
 * stderr (a bar per migration on a terminal, one line per step otherwise), then the
 * report: the table beside the paper's (100 columns), `--json`, and an HTML report with
 * the timeline. Ctrl-C (or SIGTERM) stops the run and removes what it made; `--keep`
 * leaves it and says how to get in. `xmig lab relay` is the lab's own helper.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Command, Option } from 'commander';
import { integerOption, numberOption, percentOption } from './option-parsers.js';
import { XmigError } from '../shared/errors.js';
import { LAB_WORKLOADS, type LabWorkload } from '../lab/lab-constants.js';
import type { LabProgress, LabReport, LabRunOptions } from '../lab/run.js';
import { ExitCode } from './exit-codes.js';
import { waitForShutdown } from './shutdown.js';

interface LabFlags {
  topology?: string;
  moves: number;
  tcp: boolean;
  tcpMoves: number;
  mtu: number;
  interval: number;
  pingTimeout: number;
  memory: number;
  disk?: boolean;
  storage?: 'none' | 'shared' | 'full';
  diskSize: number;
  diskData: number;
  workload: LabWorkload;
  autoConverge?: boolean;
  channel: 'exec' | 'unix';
  delayMs?: number;
  jitterMs?: number;
  loss?: number;
  rateMbps?: number;
  kernel?: string;
  cacheDir?: string;
  prefix?: string;
  dir?: string;
  keep?: boolean;
  bootTimeout: number;
  moveTimeout: number;
  html?: string;
  json?: boolean;
  progress: boolean;
  logLevel?: 'error' | 'warn' | 'info' | 'debug';
}


/** Progress on stderr: a bar while a migration moves bytes on a terminal, one line per finished step otherwise. */
async function progressView(enabled: boolean): Promise<{ report: (p: LabProgress) => void; stop: () => void }> {
  if (!enabled) return { report: () => undefined, stop: () => undefined };
  const line = (p: LabProgress): string => `lab: ${p.phase.padEnd(7)} ${(p.ms / 1000).toFixed(1).padStart(6)} s  ${p.detail ?? ''}`.trimEnd();
  if (!process.stderr.isTTY) {
    return { report: (p) => p.state === 'end' && process.stderr.write(`${line(p)}\n`), stop: () => undefined };
  }
  const { SingleBar, Presets } = await import('cli-progress');
  let bar: InstanceType<typeof SingleBar> | undefined;
  const stop = (): void => {
    bar?.stop();
    bar = undefined;
  };
  const MiB = 1048576;
  return {
    report: (p) => {
      if (p.state === 'progress' && p.totalBytes) {
        const payload = { detail: (p.detail ?? p.phase).slice(0, 48), secs: (p.ms / 1000).toFixed(1) };
        if (!bar) {
          bar = new SingleBar({ format: '{detail} |{bar}| {value}/{total} MiB {secs} s', stream: process.stderr, hideCursor: true }, Presets.shades_classic);
          bar.start(Math.ceil(p.totalBytes / MiB), 0, payload);
        }
        bar.update(Math.min(Math.floor((p.bytes ?? 0) / MiB), Math.ceil(p.totalBytes / MiB)), payload);
      } else if (p.state === 'end') {
        stop();
        process.stderr.write(`${line(p)}\n`);
      }
    },
    stop,
  };
}

export function labRunOptions(flags: LabFlags, parseTopology: (text: string) => 'intra-ad' | 'inter-ad'): LabRunOptions {
  const impairment =
    flags.delayMs !== undefined || flags.jitterMs !== undefined || flags.loss !== undefined || flags.rateMbps !== undefined
      ? {
          ...(flags.delayMs !== undefined ? { delayMs: flags.delayMs } : {}),
          ...(flags.jitterMs !== undefined ? { jitterMs: flags.jitterMs } : {}),
          ...(flags.loss !== undefined ? { lossRate: flags.loss / 100 } : {}),
          ...(flags.rateMbps !== undefined ? { rateMbps: flags.rateMbps } : {}),
        }
      : undefined;
  return {
    ...(flags.topology !== undefined ? { topologies: [parseTopology(flags.topology)] } : {}),
    moves: flags.moves,
    tcpBaseline: flags.tcp,
    tcpMoves: flags.tcpMoves,
    mtu: flags.mtu,
    pingIntervalMs: flags.interval,
    pingTimeoutMs: flags.pingTimeout,
    memoryMb: flags.memory,
    storage: flags.disk ? 'full' : (flags.storage ?? 'none'),
    diskSizeMb: flags.diskSize,
    diskSeedMb: flags.diskData,
    workload: flags.workload,
    ...(flags.autoConverge !== undefined ? { autoConverge: flags.autoConverge } : {}),
    channel: flags.channel,
    ...(impairment ? { interAdImpairment: impairment } : {}),
    ...(flags.kernel !== undefined ? { kernel: flags.kernel } : {}),
    ...(flags.cacheDir !== undefined ? { cacheDir: flags.cacheDir } : {}),
    ...(flags.prefix !== undefined ? { prefix: flags.prefix } : {}),
    ...(flags.dir !== undefined ? { dir: flags.dir } : {}),
    keep: flags.keep ?? false,
    bootDeadlineMs: flags.bootTimeout * 1000,
    moveDeadlineMs: flags.moveTimeout * 1000,
    ...(flags.logLevel ? { logLevel: flags.logLevel } : {}),
  };
}

/** Whether the run showed what the paper claims: every XIA connection intact, routes and names right. */
export function labVerdict(report: LabReport): string[] {
  const problems: string[] = [];
  for (const t of report.topologies) {
    if (t.xia.brokenConnections > 0) problems.push(`${t.topology}: the Goldbach connection over XIA broke (${t.xia.goldbach.ended}${t.xia.goldbach.error ? `: ${t.xia.goldbach.error}` : ''})`);
    for (const m of t.xia.moves) {
      const at = `${t.topology} move ${m.move} (${m.from} -> ${m.to})`;
      if (m.pingRecoveredMs === null) problems.push(`${at}: xping never answered again`);
      if (!m.resolvedCurrent) problems.push(`${at}: the name resolved to "${m.resolvedDag}", not the VM's current DAG`);
      if (!m.staleHostEntryGone) problems.push(`${at}: host ${m.from} still has a route to the VM`);
      if (m.staleVmEntryGone === false) problems.push(`${at}: the VM still has a route to host ${m.from}`);
      if (m.newClientAnswers === 0) problems.push(`${at}: a new client on C got no answer by name`);
    }
    const all = [
      ...t.xia.moves.map((m) => ({ at: `${t.topology} move ${m.move} (${m.from} -> ${m.to})`, m, judge: true })),
      ...(t.tcp?.moves ?? []).map((m) => ({ at: `${t.topology} TCP/IP move ${m.move} (${m.from} -> ${m.to})`, m, judge: true })),
    ];
    for (const { at, m, judge } of all) {
      for (const bad of m.disk?.filesBad.slice(0, 3) ?? []) problems.push(`${at}: the guest's disk at the destination: ${bad}`);
      if (!judge || !m.workload) continue;
      if (!m.workload.ranOn) problems.push(`${at}: ${m.workload.name} did not go on at the destination`);
      for (const error of m.workload.errors) problems.push(`${at}: ${m.workload.name} said: ${error}`);
    }
  }
  const check = report.disk?.check;
  if (check && !check.clean) problems.push(`the VM's disk after the last move: e2fsck found errors (${check.fsck ?? ''})`);
  for (const bad of check?.bad.slice(0, 5) ?? []) problems.push(`the VM's disk after the last move: ${bad.path} is not as written (${bad.got.slice(0, 60)})`);
  return problems;
}

export function labRunAction(lab: Command): Command {
  return lab
    .addOption(new Option('-t, --topology <name>', "Fig. 1a (intra-ad) or 1b (inter-ad); default: both, on one boot of the VM"))
    .option('--moves <n>', 'moves over XIA per topology, A -> B -> A -> ...', integerOption(1, 1000), 4)
    .option('--no-tcp', 'leave out the TCP/IP baseline')
    .option('--tcp-moves <n>', 'TCP/IP baseline moves in the LAN case (the WAN case stops at the first, which breaks)', integerOption(1, 100), 2)
    .option('--mtu <bytes>', 'IP MTU of every segment', integerOption(1280, 65535), 1500)
    .option('-i, --interval <ms>', 'xping interval Δt', integerOption(1, 1000), 10)
    .option('-W, --ping-timeout <ms>', 'an echo unanswered this long is lost', integerOption(10, 60_000), 5000)
    .option('--memory <MB>', "the VM's RAM", integerOption(128, 16384), 640)
    .addOption(new Option('--disk', 'full migration: the VM has its own disk on each host, mirrored with RAM at every move (= --storage full)').conflicts('storage'))
    .addOption(new Option('--storage <mode>', "the VM's disk: none, shared (one image both hosts open; RAM moves) or full (each host its own; the disk moves too)").choices(['none', 'shared', 'full']))
    .option('--disk-size <MB>', "the VM's virtual disk (sparse qcow2)", integerOption(64, 1_048_576), 4096)
    .option('--disk-data <MB>', 'random files put on the disk before the VM boots', integerOption(0, 1_048_576), 300)
    .option('--auto-converge', "QEMU's auto-converge on every move (default with a disk)")
    .option('--no-auto-converge', 'no auto-converge, even with a disk')
    .addOption(
      new Option('--channel <kind>', "moves over XIA: exec (QEMU runs xmig send|recv, the paper's mode) or unix (QEMU's unix: channel straight into the hosts' nodes)")
        .choices(['exec', 'unix'])
        .default('exec'),
    )
    .addOption(
      new Option('--workload <name>', "beside the calculation: goldbach (it alone), dbench (on the VM's disk; needs one) or iperf3 (from C; over XIA through xmig tunnel)")
        .choices([...LAB_WORKLOADS])
        .default('goldbach'),
    )
    .option('--delay-ms <ms>', 'inter-AD link: one-way delay (the project\'s link impairment; no netem)', integerOption(0, 60_000))
    .option('--jitter-ms <ms>', 'inter-AD link: jitter', integerOption(0, 60_000))
    .option('--loss <percent>', 'inter-AD link: datagram loss', percentOption())
    .option('--rate-mbps <Mbit/s>', 'inter-AD link: rate', numberOption(0.001, 1_000_000))
    .option('--kernel <file>', 'the guest kernel (default: the newest /boot/vmlinuz-* with modules)')
    .option('--cache-dir <dir>', 'where lab images are kept')
    .option('--prefix <name>', 'namespace prefix (default: xmig-lab-<random>)')
    .option('--dir <dir>', 'run directory: configs, logs, VM files, reports (default: a new one under /tmp)')
    .option('--keep', 'leave the namespaces, processes and VM running, and say how to enter them')
    .option('--boot-timeout <s>', 'how long the VM may take to boot', integerOption(1, 86_400), 600)
    .option('--move-timeout <s>', 'how long one migration may take', integerOption(1, 86_400), 600)
    .option('--html <file>', 'write the HTML report here (default: report.html in the run directory)')
    .addOption(new Option('--log-level <level>', "the daemons' and the guest's log level").choices(['error', 'warn', 'info', 'debug']))
    .option('--json', 'print the report as JSON')
    .option('--no-progress', 'no progress on stderr')
    .action(async (flags: LabFlags) => {
      const { parseTopologyName } = await import('../lab/topology.js');
      const options = labRunOptions(flags, parseTopologyName);
      const { runLab } = await import('../lab/run.js');
      const { formatLabReport } = await import('../lab/report.js');
      const { labHtml } = await import('../lab/report-html.js');
      const view = await progressView(flags.progress);
      const abort = new AbortController();
      const onSignal = (signal: NodeJS.Signals): void => {
        view.stop();
        process.stderr.write(`lab: ${signal}: stopping, removing what the lab made\n`);
        abort.abort(new XmigError('ERR_STATE', `interrupted (${signal})`));
      };
      process.once('SIGINT', onSignal).once('SIGTERM', onSignal);
      let report: LabReport;
      try {
        report = await runLab({ ...options, signal: abort.signal, onProgress: view.report });
      } finally {
        view.stop();
        process.off('SIGINT', onSignal).off('SIGTERM', onSignal);
      }
      const html = flags.html ?? join(report.dir, 'report.html');
      writeFileSync(html, labHtml(report));
      writeFileSync(join(report.dir, 'report.json'), `${JSON.stringify(report, null, 2)}\n`);
      process.stdout.write(flags.json ? `${JSON.stringify(report)}\n` : `${formatLabReport(report)}\n\nHTML report: ${html}\n`);
      if (report.kept) {
        process.stderr.write(`lab: kept everything (--keep); enter a host with:\n${report.topologies.length ? '' : ''}`);
        for (const host of ['R1', 'R2', 'A', 'B', 'C']) process.stderr.write(`  ip netns exec ${report.prefix}-${host} bash\n`);
        process.stderr.write(`  remove it all: xmig lab clean --prefix ${report.prefix}\n`);
      }
      const problems = labVerdict(report);
      for (const problem of problems) process.stderr.write(`lab: ${problem}\n`);
      if (problems.length > 0) process.exitCode = ExitCode.FAILURE;
    });
}

export function labRelayCommand(): Command {
  return new Command('relay')
    .description('(the lab\'s helper) relay a Unix socket to a TCP address, from inside a host\'s namespace')
    .requiredOption('--listen <path>', 'the Unix socket to listen on')
    .requiredOption('--to <host:port>', 'where to relay each connection ([v6%scope]:port)')
    .action(async (flags: { listen: string; to: string }) => {
      const { SocketRelay } = await import('../lab/relay.js');
      const { createLogger } = await import('../shared/logger.js');
      const logger = createLogger({ component: 'lab-relay' });
      const relay = new SocketRelay({ listen: flags.listen, target: flags.to });
      await relay.start();
      logger.info('relay.listening', { listen: flags.listen, target: flags.to });
      await waitForShutdown(logger);
      await relay.stop();
    });
}

export function labCleanCommand(): Command {
  return new Command('clean')
    .description('remove the namespaces (and what runs in them) of lab runs that were kept or killed')
    .option('--prefix <name>', 'only this run (default: every xmig-lab-* namespace)')
    .action(async (flags: { prefix?: string }) => {
      const { cleanLeftovers } = await import('../lab/netns.js');
      const removed = await cleanLeftovers(flags.prefix);
      process.stdout.write(removed.length ? `removed ${removed.join(', ')}\n` : 'nothing to remove\n');
    });
}
