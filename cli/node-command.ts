import { Command, Option } from 'commander';
import { integerOption } from './option-parsers.js';
import { loadConfig } from '../shared/config.js';
import { nodeConfigSchema } from '../xianet/node-config.js';
import { NodeDaemon } from '../xianet/node-daemon.js';
import { waitForShutdown } from './shutdown.js';
import { MobilityPlugin } from '../router-plugin/mobility-plugin.js';
import { systemdNotifier } from '../shared/systemd-notify.js';
import { LocalRoutes } from '../xianet/local-routes.js';
import { moverSocketOf } from '../mover/mover-client.js';

export function nodeCommand(): Command {
  return new Command('node')
    .description('run the XIA stack of this machine (router, host or VM) as a daemon')
    .requiredOption('-c, --config <file>', 'node config (JSON)')
    .addOption(new Option('--log-level <level>', 'override the log level').choices(['error', 'warn', 'info', 'debug']))
    .option('--metrics-port <port>', 'serve /metrics on this port', integerOption(0, 65535))
    .addOption(new Option('--plugin <name...>', 'run a plugin in this process (routers: mobility)').choices(['mobility']))
    .action(async (options: { config: string; logLevel?: string; metricsPort?: number; plugin?: string[] }) => {
      const config = loadConfig(nodeConfigSchema, {
        file: options.config,
        overrides: {
          logLevel: options.logLevel,
          metrics: options.metricsPort === undefined ? undefined : { port: options.metricsPort },
          plugins: options.plugin,
        },
      });
      const daemon = new NodeDaemon(config);
      await daemon.start();
      // The mobility plugin inside the router's own process, on its tables directly.
      const plugin = config.plugins.includes('mobility')
        ? new MobilityPlugin({
            api: daemon.api,
            routes: new LocalRoutes(daemon.node),
            identity: daemon.node.identity,
            logger: daemon.logger,
            registry: daemon.registry,
          })
        : undefined;
      await plugin?.start();
      // Hosts run the mover for `xmig send|recv --via-node` beside their API socket (loaded
      // only there, and after node.ready: routers and start-up need none of it).
      const mover =
        config.role === 'host' && config.apiSocket
          ? new (await import('../mover/mover-service.js')).MoverService({ api: daemon.api, path: moverSocketOf(config.apiSocket), logger: daemon.logger, registry: daemon.registry })
          : undefined;
      await mover?.start();
      const systemd = systemdNotifier({ onError: (error) => daemon.logger.warn('systemd.notify-failed', { reason: error.message }) });
      systemd.ready(`${config.role} ${config.name} up`);
      await waitForShutdown(daemon.logger);
      systemd.stop();
      await mover?.stop();
      await plugin?.stop();
      await daemon.stop();
    });
}
