import { resolve as resolvePath } from 'node:path';
import { Command, Option } from 'commander';
import { durationMsOption, integerOption } from './option-parsers.js';
import { Dag } from '../shared/dag.js';
import { createLogger, type LogLevel } from '../shared/logger.js';
import { errorMessage, XmigError } from '../shared/errors.js';
import { Xid, WellKnownSid } from '../shared/xid.js';
import { parseSocketAddress } from '../xianet/udp-link.js';
import { NodeClient } from '../xianet/api/api-client.js';
import { TcpPublisher, TcpRetriever, XiaPublisher, XiaRetriever } from '../mover/chunk-exchange.js';
import { admitTcpFrom, admitXiaFrom, connectTcp, connectXia, listenTcp, listenXia } from '../mover/connections.js';
import { MigrationReceiver } from '../mover/receiver.js';
import { migrateInNode, moverSocketOf, recvViaNode, sendViaNode } from '../mover/mover-client.js';
import { openInput, type OpenedInput } from '../mover/recycled-reads.js';
import { describePipe } from '../mover/stdio-handover.js';
import { DEFAULT_CHUNK_BYTES, MigrationSender } from '../mover/sender.js';
import { DEFAULT_API_SOCKET } from './defaults.js';
import { MoverMetrics, type MoverFigures, type MoverPhase, type MoverSide } from '../mover/mover-metrics.js';
import { startMetricsServer } from '../shared/metrics.js';
import type { Logger } from '../shared/logger.js';
import { hostHid } from './host-hid.js';
import { resolveTarget } from '../xianet/names/resolve-target.js';
import { writeFileAtomic } from '../shared/atomic-file.js';

interface MoverFlags {
  metricsPort?: number;
  metricsTextfile?: string;
  transport: 'xia' | 'tcp';
  viaNode?: boolean;
  qemuSocket?: string;
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
    .option('--metrics-port <port>', 'serve /metrics on this port while it runs', integerOption(0, 65535))
    .option('--metrics-textfile <file>', 'write the metrics here every second and at the end (node exporter textfile collector: a .prom file)')
    .option('--resume-deadline-ms <ms>', 'how long a lost control connection may take to come back', durationMsOption(1), 10_000)
    .option('--via-node', "xia: let the local node run the migration, and only pipe the stream to (send) or from (recv) it: no chunk crosses the API in messages")
    .option(
      '--qemu-socket <path>',
      "xia, QEMU's unix: channel instead of exec: (implies --via-node): the local node listens at <path> for `migrate unix:<path>` (send; the socket file appears when it is ready) or connects to QEMU's `-incoming unix:<path>` (recv). No stream crosses this process: it holds the migration and exits with its result",
    )
    .addOption(new Option('--log-level <level>', 'log level (logs go to stderr)').choices(['error', 'warn', 'info', 'debug']).env('XMIG_LOG_LEVEL').default('warn'));
}

