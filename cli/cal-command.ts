import { Command } from 'commander';
import { Identity } from '../shared/identity.js';
import { createLogger } from '../shared/logger.js';
import { NodeClient } from '../xianet/api/api-client.js';
import { askGoldbach } from '../xianet/goldbach/goldbach-protocol.js';
import { serveGoldbach } from '../xianet/goldbach/goldbach-service.js';
import { NameClient } from '../xianet/names/name-client.js';
import { DEFAULT_API_SOCKET } from './defaults.js';
import { ExitCode } from './exit-codes.js';
import { resolveTarget } from './resolve-target.js';
import { waitForShutdown } from './shutdown.js';

export function calCommand(): Command {
  const cal = new Command('cal').description("the paper's Goldbach calculation service, over STREAM");
  cal
    .command('serve')
    .description('answer Goldbach questions on a SID (and register a name for it)')
    .option('--api <socket>', 'the local node API socket', DEFAULT_API_SOCKET)
    .option('--key <file>', 'the service key; its SID is the service address (created if missing)', '/var/lib/xmig/goldbach.key')
    .option('--name <name>', 'register this name for the service in the name service')
    .option('--owner-key <file>', "key that owns the name (the machine's key)")
    .action(async (options: { api: string; key: string; name?: string; ownerKey?: string }) => {
      const logger = createLogger({ component: 'goldbach' });
      const api = await NodeClient.connect(options.api);
      const server = await serveGoldbach(api, { identity: Identity.loadOrCreate(options.key), logger });
      const address = await server.address();
      logger.info('goldbach.listening', { dag: address.toString() });
      if (options.name) {
        const owner = Identity.loadOrCreate(options.ownerKey ?? options.key);
        const names = new NameClient(api);
        await names.register(options.name, address, owner);
        await names.close();
        logger.info('goldbach.registered', { name: options.name });
      }
      await waitForShutdown(logger);
      await server.close();
      await api.close();
    });
  cal
    .command('ask')
    .description('ask continuously; exits non-zero if the connection ever breaks')
    .argument('<target>', 'a name or a DAG')
    .option('--api <socket>', 'the local node API socket', DEFAULT_API_SOCKET)
    .option('-n, --count <n>', 'stop after n answers', (v) => Number(v))
    .option('--start <n>', 'first even number to ask', (v) => Number(v), 4)
    .option('--pin', "keep talking to the DAG first resolved even if the service's address changes")
    .option('-q, --quiet', 'no answers, only the report')
    .option('--json', 'print the report as JSON')
    .action(async (target: string, options: { api: string; count?: number; start: number; pin?: boolean; quiet?: boolean; json?: boolean }) => {
      const api = await NodeClient.connect(options.api);
      try {
        const dst = await resolveTarget(target, api);
        const connection = await api.connect(dst, { pinPeerAddress: options.pin ?? false });
        const stop = new AbortController();
        const onSignal = (): void => stop.abort();
        process.once('SIGINT', onSignal);
        process.once('SIGTERM', onSignal);
        const report = await askGoldbach(connection, {
          count: options.count,
          start: options.start,
          signal: stop.signal,
          onAnswer: options.quiet || options.json ? undefined : ({ n, p, q }) => process.stdout.write(`${n} = ${p} + ${q}\n`),
        });
        process.off('SIGINT', onSignal);
        process.off('SIGTERM', onSignal);
        process.stdout.write(
          options.json
            ? `${JSON.stringify(report)}\n`
            : `${report.answers} answers, ${report.wrong} wrong, longest gap ${report.maxGapMs} ms, ended: ${report.ended}${report.error ? ` (${report.error})` : ''}\n`,
        );
        if (report.ended === 'broken' || report.wrong > 0) process.exitCode = ExitCode.FAILURE;
      } finally {
        await api.close();
      }
    });
  return cal;
}
