/**
 * `xmig send` and `xmig recv`: their options, and which path runs them. The paths load
 * only when they run: mover-via-node.ts (the node runs the migration; what `xmig
 * migrate` uses) and mover-direct.ts (this process does). QEMU starts these commands at
 * every migration and waits for them, so what every run loads stays small.
 */
import { Command, Option } from 'commander';
import { DEFAULT_CHUNK_BYTES } from '../mover/chunk-pool.js';
import { createLogger } from '../shared/logger.js';
import { WellKnownSid } from '../shared/xid.js';
import { DEFAULT_API_SOCKET } from './defaults.js';
import type { RecvFlags, SendFlags } from './mover-flags.js';
import { durationMsOption, integerOption } from './option-parsers.js';

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
    .action(async (options: SendFlags) => {
      const logger = createLogger({ component: 'mover', destination: 'stderr', level: options.logLevel });
      if (options.viaNode || options.qemuSocket !== undefined) await (await import('./mover-via-node.js')).sendThroughNode(options, logger);
      else await (await import('./mover-direct.js')).sendDirect(options, logger);
    });
}

export function recvCommand(): Command {
  return common(new Command('recv'))
    .description('QEMU exec: migration destination: receive the chunks and write the migration stream to stdout')
    .option('--sid <sid>', 'the SID to listen on (xia)', WellKnownSid.MIGRATION.toString())
    .option('--listen <host:port>', 'where to listen (tcp)', '0.0.0.0:4444')
    .option('--from <sender...>', 'accept the migration only from these senders: a DAG, name or HID (xia), an IP address (tcp)')
    .action(async (options: RecvFlags) => {
      const logger = createLogger({ component: 'mover', destination: 'stderr', level: options.logLevel });
      if (options.viaNode || options.qemuSocket !== undefined) await (await import('./mover-via-node.js')).recvThroughNode(options, logger);
      else await (await import('./mover-direct.js')).recvDirect(options, logger);
    });
}
