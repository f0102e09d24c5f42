/**
 * `xmig migrate` and `xmig migrate status`: thin shells over mover/migrate.ts and
 * mover/migration-status.ts. Progress goes to stderr — a bar on a terminal, a plain
 * line a second otherwise (journald, CI, a pipe) — and the summary to stdout.
 * Ctrl-C cancels the migration (the VM runs on at the source) and still reports what
 * moved; a second Ctrl-C stops waiting for QEMU. Exit: 0 completed, 130 cancelled by a
 * signal, 1 otherwise (failed, or aborted by --timeout).
 */
import { writeFileSync } from 'node:fs';
import { Command, InvalidArgumentError, Option } from 'commander';
import { MAX_TIMER_MS, numberOption } from './option-parsers.js';
import { XmigError } from '../shared/errors.js';
import { migrate, type MigrateOptions, type MigrateTransport, type MigrationReport, type MigrationSample, type TimeoutAction } from '../mover/migrate.js';
import { connectDiskTargetXia, diskTargetAddress, type DiskSample } from '../mover/disk-migration.js';
import { connectTcp } from '../mover/connections.js';
import { parseSocketAddress } from '../xianet/udp-link.js';
import { NodeClient } from '../xianet/api/api-client.js';
import { resolveTarget } from '../xianet/names/resolve-target.js';
import { pruneStatuses, readStatuses, type MigrationStatus } from '../mover/migration-status.js';
import { migrationSvg } from '../mover/report-svg.js';
import { DEFAULT_API_SOCKET } from './defaults.js';
import { ExitCode } from './exit-codes.js';

const MIB = 1024 * 1024;
const mib = (bytes: number | undefined): string => (bytes === undefined ? '-' : (bytes / MIB).toFixed(1));

interface MigrateFlags {
  qmp: string;
  to: string;
  transport: MigrateTransport;
  channel: 'exec' | 'unix';
  /** --no-via-node: false. */
  viaNode: boolean;
  disk?: boolean;
  diskTo?: string;
  diskDevice?: string;
  diskMaxBandwidth?: number;
  api: string;
  maxBandwidth?: number;
  downtimeLimit: number;
  autoConverge?: boolean;
  compress?: 'xbzrle';
  xbzrleCacheMib: number;
  timeout?: number;
  timeoutAction: TimeoutAction;
  statusFile?: string;
  xmig?: string;
  report?: string;
  progress: boolean;
  json?: boolean;
}

/** A number above 0, at most `max` (a timer's seconds: setTimeout's 2^31-1 ms). */
const positive = (what: string, max = 1_000_000) => (v: string): number => {
  const n = numberOption(0, max)(v);
  if (n === 0) throw new InvalidArgumentError(`${what} must be above 0, not "${v}".`);
  return n;
};

/** The line shown while a migration runs: pass, what is sent and left, the measured rate. */
export function progressLine(s: MigrationSample): string {
  const done = s.total > 0 ? Math.max(0, s.total - s.remaining) : 0;
  const percent = s.total > 0 ? Math.floor((done * 100) / s.total) : 0;
  return `${s.status} pass ${s.passes}: ${percent}% of RAM copied (${mib(s.remaining)} of ${mib(s.total)} MiB left), ${mib(s.transferred)} MiB sent, ${(s.rateBytesPerSecond / MIB).toFixed(1)} MiB/s`;
}

/**
 * The line shown while the disk is mirrored: how much of what there is to copy (QEMU's own
 * measure: the allocated regions, and what the guest rewrites meanwhile), what went on the
 * wire, the rate.
 */
export function diskProgressLine(s: DiskSample): string {
  const percent = s.total > 0 ? Math.floor((s.mirrored * 100) / s.total) : 0;
  return `mirror-sync: ${percent}% copied (${mib(s.mirrored)} of ${mib(s.total)} MiB to copy), ${mib(s.wireBytes)} MiB on the wire, ${(s.rateBytesPerSecond / MIB).toFixed(1)} MiB/s`;
}

