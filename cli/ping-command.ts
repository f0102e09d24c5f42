import { Command } from 'commander';
import { bytesOption, durationMsOption, integerOption } from './option-parsers.js';
import { z } from '../shared/config.js';
import { XmigError } from '../shared/errors.js';
import { MAX_PING_COUNT, MAX_PING_MS } from '../xianet/xping.js';
import { resolveTarget } from '../xianet/names/resolve-target.js';
import { NodeClient } from '../xianet/api/api-client.js';
import type { PingReply, PingSummary } from '../xianet/xping.js';
import { ExitCode } from './exit-codes.js';

import { DEFAULT_API_SOCKET } from './defaults.js';

export function formatReply(reply: PingReply): string {
  if (reply.error) return `seq=${reply.seq} ${reply.error}`;
  if (reply.rtt === undefined) return `seq=${reply.seq} lost`;
  return `seq=${reply.seq} time=${reply.rtt.toFixed(3)} ms`;
}

export function formatSummary(s: PingSummary): string {
  return [
    `--- ${s.destination} xping statistics ---`,
    `${s.sent} sent, ${s.received} received, ${s.errors} errors, ${s.lossPct}% loss`,
    s.rttMinMs === null ? 'no replies' : `rtt min/avg/max = ${s.rttMinMs}/${s.rttAvgMs}/${s.rttMaxMs} ms`,
    `longest gap: ${s.longestGapCount} echoes = ${s.longestGapMs} ms at interval ${s.intervalMs} ms (±${s.intervalMs} ms)`,
  ].join('\n');
}

/**
 * The options as numbers within xping's bounds (the node checks them again, and the
 * size against its links' MTU): a usage error here, before anything is sent.
 */
const pingOptionsSchema = z.object({
  interval: z.number().min(1, 'must be at least 1 ms').max(MAX_PING_MS),
  count: z.number().int('must be a whole number').min(1).max(MAX_PING_COUNT).optional(),
  timeout: z.number().min(1).max(MAX_PING_MS).optional(),
  size: z.number().int('must be a whole number').min(0).max(65_535, 'must be at most 65535 (and fit the link MTU)'),
});

export function checkPingOptions(options: Record<string, unknown>): z.output<typeof pingOptionsSchema> {
  const parsed = pingOptionsSchema.safeParse(options);
  if (parsed.success) return parsed.data;
  const issue = parsed.error.issues[0]!;
  const name = String(issue.path[0]);
  const flag = { interval: '--interval', count: '--count', timeout: '--timeout', size: '--size' }[name] ?? name;
  throw new XmigError('ERR_USAGE', `${flag} ${String(options[name])}: ${issue.message}`);
}

export function pingCommand(): Command {
  return new Command('ping')
    .description('xping: XCMP echo to a DAG at a fixed interval; reports RTT, loss and the longest gap')
    .argument('<target>', 'destination: a DAG ("RE ..." or "DAG ...") or a name')
    .option('-i, --interval <ms>', 'interval between echoes in ms (down to 1)', durationMsOption(1), 10)
    .option('-n, --count <n>', 'stop after n echoes (default: until interrupted)', integerOption(1, Number.MAX_SAFE_INTEGER))
    .option('-W, --timeout <ms>', 'a reply later than this is lost', durationMsOption(1))
    .option('-s, --size <bytes>', 'echo data size', bytesOption(0, 65_535), 16)
    .option('--api <socket>', 'the local node API socket', DEFAULT_API_SOCKET)
    .option('--json', 'print one JSON summary (with every reply) at the end')
    .option('-q, --quiet', 'only the summary')
    .action(async (text: string, options: { interval: number; count?: number; timeout?: number; size: number; api: string; json?: boolean; quiet?: boolean }) => {
      const checked = checkPingOptions(options);
      const client = await NodeClient.connect(options.api);
      const dst = await resolveTarget(text, client).catch(async (error: unknown) => {
        await client.close();
        throw error;
      });
      const controller = new AbortController();
      const stop = (): void => controller.abort();
      process.once('SIGINT', stop);
      try {
        const summary = await client.ping(dst, {
          count: checked.count,
          intervalMs: checked.interval,
          timeoutMs: checked.timeout,
          size: checked.size,
          signal: controller.signal,
          onResult: options.json || options.quiet ? undefined : (reply) => process.stdout.write(`${formatReply(reply)}\n`),
        });
        process.stdout.write(options.json ? `${JSON.stringify(summary)}\n` : `${formatSummary(summary)}\n`);
        if (summary.received === 0) process.exitCode = ExitCode.FAILURE;
      } finally {
        process.off('SIGINT', stop);
        await client.close();
      }
    });
}
