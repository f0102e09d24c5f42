import { Command, Option } from 'commander';
import { runTestbed, type TestbedReport } from '../xianet/testbed.js';
import type { TopologyName } from '../xianet/topology.js';
import { ExitCode } from './exit-codes.js';

export function formatTestbedReport(report: TestbedReport): string {
  const g = report.goldbach;
  const x = report.xping;
  return [
    `testbed ${report.topology} (${(report.durationMs / 1000).toFixed(1)} s)`,
    `  Goldbach (client on C, service on the VM): ${g.answers} answers, ${g.wrong} wrong, longest gap ${g.maxGapMs} ms, ${g.brokenConnections} broken connections${g.error ? ` (${g.error})` : ''}`,
    `  xping C -> VM every ${x.intervalMs} ms: ${x.sent} sent, ${x.received} received, ${x.lossPct}% loss, rtt avg ${x.rttAvgMs ?? '-'} ms, longest gap ${x.longestGapMs} ms`,
  ].join('\n');
}

export function testbedCommand(): Command {
  return new Command('testbed')
    .description("run the paper's Fig. 1 testbed in this process: name server, Goldbach service on the VM, its client and xping on host C")
    .addOption(new Option('-t, --topology <name>', 'Fig. 1a or 1b').choices(['intra-ad', 'inter-ad']).default('inter-ad'))
    .option('-d, --duration <ms>', 'how long traffic runs', (v) => Number(v), 3000)
    .option('-i, --interval <ms>', 'xping interval', (v) => Number(v), 10)
    .option('--json', 'print the report as JSON')
    .action(async (options: { topology: TopologyName; duration: number; interval: number; json?: boolean }) => {
      const report = await runTestbed({ topology: options.topology, durationMs: options.duration, pingIntervalMs: options.interval });
      process.stdout.write(options.json ? `${JSON.stringify(report)}\n` : `${formatTestbedReport(report)}\n`);
      if (report.goldbach.brokenConnections > 0 || report.goldbach.answers === 0) process.exitCode = ExitCode.FAILURE;
    });
}
