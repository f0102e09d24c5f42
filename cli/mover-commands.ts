import { writeFileSync } from 'node:fs';
import { Command, Option } from 'commander';
import { Dag } from '../shared/dag.js';
import { createLogger, type LogLevel } from '../shared/logger.js';
import { XmigError } from '../shared/errors.js';
import { Xid, WellKnownSid, XidType } from '../shared/xid.js';
import { parseSocketAddress } from '../xianet/udp-link.js';
import { NodeClient } from '../xianet/api/api-client.js';
import { TcpPublisher, TcpRetriever, XiaPublisher, XiaRetriever } from '../mover/chunk-exchange.js';
import { admitTcpFrom, admitXiaFrom, connectTcp, connectXia, listenTcp, listenXia } from '../mover/connections.js';
import { MigrationReceiver } from '../mover/receiver.js';
import { DEFAULT_CHUNK_BYTES, MigrationSender } from '../mover/sender.js';
import { migrate, type MigrateTransport } from '../mover/migrate.js';
import { migrationSvg } from '../mover/report-svg.js';
import { ExitCode } from './exit-codes.js';
import { DEFAULT_API_SOCKET } from './defaults.js';
import { resolveTarget } from './resolve-target.js';

interface MoverFlags {
  transport: 'xia' | 'tcp';
  api: string;
  stats?: string;
  logLevel: LogLevel;
  resumeDeadlineMs: number;
}

function common(command: Command): Command {
  return command
    .addOption(new Option('-t, --transport <kind>', 'xia: chunks over the local XIA node; tcp: the same protocol over TCP/IP').choices(['xia', 'tcp']).default('xia'))
    .option('--api <socket>', 'the local node API socket (xia)', DEFAULT_API_SOCKET)
    .option('--stats <file>', 'write the transfer figures (JSON) here when done')
    .option('--resume-deadline-ms <ms>', 'how long a lost control connection may take to come back', (v) => Number(v), 10_000)
    .addOption(new Option('--log-level <level>', 'log level (logs go to stderr)').choices(['error', 'warn', 'info', 'debug']).env('XMIG_LOG_LEVEL').default('warn'));
}

export function sendCommand(): Command {
  return common(new Command('send'))
    .description('QEMU exec: migration source: read the migration stream from stdin and move it as chunks')
    .requiredOption('--to <target>', 'the receiver: a DAG or name (xia), host:port (tcp)')
    .option('--chunk-kb <n>', 'chunk size in KiB', (v) => Number(v), DEFAULT_CHUNK_BYTES / 1024)
    .option('--round-kb <n>', 'round size in KiB', (v) => Number(v), 4096)
    .option('--window-mb <n>', 'most MiB read from QEMU and not yet acknowledged; small keeps QEMU\'s bandwidth estimate, and so its downtime, honest', (v) => Number(v), 16)
    .action(async (options: MoverFlags & { to: string; chunkKb: number; roundKb: number; windowMb: number }) => {
      const logger = createLogger({ component: 'mover', destination: 'stderr', level: options.logLevel });
      const api = options.transport === 'xia' ? await NodeClient.connect(options.api) : undefined;
      try {
        let connect;
        let source = '';
        if (api) {
          const dst = await resolveTarget(options.to, api);
          connect = connectXia(api, dst);
          source = (await api.info()).address.toString();
        } else {
          const { host, port } = parseSocketAddress(options.to);
          connect = connectTcp(host, port);
        }
        const sender = new MigrationSender({
          input: process.stdin,
          connect,
          publisher: api ? new XiaPublisher(api) : new TcpPublisher(),
          mode: options.transport,
          source,
          chunkBytes: options.chunkKb * 1024,
          roundBytes: options.roundKb * 1024,
          maxUnackedBytes: options.windowMb * 1024 * 1024,
          resumeDeadlineMs: options.resumeDeadlineMs,
          logger,
        });
        const report = await sender.run();
        if (options.stats) writeFileSync(options.stats, JSON.stringify({ role: 'send', transport: options.transport, ...report }));
      } catch (error) {
        // QEMU must see its pipe break at once, so it fails the migration and the VM runs on.
        process.stdin.destroy();
        throw error;
      } finally {
        await api?.close();
      }
    });
}

export function recvCommand(): Command {
  return common(new Command('recv'))
    .description('QEMU exec: migration destination: receive the chunks and write the migration stream to stdout')
    .option('--sid <sid>', 'the SID to listen on (xia)', WellKnownSid.MIGRATION.toString())
    .option('--listen <host:port>', 'where to listen (tcp)', '0.0.0.0:4444')
    .option('--from <sender...>', 'accept the migration only from these senders: a DAG, name or HID (xia), an IP address (tcp)')
    .action(async (options: MoverFlags & { sid: string; listen: string; from?: string[] }) => {
      const logger = createLogger({ component: 'mover', destination: 'stderr', level: options.logLevel });
      const api = options.transport === 'xia' ? await NodeClient.connect(options.api) : undefined;
      try {
        const listening = api
          ? await listenXia(api, Xid.parse(options.sid))
          : await listenTcp(parseSocketAddress(options.listen).host, parseSocketAddress(options.listen).port);
        const admit = !options.from ? undefined : api ? admitXiaFrom(await Promise.all(options.from.map((f) => senderHid(f, api)))) : admitTcpFrom(options.from);
        logger.info('recv.listening', { address: listening.address, transport: options.transport });
        const receiver = new MigrationReceiver({
          output: process.stdout,
          accept: () => listening.accept(),
          admit,
          retriever: (mode, source) => (mode === 'xia' && api ? new XiaRetriever(api, Dag.parse(source)) : new TcpRetriever()),
          resumeDeadlineMs: options.resumeDeadlineMs,
          logger,
        });
        const report = await receiver.run();
        await listening.close();
        if (options.stats) writeFileSync(options.stats, JSON.stringify({ role: 'recv', transport: options.transport, ...report }));
      } finally {
        await api?.close();
      }
    });
}