export function sendCommand(): Command {
  return common(new Command('send'))
    .description('QEMU exec: migration source: read the migration stream from stdin and move it as chunks')
    .requiredOption('--to <target>', 'the receiver: a DAG or name (xia), host:port (tcp)')
    .option('--chunk-kb <n>', 'chunk size in KiB', integerOption(1, 65_536), DEFAULT_CHUNK_BYTES / 1024)
    .option('--round-kb <n>', 'round size in KiB', integerOption(1, 4 * 1024 * 1024), 4096)
    .option('--window-mb <n>', 'most MiB read from QEMU and not yet acknowledged (default: sized to the path, 16 MiB and up); small keeps QEMU\'s bandwidth estimate, and so its downtime, honest', integerOption(1, 65_536))
    .action(async (options: MoverFlags & { to: string; chunkKb: number; roundKb: number; windowMb?: number }) => {
      const logger = createLogger({ component: 'mover', destination: 'stderr', level: options.logLevel });
      if (options.viaNode || options.qemuSocket !== undefined) {
        await sendThroughNode(options, logger);
        return;
      }
      let sender: MigrationSender | undefined;
      let api: NodeClient | undefined;
      const metrics = await moverMetrics('send', options, logger, () => {
        const s = sender?.snapshot();
        return { bytes: s?.bytes ?? 0, chunks: { published: (s?.chunks ?? 0) - (s?.zeroChunks ?? 0), zero: s?.zeroChunks ?? 0 }, rounds: s?.rounds, reconnects: s?.reconnects };
      });
      // QEMU's pipe read into recycled memory (the round cutter copies each read into a chunk).
      const stdin = openInput();
      try {
        api = options.transport === 'xia' ? await NodeClient.connect(options.api) : undefined;
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
        sender = new MigrationSender({
          input: stdin.input,
          connect,
          publisher: api ? new XiaPublisher(api) : new TcpPublisher(),
          mode: options.transport,
          source,
          chunkBytes: options.chunkKb * 1024,
          roundBytes: options.roundKb * 1024,
          maxUnackedBytes: options.windowMb === undefined ? undefined : options.windowMb * 1024 * 1024,
          resumeDeadlineMs: options.resumeDeadlineMs,
          logger,
          onProgress: () => metrics?.metrics.setPhase('transfer'),
        });
        const report = await sender.run();
        await metrics?.finish('done');
        if (options.stats) writeFileAtomic(options.stats, JSON.stringify({ role: 'send', transport: options.transport, ...report }));
      } catch (error) {
        await metrics?.finish('failed');
        // QEMU must see its pipe break at once, so it fails the migration and the VM runs on.
        stdin.destroy();
        // xmig migrate reads the real reason here: QEMU itself only sees a broken pipe.
        if (options.stats) {
          try {
            writeFileAtomic(options.stats, JSON.stringify({ role: 'send', transport: options.transport, ...sender?.snapshot(), error: errorMessage(error) }));
          } catch {
            // the figures are a courtesy; the exit status is what QEMU acts on
          }
        }
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
      if (options.viaNode || options.qemuSocket !== undefined) {
        await recvThroughNode(options, logger);
        return;
      }
      let retriever: XiaRetriever | TcpRetriever | undefined;
      const metrics = await moverMetrics('recv', options, logger, () => ({
        bytes: retriever?.stats.bytes ?? 0,
        chunks: { verified: retriever?.stats.fetched ?? 0, refetched: retriever?.stats.corrupt ?? 0 },
      }));
      const api = options.transport === 'xia' ? await NodeClient.connect(options.api) : undefined;
      try {
        const listening = api
          ? await listenXia(api, Xid.parse(options.sid))
          : await listenTcp(parseSocketAddress(options.listen).host, parseSocketAddress(options.listen).port);
        const admit = !options.from ? undefined : api ? admitXiaFrom(await Promise.all(options.from.map((f) => hostHid(f, api)))) : admitTcpFrom(options.from);
        logger.info('recv.listening', { address: listening.address, transport: options.transport });
        const receiver = new MigrationReceiver({
          output: process.stdout,
          accept: () => listening.accept(),
          admit,
          retriever: (mode, source) => {
            retriever = mode === 'xia' && api ? new XiaRetriever(api, Dag.parse(source)) : new TcpRetriever();
            metrics?.metrics.setPhase('transfer');
            return retriever;
          },
          resumeDeadlineMs: options.resumeDeadlineMs,
          logger,
        });
        const report = await receiver.run().catch(async (error: unknown) => {
          await metrics?.finish('failed');
          throw error;
        });
        await metrics?.finish('done');
        await listening.close();
        if (options.stats) writeFileAtomic(options.stats, JSON.stringify({ role: 'recv', transport: options.transport, ...report }));
      } finally {
        await api?.close();
      }
    });
}

/** The mover's metrics, when asked for: /metrics while it runs, a textfile for the node exporter, or both. */
async function moverMetrics(
  side: MoverSide,
  flags: MoverFlags,
  logger: Logger,
  figures: () => MoverFigures,
): Promise<{ metrics: MoverMetrics; finish(phase: MoverPhase): Promise<void> } | undefined> {
  if (flags.metricsPort === undefined && flags.metricsTextfile === undefined) return undefined;
  const metrics = new MoverMetrics(side, figures);
  const server = flags.metricsPort === undefined ? undefined : await startMetricsServer(metrics.registry, { port: flags.metricsPort, logger });
  if (flags.metricsTextfile) metrics.startTextfile(flags.metricsTextfile);
  let finished = false;
  return {
    metrics,
    finish: async (phase) => {
      if (finished) return;
      finished = true;
      metrics.setPhase(phase);
      await metrics.stop(flags.metricsTextfile);
      await server?.close();
    },
  };
}

/** `send --via-node`: the stream into the local node's mover (mover-service.ts); the node does the rest. */
async function sendThroughNode(options: MoverFlags & { to: string; chunkKb: number; roundKb: number; windowMb?: number }, logger: Logger): Promise<void> {
  if (options.transport !== 'xia') throw new XmigError('ERR_CONFIG', '--via-node moves chunks over XIA only');
  const started = performance.now();
  let bytes = 0;
  const metrics = await moverMetrics('send', options, logger, () => ({ bytes, chunks: {} }));
  let stdin: OpenedInput | undefined;
  try {
    let to: Dag;
    if (/^\s*(RE|DAG)(\s|$)/.test(options.to)) to = Dag.parse(options.to);
    else {
      const api = await NodeClient.connect(options.api);
      try {
        to = await resolveTarget(options.to, api);
      } finally {
        await api.close();
      }
    }
    const request = {
      op: 'send' as const,
      to: to.toString(),
      chunkBytes: options.chunkKb * 1024,
      roundBytes: options.roundKb * 1024,
      maxUnackedBytes: options.windowMb === undefined ? undefined : options.windowMb * 1024 * 1024,
      resumeDeadlineMs: options.resumeDeadlineMs,
    };
    const onConnected = (): void => {
      metrics?.metrics.setPhase('transfer');
      logger.info('send.connected', { phase: 'connect', mode: 'xia', via: 'node', ms: Math.round(performance.now() - started) });
    };
    // With QEMU's socket, killing this process (Ctrl-C) closes ours to the node: it then breaks QEMU's channel.
    let report: Record<string, unknown>;
    if (options.qemuSocket === undefined) {
      stdin = openInput();
      report = await sendViaNode(moverSocketOf(options.api), request, stdin.input, {
        onConnected,
        onBytes: (n) => (bytes = n),
        // QEMU's exec: pipe: the node may read it itself, and nothing is copied through here.
        stdio: describePipe(0),
        onHandover: (taken, reason) => logger.info('send.pipe', { phase: 'setup', via: 'node', handedOver: taken, reason }),
      });
    } else {
      report = await migrateInNode(moverSocketOf(options.api), { ...request, qemuSocket: resolvePath(options.qemuSocket) }, {
        onConnected,
        onQemuListening: (path) => logger.info('send.qemu-listening', { phase: 'setup', via: 'node', path }),
      });
    }
    if (typeof report['bytes'] === 'number') bytes = report['bytes'];
    await metrics?.finish('done');
    logger.info('send.done', { phase: 'done', via: 'node', bytes, ms: Math.round(performance.now() - started) });
    if (options.stats) writeFileAtomic(options.stats, JSON.stringify({ role: 'send', transport: 'xia', via: 'node', ...report }));
  } catch (error) {
    await metrics?.finish('failed');
    // QEMU must see its pipe break at once, so it fails the migration and the VM runs on.
    if (stdin) stdin.destroy();
    else process.stdin.destroy();
    if (options.stats) {
      try {
        writeFileAtomic(options.stats, JSON.stringify({ role: 'send', transport: 'xia', via: 'node', bytes, error: errorMessage(error) }));
      } catch {
        // the exit status is what QEMU acts on
      }
    }
    throw error;
  }
}

/** `recv --via-node`: the local node receives (mover-service.ts); we only pass its stream to stdout. */
async function recvThroughNode(options: MoverFlags & { sid: string; from?: string[] }, logger: Logger): Promise<void> {
  if (options.transport !== 'xia') throw new XmigError('ERR_CONFIG', '--via-node moves chunks over XIA only');
  const started = performance.now();
  let bytes = 0;
  const metrics = await moverMetrics('recv', options, logger, () => ({ bytes, chunks: {} }));
  try {
    let from: string[] | undefined;
    if (options.from) {
      const api = await NodeClient.connect(options.api);
      try {
        from = (await Promise.all(options.from.map((f) => hostHid(f, api)))).map((hid) => hid.toString());
      } finally {
        await api.close();
      }
    }
    const request = { op: 'recv' as const, sid: options.sid, from, resumeDeadlineMs: options.resumeDeadlineMs };
    const onListening = (address: string): void => logger.info('recv.listening', { address, transport: 'xia', via: 'node' });
    const report =
      options.qemuSocket === undefined
        ? await recvViaNode(moverSocketOf(options.api), request, process.stdout, {
            onListening,
            // QEMU's exec: pipe: the node may write it itself, and nothing is copied through here.
            stdio: describePipe(1),
            onHandover: (taken, reason) => logger.info('recv.pipe', { phase: 'setup', via: 'node', handedOver: taken, reason }),
            onBytes: (n) => {
              if (bytes === 0) metrics?.metrics.setPhase('transfer');
              bytes = n;
            },
          })
        : await migrateInNode(moverSocketOf(options.api), { ...request, qemuSocket: resolvePath(options.qemuSocket) }, { onListening });
    if (typeof report['bytes'] === 'number') bytes = report['bytes'];
    await metrics?.finish('done');
    logger.info('recv.done', { phase: 'done', via: 'node', bytes, ms: Math.round(performance.now() - started) });
    if (options.stats) writeFileAtomic(options.stats, JSON.stringify({ role: 'recv', transport: 'xia', via: 'node', ...report, seconds: (performance.now() - started) / 1000 }));
  } catch (error) {
    await metrics?.finish('failed');
    throw error;
  }
}