/** The one-line summary: MiB and MiB/s throughout; QEMU's passes, the mover's rounds apart. */
export function summaryLine(r: MigrationReport): string {
  const parts = [
    `${r.status}${r.cancelReason ? ` (${r.cancelReason === 'timeout' ? 'timed out' : 'interrupted'})` : ''}${r.forcedSwitchoverAtMs !== undefined ? ' (switchover forced by --timeout)' : ''}`,
    `${r.elapsedMs} ms until QEMU ${r.status === 'completed' ? 'completed' : 'ended'} (its total-time ${r.totalTimeMs ?? '-'} ms)`,
    `downtime ${r.downtimeMs ?? '-'} ms`,
    `setup ${r.setupTimeMs ?? '-'} ms`,
    `${mib(r.bytes)} MiB of RAM sent in ${r.passes ?? '-'} passes`,
    `${((r.meanRateBytesPerSecond ?? 0) / MIB).toFixed(1)} MiB/s`,
  ];
  if (r.mover) parts.push(`mover: ${mib(r.mover.bytes)} MiB in ${r.mover.rounds ?? '-'} rounds, ${r.mover.reconnects ?? 0} reconnects`);
  if (r.disk) {
    const sync = r.disk.phases.find((p) => p.phase === 'mirror-sync');
    const sw = r.disk.phases.find((p) => p.phase === 'switchover');
    parts.push(
      `disk of ${mib(r.disk.bytes)} MiB: ${mib(r.disk.mirroredBytes)} MiB mirrored, ${mib(r.disk.wire.toTarget)} MiB on the wire` +
        `${sync?.endMs !== undefined ? `, synced in ${sync.endMs - sync.startMs} ms` : ''}${sw?.endMs !== undefined ? `, switchover ${sw.endMs - sw.startMs} ms` : ''}`,
    );
  }
  return `${parts.join(', ')}${r.error ? ` — ${r.error}` : ''}`;
}

function statusCommand(): Command {
  return new Command('status')
    .description('show the migrations xmig migrate is running (or ran) on this host, from another shell')
    .option('--qmp <socket>', 'only the migration of the VM behind this QMP socket')
    .option('--json', 'print the status files as JSON lines')
    .option('--prune', 'remove the status files of finished and stale migrations')
    .addHelpText('after', '\nExamples:\n  xmig migrate status\n  xmig migrate status --qmp /run/vm.qmp --json\n')
    .action((options: { qmp?: string; json?: boolean; prune?: boolean }) => {
      if (options.prune) {
        process.stdout.write(`removed ${pruneStatuses()} status files\n`);
        return;
      }
      const statuses = readStatuses({ qmp: options.qmp });
      if (options.json) {
        for (const s of statuses) process.stdout.write(`${JSON.stringify(s)}\n`);
        return;
      }
      if (statuses.length === 0) {
        process.stdout.write(options.qmp ? `no migration of ${options.qmp} known here\n` : 'no migrations known here\n');
        return;
      }
      process.stdout.write(`${statusTable(statuses)}\n`);
    });
}

