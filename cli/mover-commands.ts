import { writeFileSync } from 'node:fs';
import { Command, Option } from 'commander';
import { Dag } from '../shared/dag.js';
import { createLogger, type LogLevel } from '../shared/logger.js';
import { Xid, WellKnownSid } from '../shared/xid.js';
import { parseSocketAddress } from '../xianet/udp-link.js';
import { NodeClient } from '../xianet/api/api-client.js';
import { TcpPublisher, TcpRetriever, XiaPublisher, XiaRetriever } from '../mover/chunk-exchange.js';
import { connectTcp, connectXia, listenTcp, listenXia } from '../mover/connections.js';
import { MigrationReceiver } from '../mover/receiver.js';
import { MigrationSender } from '../mover/sender.js';
import { DEFAULT_API_SOCKET } from './defaults.js';
import { resolveTarget } from './names-command.js';

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
    .addOption(new Option('--log-level <level>', 'log level (logs go to stderr)').choices(['error', 'warn', 'info', 'debug']).default('warn'));
}

export function sendCommand(): Command {
  return common(new Command('send'))
    .description('QEMU exec: migration source: read the migration stream from stdin and move it as chunks')
    .requiredOption('--to <target>', 'the receiver: a DAG or name (xia), host:port (tcp)')
    .option('--chunk-kb <n>', 'chunk size in KiB', (v) => Number(v), 256)
    .option('--round-kb <n>', 'round size in KiB', (v) => Number(v), 4096)
    .action(async (options: MoverFlags & { to: string; chunkKb: number; roundKb: number }) => {
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
          resumeDeadlineMs: options.resumeDeadlineMs,
          logger,
        });
        const report = await sender.run();
        if (options.stats) writeFileSync(options.stats, JSON.stringify({ role: 'send', transport: options.transport, ...report }));
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
    .action(async (options: MoverFlags & { sid: string; listen: string }) => {
      const logger = createLogger({ component: 'mover', destination: 'stderr', level: options.logLevel });
      const api = options.transport === 'xia' ? await NodeClient.connect(options.api) : undefined;
      try {
        const listening = api
          ? await listenXia(api, Xid.parse(options.sid))
          : await listenTcp(parseSocketAddress(options.listen).host, parseSocketAddress(options.listen).port);
        logger.info('recv.listening', { address: listening.address, transport: options.transport });
        const receiver = new MigrationReceiver({
          output: process.stdout,
          accept: () => listening.accept(),
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
