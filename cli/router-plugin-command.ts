import { Command, Option } from 'commander';
import { Identity } from '../shared/identity.js';
import { createLogger } from '../shared/logger.js';
import { createRegistry, startMetricsServer } from '../shared/metrics.js';
import { ControlPortRoutes } from '../shared/route-backend.js';
import { systemdNotifier } from '../shared/systemd-notify.js';
import { MobilityPlugin } from '../router-plugin/mobility-plugin.js';
import { NodeClient } from '../xianet/api/api-client.js';
import { DEFAULT_API_SOCKET } from './defaults.js';
import { waitForShutdown } from './shutdown.js';

export function routerPluginCommand(): Command {
  return new Command('router-plugin')
    .description('the router mobility plugin: verifies HID-move notices and rewrites routes along the migration path')
    .option('--api <socket>', "the router node's API socket", DEFAULT_API_SOCKET)
    .requiredOption('--control <target>', "the router's control port: host:port or a socket path (xmig node or xia-core)")
    .requiredOption('--router <name>', "the router's name on the control port")
    .requiredOption('--key <file>', "the router's key (acknowledgements are signed with it)")
    .option('--freshness-ms <ms>', 'accept notices signed at most this long ago', (v) => Number(v), 30_000)
    .option('--metrics-port <port>', 'serve /metrics on this port', (v) => Number(v))
    .addOption(new Option('--log-level <level>', 'log level').choices(['error', 'warn', 'info', 'debug']).default('info'))
    .action(async (options: { api: string; control: string; router: string; key: string; freshnessMs: number; metricsPort?: number; logLevel: 'info' }) => {
      const logger = createLogger({ component: 'router-plugin', level: options.logLevel });
      const registry = createRegistry({ processMetrics: true });
      const systemd = systemdNotifier({ onError: (error) => logger.warn('systemd.notify-failed', { reason: error.message }) });
      const api = await NodeClient.connect(options.api);
      const plugin = new MobilityPlugin({
        api,
        routes: new ControlPortRoutes(options.control, options.router),
        identity: Identity.load(options.key),
        verifier: { freshnessMs: options.freshnessMs },
        logger,
        registry,
      });
      await plugin.start();
      const metrics = options.metricsPort === undefined ? undefined : await startMetricsServer(registry, { port: options.metricsPort });
      systemd.ready('verifying notices');
      await waitForShutdown(logger);
      systemd.stop();
      await metrics?.close();
      await plugin.stop();
      await api.close();
    });
}
