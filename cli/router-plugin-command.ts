import { Command, Option } from 'commander';
import { durationMsOption, integerOption } from './option-parsers.js';
import { Identity } from '../shared/identity.js';
import { createLogger } from '../shared/logger.js';
import { createRegistry, startMetricsServer } from '../shared/metrics.js';
import { ControlPortRoutes } from '../shared/route-backend.js';
import { systemdNotifier } from '../shared/systemd-notify.js';
import { MobilityPlugin } from '../router-plugin/mobility-plugin.js';
import { NodeClient } from '../xianet/api/api-client.js';
import { DEFAULT_API_SOCKET, DEFAULT_CONTROL_TARGET } from './defaults.js';
import { waitForShutdown } from './shutdown.js';

export function routerPluginCommand(): Command {
  return new Command('router-plugin')
    .description('the router mobility plugin: verifies HID-move notices and rewrites routes along the migration path')
    .option('--api <socket>', "the router node's API socket", DEFAULT_API_SOCKET)
    .option('--control <target>', "the router's control port: a socket path or host:port (xmig node or xia-core Click)", DEFAULT_CONTROL_TARGET)
    .option('--control-token <file>', "xmig node on TCP: the file whose token unlocks route writes")
    .requiredOption('--router <name>', "the router's name on the control port (its Click element prefix)")
    .option('--router-hid <HID>', "the router's HID, if its rt_HID has more than one local (-2) entry")
    .option('--router-ad <AD>', "the router's AD, if its rt_AD has more than one local (-2) entry")
    .requiredOption('--key <file>', "the router's key (acknowledgements are signed with it)")
    .option('--freshness-ms <ms>', 'accept notices signed at most this long ago', durationMsOption(1), 30_000)
    .option('--metrics-port <port>', 'serve /metrics on this port', integerOption(0, 65535))
    .addOption(new Option('--log-level <level>', 'log level').choices(['error', 'warn', 'info', 'debug']).default('info'))
    .action(async (options: {
      api: string;
      control: string;
      controlToken?: string;
      router: string;
      routerHid?: string;
      routerAd?: string;
      key: string;
      freshnessMs: number;
      metricsPort?: number;
      logLevel: 'info';
    }) => {
      const logger = createLogger({ component: 'router-plugin', level: options.logLevel });
      const registry = createRegistry({ processMetrics: true });
      const systemd = systemdNotifier({ onError: (error) => logger.warn('systemd.notify-failed', { reason: error.message }) });
      const api = await NodeClient.connect(options.api);
      const plugin = new MobilityPlugin({
        api,
        routes: new ControlPortRoutes(options.control, options.router, { tokenFile: options.controlToken, hid: options.routerHid, ad: options.routerAd }),
        identity: Identity.load(options.key),
        verifier: { freshnessMs: options.freshnessMs },
        logger,
        registry,
      });
      await plugin.start();
      const metrics = options.metricsPort === undefined ? undefined : await startMetricsServer(registry, { port: options.metricsPort, logger });
      systemd.ready('verifying notices');
      await waitForShutdown(logger);
      systemd.stop();
      await metrics?.close();
      await plugin.stop();
      await api.close();
    });
}
