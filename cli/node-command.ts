import { Command, Option } from 'commander';
import { loadConfig } from '../shared/config.js';
import { nodeConfigSchema } from '../xianet/node-config.js';
import { NodeDaemon } from '../xianet/node-daemon.js';
import { waitForShutdown } from './shutdown.js';

export function nodeCommand(): Command {
  return new Command('node')
    .description('run the XIA stack of this machine (router, host or VM) as a daemon')
    .requiredOption('-c, --config <file>', 'node config (JSON)')
    .addOption(new Option('--log-level <level>', 'override the log level').choices(['error', 'warn', 'info', 'debug']))
    .option('--metrics-port <port>', 'serve /metrics on this port', (v) => Number(v))
    .action(async (options: { config: string; logLevel?: string; metricsPort?: number }) => {
      const config = loadConfig(nodeConfigSchema, {
        file: options.config,
        overrides: {
          logLevel: options.logLevel,
          metrics: options.metricsPort === undefined ? undefined : { port: options.metricsPort },
        },
      });
      const daemon = new NodeDaemon(config);
      await daemon.start();
      await waitForShutdown(daemon.logger);
      await daemon.stop();
    });
}