/** A sender named by its HID, its DAG or its name: the HID it connects from. */
async function senderHid(text: string, api: NodeClient): Promise<Xid> {
  if (/^HID:/i.test(text)) return Xid.parse(text);
  const hid = (await resolveTarget(text, api)).find(XidType.HID);
  if (!hid) throw new XmigError('ERR_CONFIG', `--from ${text}: its DAG has no HID`);
  return hid;
}

export function migrateCommand(): Command {
  return new Command('migrate')
    .description('live-migrate the VM of a QEMU (through its QMP socket), over the mover or QEMU tcp:, and report')
    .requiredOption('--qmp <socket>', "the source QEMU's QMP socket")
    .requiredOption('--to <target>', 'xia: the receiver DAG or name; tcp, qemu-tcp: host:port')
    .addOption(new Option('-t, --transport <kind>', 'xia (exec: xmig send over XIA), tcp (exec: xmig send over TCP), qemu-tcp (QEMU tcp:)').choices(['xia', 'tcp', 'qemu-tcp']).default('xia'))
    .option('--disk', 'block migration: move the disk too')
    .option('--api <socket>', 'the local node API socket (xia)', DEFAULT_API_SOCKET)
    .option('--max-bandwidth <MiB/s>', 'cap the migration rate (default: no cap)', (v) => Number(v))
    .option('--downtime-limit <ms>', 'longest stop-and-copy pause QEMU may take', (v) => Number(v), 300)
    .option('--xmig <command>', 'how QEMU should run xmig (default: this node and this xmig)')
    .option('--report <file>', 'write the report as JSON here, and an SVG timeline beside it')
    .option('--no-progress', 'no progress bar')
    .option('--json', 'print the report as JSON')
    .action(async (options: { qmp: string; to: string; transport: MigrateTransport; disk?: boolean; api: string; maxBandwidth?: number; downtimeLimit: number; xmig?: string; report?: string; progress: boolean; json?: boolean }) => {
      // Loaded here, not with the module: `send` and `recv` start under QEMU's clock.
      const progress = options.progress && process.stderr.isTTY ? await import('cli-progress') : undefined;
      const bar = progress
        ? new progress.SingleBar({ format: '{phase} |{bar}| {percentage}% {done}/{all} MiB {rate} MiB/s', stream: process.stderr, hideCursor: true }, progress.Presets.shades_classic)
        : undefined;
      let started = false;
      // Ctrl-C or a stop cancels the migration cleanly: the source VM keeps running.
      const abort = new AbortController();
      const onSignal = (): void => abort.abort();
      process.once('SIGINT', onSignal).once('SIGTERM', onSignal);
      const report = await migrate({
        signal: abort.signal,
        qmp: options.qmp,
        to: options.to,
        transport: options.transport,
        disk: options.disk,
        api: options.api,
        maxBandwidth: options.maxBandwidth === undefined ? undefined : options.maxBandwidth * 1024 * 1024,
        downtimeLimitMs: options.downtimeLimit,
        xmigCommand: options.xmig,
        onProgress: (s) => {
          if (!bar || s.total === 0) return;
          const mib = (bytes: number): string => (bytes / 1048576).toFixed(0);
          const payload = { phase: s.status.padEnd(9), done: mib(s.transferred), all: mib(s.total), rate: (s.mbps / 8).toFixed(1) };
          const done = Math.max(0, s.total - s.remaining);
          if (!started) {
            bar.start(s.total, done, payload);
            started = true;
          } else bar.update(done, payload);
        },
      }).finally(() => process.off('SIGINT', onSignal).off('SIGTERM', onSignal));
      if (started) bar?.stop();
      if (options.report) {
        writeFileSync(options.report, `${JSON.stringify(report, null, 2)}\n`);
        writeFileSync(options.report.replace(/(\.json)?$/, '.svg'), migrationSvg(report, `xmig migrate --transport ${options.transport}`));
      }
      const { samples: _samples, ...summary } = report;
      process.stdout.write(
        options.json
          ? `${JSON.stringify(summary)}\n`
          : `${report.status}: ${report.elapsedMs} ms until QEMU completed (its total-time ${report.totalTimeMs ?? '-'} ms), downtime ${report.downtimeMs ?? '-'} ms, setup ${report.setupTimeMs ?? '-'} ms, ${((report.bytes ?? 0) / 1e6).toFixed(1)} MB in ${report.rounds ?? '-'} rounds, ${report.throughputMbps?.toFixed(0) ?? '-'} Mbit/s${report.error ? ` (${report.error})` : ''}\n`,
      );
      if (report.status !== 'completed') process.exitCode = ExitCode.FAILURE;
    });
}
