import { Command, Option } from 'commander';
import { integerOption } from './option-parsers.js';
import { Agent } from '../agent/agent.js';
import { agentConfigSchema } from '../agent/agent-config.js';
import { loadConfig } from '../shared/config.js';
import { Dag } from '../shared/dag.js';
import { Identity } from '../shared/identity.js';
import { createLogger } from '../shared/logger.js';
import { createRegistry, startMetricsServer } from '../shared/metrics.js';
import { ControlPortRoutes } from '../shared/route-backend.js';
import { systemdNotifier } from '../shared/systemd-notify.js';
import { Xid } from '../shared/xid.js';
import { NodeClient } from '../xianet/api/api-client.js';
import { waitForShutdown } from './shutdown.js';

export function agentCommand(): Command {
  return new Command('agent')
    .description('the in-VM self-adaptive agent: perceives moves, re-registers names, notifies the new gateway, cleans stale routes')
    .requiredOption('-c, --config <file>', 'agent config (JSON)')
    .addOption(new Option('--log-level <level>', 'override the log level').choices(['error', 'warn', 'info', 'debug']))
    .option('--metrics-port <port>', 'serve /metrics on this port (0: any free one, logged)', integerOption(0, 65535))
    .action(async (options: { config: string; logLevel?: string; metricsPort?: number }) => {
      const config = loadConfig(agentConfigSchema, {
        file: options.config,
        overrides: { logLevel: options.logLevel, metrics: options.metricsPort === undefined ? undefined : { port: options.metricsPort } },
      });
      const logger = createLogger({ component: 'agent', level: config.logLevel });
      const registry = createRegistry({ processMetrics: true });
      const systemd = systemdNotifier({ onError: (error) => logger.warn('systemd.notify-failed', { reason: error.message }) });
      const api = await NodeClient.connect(config.api);
      const agent = new Agent({
        api,
        routes: new ControlPortRoutes(config.control, config.router, { tokenFile: config.controlTokenFile }),
        identity: Identity.load(config.keyFile),
        names: config.names.map((n) => ({ name: n.name, sid: n.sid ? Xid.parse(n.sid) : undefined })),
        stateFile: config.stateFile,
        nameServer: config.nameServer ? Dag.parse(config.nameServer) : undefined,
        vm: config.router,
        logger,
        registry,
        resume: config.resume,
        schedules: config.schedules,
      });
      await agent.start();
      const metrics = config.metrics ? await startMetricsServer(registry, { ...config.metrics, logger }) : undefined;
      systemd.ready('watching for moves');
      await waitForShutdown(logger);
      systemd.stop();
      await metrics?.close();
      await agent.stop();
      await api.close();
    });
}
