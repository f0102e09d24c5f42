/**
 * `xmig tunnel`: TCP carried over XIA, for TCP programs that know nothing of XIA (iperf3,
 * ssh, a database client) talking to a service in a VM that moves. `serve` sits in front
 * of the service (mover/tunnel-exit.ts): STREAMs on its SID, each joined to a TCP
 * connection to the service. `connect` sits beside the clients (mover/local-tunnel.ts on
 * TCP): each TCP connection it takes goes as one STREAM to the service's tunnel. Between
 * the two every connection is an XIA STREAM, so it rides out the VM's moves: the client's
 * own TCP connection is local and never sees the network change.
 */
import { Command, Option } from 'commander';
import { durationMsOption, integerOption } from './option-parsers.js';
import type { Dag } from '../shared/dag.js';
import { errorMessage, XmigError } from '../shared/errors.js';
import { Identity } from '../shared/identity.js';
import { createLogger, type Logger, type LogLevel } from '../shared/logger.js';
import { createRegistry, startMetricsServer } from '../shared/metrics.js';
import { systemdNotifier } from '../shared/systemd-notify.js';
import { Xid, XidType } from '../shared/xid.js';
import { NodeClient } from '../xianet/api/api-client.js';
import { parseSocketAddress } from '../xianet/udp-link.js';
import { NameClient } from '../xianet/names/name-client.js';
import { admitXiaFrom } from '../mover/connections.js';
import { LocalTunnel } from '../mover/local-tunnel.js';
import { TunnelExit } from '../mover/tunnel-exit.js';
import { registerTunnelMetrics } from '../mover/tunnel-metrics.js';
import { DEFAULT_API_SOCKET } from './defaults.js';
import { hostHid } from './host-hid.js';
import { registerUntilAnswered } from './register-name.js';
import { isDagText, resolveTarget } from '../xianet/names/resolve-target.js';
import { waitForShutdown } from './shutdown.js';

interface Common {
  api: string;
  maxConnections: number;
  metricsPort?: number;
  logLevel: LogLevel;
}

function common(command: Command): Command {
  return command
    .option('--api <socket>', 'the local node API socket', DEFAULT_API_SOCKET)
    .option('--max-connections <n>', 'connections at once; more are refused (counted)', integerOption(1, 65536), 64)
    .option('--metrics-port <port>', 'serve /metrics on this port (0: any free one, logged)', integerOption(0, 65535))
    .addOption(new Option('--log-level <level>', 'log level (JSON lines on stdout)').choices(['error', 'warn', 'info', 'debug']).env('XMIG_LOG_LEVEL').default('info'));
}

/** Runs a started tunnel until SIGINT/SIGTERM, with /metrics and systemd's READY meanwhile. */
async function runUntilStopped(registry: ReturnType<typeof createRegistry>, options: Common, logger: Logger, status: string): Promise<void> {
  const systemd = systemdNotifier({ onError: (error) => logger.warn('systemd.notify-failed', { reason: error.message }) });
  const metrics = options.metricsPort === undefined ? undefined : await startMetricsServer(registry, { port: options.metricsPort, logger });
  systemd.ready(status);
  await waitForShutdown(logger);
  systemd.stop();
  await metrics?.close();
}

function serveCommand(): Command {
  return common(new Command('serve'))
    .description("in front of a TCP service (in the VM): take STREAMs on the tunnel's SID, each joined to a TCP connection to the service")
    .requiredOption('--to <host:port>', 'the TCP service (e.g. 127.0.0.1:5201)', parseSocketAddress)
    .option('--key <file>', "the tunnel's key: its SID is the tunnel's address (created if missing)")
    .option('--sid <sid>', 'listen on this SID instead (no key: the name service cannot register it)')
    .option('--name <name>', 'register this name for the tunnel in the name service')
    .option('--owner-key <file>', "the key that owns the name (default the tunnel's)")
    .option('--from <host...>', 'take STREAMs only from these hosts (their name, DAG or HID); default anyone')
    .option('--connect-timeout <duration>', 'the service must take a connection in this long', durationMsOption(1), 10_000)
    .addHelpText(
      'after',
      `
Anyone who can reach the SID reaches the service, as anyone who can reach a TCP port does:
restrict it with --from, or keep the DAG to yourself. In the lab VM's init, in front of iperf3:
  xmig tunnel serve --key /var/lib/xmig/tunnel.key --to 127.0.0.1:5201
and the agent re-registers the tunnel's name after every move (its names list).`,
    )
    .action(async (options: Common & { to: { host: string; port: number }; key?: string; sid?: string; name?: string; ownerKey?: string; from?: string[]; connectTimeout: number }) => {
      if ((options.key === undefined) === (options.sid === undefined)) throw new XmigError('ERR_USAGE', 'give the tunnel --key FILE or --sid SID (one of them)');
      if (options.name && !options.key) throw new XmigError('ERR_USAGE', '--name needs --key: a name is registered with the key its SID comes from');
      const logger = createLogger({ component: 'mover', level: options.logLevel });
      const identity = options.key ? Identity.loadOrCreate(options.key) : undefined;
      const sid = identity ? identity.xid(XidType.SID) : Xid.parse(options.sid!);
      if (sid.type !== XidType.SID) throw new XmigError('ERR_USAGE', `--sid: ${sid.toString()} is not a SID`);
      const registry = createRegistry({ processMetrics: true });
      const api = await NodeClient.connect(options.api);
      const stopping = new AbortController();
      let exit: TunnelExit | undefined;
      try {
        const admit = options.from ? admitXiaFrom(await Promise.all(options.from.map((f) => hostHid(f, api)))) : undefined;
        exit = new TunnelExit({ api, sid, to: options.to, admit, maxConnections: options.maxConnections, connectTimeoutMs: options.connectTimeout, registry, logger });
        await exit.start();
        const address = await exit.address();
        logger.info('tunnel.listening', { dag: address.toString(), to: `${options.to.host}:${options.to.port}` });
        const registering = options.name ? registerName(api, { name: options.name, address, owner: Identity.loadOrCreate(options.ownerKey ?? options.key!), logger, signal: stopping.signal }) : undefined;
        await runUntilStopped(registry, options, logger, `tunnel ${address.toString()} -> ${options.to.host}:${options.to.port}`);
        stopping.abort();
        await registering;
      } finally {
        stopping.abort();
        await exit?.stop();
        await api.close();
      }
      if (exit) logger.info('tunnel.stopped', { ...exit.counts, refused: exit.refusals.snapshot() });
    });
}