/** A table that fits 100 columns. */
export function statusTable(statuses: MigrationStatus[]): string {
  const rows = statuses.map((s) => [
    s.qmp.length > 28 ? `…${s.qmp.slice(-27)}` : s.qmp,
    s.transport,
    s.status,
    String(s.passes),
    mib(s.transferredBytes),
    mib(s.remainingBytes),
    (s.rateBytesPerSecond / MIB).toFixed(1),
    `${Math.round(((s.finished ? s.updatedAt : Date.now()) - s.startedAt) / 1000)}`,
  ]);
  const head = ['QMP socket', 'via', 'status', 'pass', 'sent MiB', 'left MiB', 'MiB/s', 'age s'];
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]): string => cells.map((c, i) => (i < 3 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
  return [line(head), ...rows.map(line)].join('\n');
}

export function migrateCommand(): Command {
  return new Command('migrate')
    .description('live-migrate the VM of a QEMU (through its QMP socket), over the mover or QEMU tcp:, and report')
    // Required, but checked in the action: commander would also demand them of `migrate status`.
    .option('--qmp <socket>', "the source QEMU's QMP socket (required)")
    .option('--to <target>', 'xia: the receiver DAG or name; tcp, qemu-tcp: host:port (required)')
    .addOption(new Option('-t, --transport <kind>', 'xia (exec: xmig send over XIA), tcp (exec: xmig send over TCP), qemu-tcp (QEMU tcp:)').choices(['xia', 'tcp', 'qemu-tcp']).default('xia'))
    .option('--disk', 'full migration: mirror the disk too, to xmig disk-target on the destination host, over xianet')
    .option('--disk-to <target>', 'where xmig disk-target listens: a DAG or name (default: the --to host, on the disk SID); tcp, qemu-tcp: its host:port')
    .option('--disk-device <name>', 'which disk, if the VM has several: device id, qdev path, drive id or node name')
    .option('--disk-max-bandwidth <MiB/s>', 'cap the disk mirror rate (default: no cap)', positive('--disk-max-bandwidth'))
    .option('--api <socket>', 'the local node API socket (xia)', DEFAULT_API_SOCKET)
    .addOption(
      new Option('--channel <kind>', "xia: exec (QEMU runs xmig send, the paper's mode) or unix (QEMU's unix: channel straight into the local node; the destination runs xmig recv --qemu-socket)")
        .choices(['exec', 'unix'])
        .default('exec'),
    )
    .option('--no-via-node', "xia, exec: run the sender in xmig send itself (QEMU's stream copied through it, chunks over the node API) instead of in the local node")
    .option('--max-bandwidth <MiB/s>', 'cap the migration rate (default: no cap)', positive('--max-bandwidth'))
    .option('--downtime-limit <ms>', 'longest stop-and-copy pause QEMU may take', positive('--downtime-limit', MAX_TIMER_MS), 300)
    .option('--auto-converge', 'throttle the guest when it dirties memory faster than it migrates')
    .addOption(new Option('--compress <method>', 're-sent pages as deltas (XBZRLE)').choices(['xbzrle']))
    .option('--xbzrle-cache-mib <MiB>', 'XBZRLE page cache size', positive('--xbzrle-cache-mib'), 64)
    .option('--timeout <s>', 'what to do when the migration has not completed after this many seconds: --timeout-action', positive('--timeout', Math.floor(MAX_TIMER_MS / 1000)))
    .addOption(new Option('--timeout-action <action>', 'abort: cancel (the VM runs on at the source); switchover: let QEMU stop the VM and copy what is left now').choices(['abort', 'switchover']).default('switchover'))
    .option('--status-file <file>', 'where `xmig migrate status` finds this migration (default: one per QMP socket under /run/xmig/migrations)')
    .option('--xmig <command>', 'how QEMU should run xmig (default: this node and this xmig)')
    .option('--report <file>', 'write the report as JSON here, and an SVG timeline beside it')
    .option('--no-progress', 'no progress on stderr')
    .option('--json', 'print the report as JSON')
    .addHelpText(
      'after',
      `
Examples:
  xmig migrate --qmp /run/vm.qmp --to vm-dest.hostB --report m.json
  xmig migrate --qmp /run/vm.qmp --to 'RE AD:… HID:… SID:…' --timeout 60 --timeout-action abort
  xmig migrate --qmp /run/vm.qmp --transport qemu-tcp --to 10.0.0.2:4444 --auto-converge --compress xbzrle
  xmig migrate --qmp /run/vm.qmp --to vm-dest.hostB --disk      (xmig disk-target runs on host B)
  xmig migrate status

Exit status: 0 completed, 130 interrupted (Ctrl-C), 1 failed or aborted by --timeout.`,
    )
    // `migrate status --json`: the --json after `status` is status's own, not migrate's.
    .enablePositionalOptions()
    .addCommand(statusCommand())
    .action(async (options: MigrateFlags, command: Command) => {
      for (const [flag, value] of [['--qmp <socket>', options.qmp], ['--to <target>', options.to]] as const) {
        if (value === undefined) command.error(`error: required option '${flag}' not specified`, { code: 'commander.missingMandatoryOptionValue', exitCode: 2 });
      }
      if (options.channel === 'unix' && options.transport !== 'xia') {
        command.error(`error: --channel unix carries QEMU's stream into the local XIA node: not with --transport ${options.transport}`, { code: 'commander.invalidArgument', exitCode: 2 });
      }
      const showProgress = options.progress;
      // Loaded here, not with the module: `send` and `recv` start under QEMU's clock.
      const progress = showProgress && process.stderr.isTTY ? await import('cli-progress') : undefined;
      const bar = progress ? new progress.SingleBar({ format: '|{bar}| {line}', stream: process.stderr, hideCursor: true, barsize: 24 }, progress.Presets.shades_classic) : undefined;
      let barStarted = false;
      let lastLineAt = -Infinity;
      // Ctrl-C or a stop cancels the migration cleanly: the source VM keeps running.
      // A second one stops waiting for QEMU to confirm.
      const cancel = new AbortController();
      const abandon = new AbortController();
      const onSignal = (): void => {
        if (cancel.signal.aborted) abandon.abort();
        else {
          cancel.abort();
          process.stderr.write('\ncancelling the migration (again to stop waiting for QEMU)\n');
        }
      };
      process.on('SIGINT', onSignal).on('SIGTERM', onSignal);
      let report: MigrationReport;
      let api: NodeClient | undefined;
      try {
        let disk: MigrateOptions['disk'];
        if (options.disk) {
          const common = { device: options.diskDevice, maxBandwidth: options.diskMaxBandwidth === undefined ? undefined : options.diskMaxBandwidth * MIB };
          if (options.transport === 'xia') {
            // Over xianet: the tunnel to the disk target on the destination's node.
            api = await NodeClient.connect(options.api);
            const target = options.diskTo ? await resolveTarget(options.diskTo, api) : diskTargetAddress(await resolveTarget(options.to, api));
            disk = { ...common, connect: connectDiskTargetXia(api, target), address: target.toString() };
          } else {
            // The TCP/IP baseline: the disk target over TCP, and QEMU's own NBD to its export.
            if (!options.diskTo) throw new XmigError('ERR_CONFIG', `--disk with --transport ${options.transport}: say where xmig disk-target listens (its --listen) with --disk-to host:port`);
            const { host, port } = parseSocketAddress(options.diskTo);
            disk = { ...common, connect: connectTcp(host, port), address: options.diskTo, nbdHost: host };
          }
        }
        report = await migrate({
          signal: cancel.signal,
          abandon: abandon.signal,
          qmp: options.qmp,
          to: options.to,
          transport: options.transport,
          disk,
          api: options.api,
          channel: options.channel,
          viaNode: options.viaNode,
          onDiskProgress: (s) => {
            if (!showProgress) return;
            if (bar) {
              const copied = s.total > 0 ? s.mirrored / s.total : 0;
              if (!barStarted) bar.start(1, copied, { line: diskProgressLine(s) });
              else bar.update(copied, { line: diskProgressLine(s) });
              barStarted = true;
            } else if (s.t - lastLineAt >= 1000) {
              lastLineAt = s.t;
              process.stderr.write(`migrate: ${diskProgressLine(s)}\n`);
            }
          },
          maxBandwidth: options.maxBandwidth === undefined ? undefined : options.maxBandwidth * MIB,
          downtimeLimitMs: options.downtimeLimit,
          autoConverge: options.autoConverge,
          xbzrleCacheBytes: options.compress === 'xbzrle' ? options.xbzrleCacheMib * MIB : undefined,
          timeoutMs: options.timeout === undefined ? undefined : options.timeout * 1000,
          timeoutAction: options.timeoutAction,
          statusFile: options.statusFile,
          xmigCommand: options.xmig,
          onProgress: (s) => {
            if (!showProgress) return;
            const line = progressLine(s);
            if (bar) {
              const copied = s.total > 0 ? Math.max(0, s.total - s.remaining) / s.total : 0;
              if (!barStarted) bar.start(1, copied, { line });
              else bar.update(copied, { line });
              barStarted = true;
            } else if (s.t - lastLineAt >= 1000) {
              lastLineAt = s.t;
              process.stderr.write(`migrate: ${line}\n`);
            }
          },
        });
      } finally {
        process.off('SIGINT', onSignal).off('SIGTERM', onSignal);
        if (barStarted) bar?.stop();
        await api?.close();
      }
      if (options.report) {
        writeFileSync(options.report, `${JSON.stringify(report, null, 2)}\n`);
        writeFileSync(options.report.replace(/(\.json)?$/, '.svg'), migrationSvg(report, `xmig migrate --transport ${options.transport}`));
      }
      const { samples: _samples, ...summary } = report;
      process.stdout.write(options.json ? `${JSON.stringify(summary)}\n` : `${summaryLine(report)}\n`);
      if (report.status === 'completed') return;
      process.exitCode = report.cancelReason === 'signal' ? ExitCode.INTERRUPTED : ExitCode.FAILURE;
    });
}
