import { Command, Option } from 'commander';
import { integerOption } from './option-parsers.js';
import { Dag } from '../shared/dag.js';
import { createLogger, type LogLevel } from '../shared/logger.js';
import { createRegistry, startMetricsServer } from '../shared/metrics.js';
import { NodeClient } from '../xianet/api/api-client.js';
import { NameClient } from '../xianet/names/name-client.js';
import { NameServer } from '../xianet/names/name-server.js';
import { systemdNotifier } from '../shared/systemd-notify.js';
import { DEFAULT_API_SOCKET } from './defaults.js';
import { waitForShutdown } from './shutdown.js';

const positiveInteger = integerOption(1, Number.MAX_SAFE_INTEGER);

export function nameserverCommand(): Command {
  return new Command('nameserver')
    .description('run the name service (xia-core SID_NS) on this machine\'s node')
    .option('--api <socket>', 'the local node API socket', DEFAULT_API_SOCKET)
    .option('--db <file>', 'where records are persisted (an append-only log; a names.json of the earlier format is converted)', '/var/lib/xmig/names.log')
    .option('--max-names <n>', 'most names held in all', positiveInteger, 100_000)
    .option('--max-names-per-owner <n>', 'most names one key may own', positiveInteger, 64)
    .option('--metrics-port <port>', 'serve /metrics on this port (0: any free one, logged)', integerOption(0, 65535))
    .addOption(new Option('--log-level <level>', 'log level').choices(['error', 'warn', 'info', 'debug']))
    .action(async (options: { api: string; db: string; maxNames: number; maxNamesPerOwner: number; metricsPort?: number; logLevel?: LogLevel }) => {
      const logger = createLogger({ component: 'nameserver', level: options.logLevel });
      const registry = createRegistry({ processMetrics: true });
      const api = await NodeClient.connect(options.api);
      const server = new NameServer(api, {
        databaseFile: options.db,
        limits: { maxNames: options.maxNames, maxNamesPerOwner: options.maxNamesPerOwner },
        logger,
        registry,
      });
      await server.start();
      const metrics = options.metricsPort === undefined ? undefined : await startMetricsServer(registry, { port: options.metricsPort, logger });
      const systemd = systemdNotifier({ onError: (error) => logger.warn('systemd.notify-failed', { reason: error.message }) });
      systemd.ready('serving names');
      await waitForShutdown(logger);
      systemd.stop();
      await metrics?.close();
      await server.stop();
      await api.close();
    });
}

export function resolveCommand(): Command {
  return new Command('resolve')
    .description('look a name up in the name service (or, with --reverse, the name of a DAG)')
    .argument('<name-or-dag>', 'a name, or a DAG with --reverse')
    .option('--reverse', 'find the name registered for a DAG')
    .option('--api <socket>', 'the local node API socket', DEFAULT_API_SOCKET)
    .option('--name-server <dag>', 'the name server (default: the one announced in beacons)')
    .option('-f, --format <format>', 'DAG output form: re or dag', 're')
    .action(async (target: string, options: { reverse?: boolean; api: string; nameServer?: string; format: string }) => {
      const api = await NodeClient.connect(options.api);
      const client = new NameClient(api, { nameServer: options.nameServer ? Dag.parse(options.nameServer) : undefined });
      try {
        if (options.reverse) {
          process.stdout.write(`${await client.reverse(Dag.parse(target))}\n`);
        } else {
          const { dag } = await client.resolve(target);
          process.stdout.write(`${options.format === 'dag' ? dag.toDagString() : dag.toString()}\n`);
        }
      } finally {
        await client.close();
        await api.close();
      }
    });
}