/** In the background: a name server that answers late does not hold the tunnel up. */
async function registerName(api: NodeClient, request: { name: string; address: Dag; owner: Identity; logger: Logger; signal: AbortSignal }): Promise<void> {
  const names = new NameClient(api);
  try {
    if (await registerUntilAnswered(names, api, { ...request, event: 'tunnel.register-retry' })) request.logger.info('tunnel.registered', { name: request.name });
  } catch (error) {
    request.logger.error('tunnel.register-failed', { name: request.name, error: errorMessage(error) });
  } finally {
    await names.close();
  }
}

function connectCommand(): Command {
  return common(new Command('connect'))
    .description("beside the clients: a local TCP port whose every connection goes as one STREAM to a service's tunnel")
    .requiredOption('--to <target>', "the tunnel: its name, or its DAG (ending at the tunnel's SID)")
    .option('--listen <host:port>', 'where the clients connect (port 0: any free one, logged)', parseSocketAddress, { host: '127.0.0.1', port: 0 })
    .option('--outage-timeout <duration>', 'a connection gives up after this long without hearing from the far end', durationMsOption(1000), 60_000)
    .option('--connect-timeout <duration>', 'the far end must answer a new STREAM in this long', durationMsOption(100), 10_000)
    .option('--pin', "keep sending to the DAG a connection began with even if the service's address changes")
    .addHelpText(
      'after',
      `
A name is resolved again for every new connection (a VM that moved to another AD is reached
at its new address); connections already open follow the service on their own.
  xmig tunnel connect --to iperf.vm1 --listen 127.0.0.1:5202 &
  iperf3 -c 127.0.0.1 -p 5202 -t 60`,
    )
    .action(async (options: Common & { to: string; listen: { host: string; port: number }; outageTimeout: number; connectTimeout: number; pin?: boolean }) => {
      const logger = createLogger({ component: 'mover', level: options.logLevel });
      const registry = createRegistry({ processMetrics: true });
      const api = await NodeClient.connect(options.api);
      let tunnel: LocalTunnel | undefined;
      try {
        const byName = !isDagText(options.to);
        let dag = await tunnelDag(options.to, api);
        const connectOptions = { connectTimeoutMs: options.connectTimeout, outageTimeoutMs: options.outageTimeout, pinPeerAddress: options.pin ?? false };
        tunnel = new LocalTunnel({
          tcp: options.listen,
          connect: async () => {
            if (byName) {
              try {
                dag = await tunnelDag(options.to, api);
              } catch (error) {
                logger.warn('tunnel.resolve-failed', { name: options.to, reason: errorMessage(error), dag: dag.toString() });
              }
            }
            return api.connect(dag, connectOptions);
          },
          maxConnections: options.maxConnections,
          name: 'tunnel',
          peer: options.to,
          logger,
        });
        const t = tunnel;
        registerTunnelMetrics(registry, 'entry', () => {
          const c = t.counts;
          return { connections: c.connections, toService: c.toRemote, fromService: c.fromRemote, failed: c.lost, open: t.open };
        });
        await tunnel.start();
        logger.info('tunnel.listening', { address: tunnel.address, to: dag.toString() });
        await runUntilStopped(registry, options, logger, `tunnel ${tunnel.address} -> ${options.to}`);
      } finally {
        await tunnel?.stop();
        await api.close();
      }
      logger.info('tunnel.stopped', { ...tunnel?.counts });
    });
}

/** The tunnel's DAG: a name or DAG that must end at a SID (a host's DAG says which host, not which service). */
async function tunnelDag(target: string, api: NodeClient): Promise<Dag> {
  const dag = await resolveTarget(target, api);
  if (dag.sink.type !== XidType.SID) throw new XmigError('ERR_USAGE', `--to: ${target} ends at ${dag.sink.toString()}, not at a tunnel's SID`);
  return dag;
}

export function tunnelCommand(): Command {
  return new Command('tunnel')
    .description('TCP carried over XIA STREAMs: connect (beside the clients) to serve (in front of the service, in the VM)')
    .addCommand(serveCommand())
    .addCommand(connectCommand());
}
