import { Command } from 'commander';
import { integerOption } from './option-parsers.js';
import { Identity } from '../shared/identity.js';
import { createLogger } from '../shared/logger.js';
import { NodeClient } from '../xianet/api/api-client.js';
import { askGoldbach, type AskReport } from '../xianet/goldbach/goldbach-protocol.js';
import { askGoldbachTcp, GoldbachTcpServer } from '../xianet/goldbach/goldbach-tcp.js';
import { parseSocketAddress } from '../xianet/udp-link.js';
import { XmigError } from '../shared/errors.js';
import { serveGoldbach } from '../xianet/goldbach/goldbach-service.js';
import { NameClient } from '../xianet/names/name-client.js';
import { DEFAULT_API_SOCKET } from './defaults.js';
import { registerUntilAnswered } from './register-name.js';
import { ExitCode } from './exit-codes.js';
import { resolveTarget } from '../xianet/names/resolve-target.js';
import { waitForShutdown } from './shutdown.js';

export function calCommand(): Command {
  const cal = new Command('cal').description("the paper's Goldbach calculation service, over STREAM (and plain TCP for the TCP/IP baseline)");
  cal
    .command('serve')
    .description('answer Goldbach questions on a SID (and register a name for it)')
    .option('--api <socket>', 'the local node API socket', DEFAULT_API_SOCKET)
    .option('--key <file>', 'the service key; its SID is the service address (created if missing)', '/var/lib/xmig/goldbach.key')
    .option('--name <name>', 'register this name for the service in the name service')
    .option('--owner-key <file>', "key that owns the name (the machine's key)")
    .option('--tcp <host:port>', 'also answer plain TCP/IP here (e.g. [::]:4000), for the TCP/IP baseline')
    .action(async (options: { api: string; key: string; name?: string; ownerKey?: string; tcp?: string }) => {
      const logger = createLogger({ component: 'goldbach' });
      const tcp = options.tcp ? new GoldbachTcpServer({ ...parseSocketAddress(options.tcp), logger }) : undefined;
      await tcp?.start();
      const api = await NodeClient.connect(options.api);
      const server = await serveGoldbach(api, { identity: Identity.loadOrCreate(options.key), logger });
      const address = await server.address();
      logger.info('goldbach.listening', { dag: address.toString() });
      const stopping = new AbortController();
      const shutdown = waitForShutdown(logger).then(() => stopping.abort());
      if (options.name) {
        const owner = Identity.loadOrCreate(options.ownerKey ?? options.key);
        const names = new NameClient(api);
        try {
          if (await registerUntilAnswered(names, api, { name: options.name, address, owner, logger, event: 'goldbach.register-retry', signal: stopping.signal })) {
            logger.info('goldbach.registered', { name: options.name });
          }
        } finally {
          await names.close();
        }
      }
      await shutdown;
      await server.close();
      await tcp?.stop();
      await api.close();
    });
  cal
    .command('ask')
    .description('ask continuously; exits non-zero if the connection ever breaks')
    .argument('[target]', 'a name or a DAG (not with --tcp)')
    .option('--tcp <host:port>', 'ask over plain TCP/IP instead (the TCP/IP baseline)')
    .option('--api <socket>', 'the local node API socket', DEFAULT_API_SOCKET)
    .option('-n, --count <n>', 'stop after n answers', integerOption(1, Number.MAX_SAFE_INTEGER))
    .option('--start <n>', 'first even number to ask', integerOption(4, Number.MAX_SAFE_INTEGER), 4)
    .option('--pin', "keep talking to the DAG first resolved even if the service's address changes")
    .option('-q, --quiet', 'no answers, only the report')
    .option('--json', 'print the report as JSON')
    .action(async (target: string | undefined, options: { api: string; count?: number; start: number; pin?: boolean; quiet?: boolean; json?: boolean; tcp?: string }) => {
      if ((target === undefined) === (options.tcp === undefined)) throw new XmigError('ERR_CONFIG', 'give either a target (name or DAG) or --tcp host:port');
      const api = options.tcp ? undefined : await NodeClient.connect(options.api);
      try {
        const stop = new AbortController();
        const onSignal = (): void => stop.abort();
        process.once('SIGINT', onSignal);
        process.once('SIGTERM', onSignal);
        const ask = {
          count: options.count,
          start: options.start,
          signal: stop.signal,
          onAnswer: options.quiet || options.json ? undefined : ({ n, p, q }: { n: number; p: number; q: number }) => process.stdout.write(`${n} = ${p} + ${q}\n`),
        };
        let report: AskReport;
        if (options.tcp) {
          const { host, port } = parseSocketAddress(options.tcp);
          report = await askGoldbachTcp(host, port, ask);
        } else {
          const connection = await api!.connect(await resolveTarget(target!, api!), { pinPeerAddress: options.pin ?? false });
          report = await askGoldbach(connection, ask);
        }
        process.off('SIGINT', onSignal);
        process.off('SIGTERM', onSignal);
        process.stdout.write(
          options.json
            ? `${JSON.stringify(report)}\n`
            : `${report.answers} answers, ${report.wrong} wrong, longest gap ${report.maxGapMs} ms, ended: ${report.ended}${report.error ? ` (${report.error})` : ''}\n`,
        );
        if (report.ended === 'broken' || report.wrong > 0) process.exitCode = ExitCode.FAILURE;
      } finally {
        await api?.close();
      }
    });
  return cal;
}
