import { Command, Option } from 'commander';
import { durationMsOption, integerOption } from './option-parsers.js';
import { runMigrationTestbed, type MigrationReport } from '../testbed/migration.js';
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

/** The paper's Table 1 (XIA rows) next to this run. */
const PAPER_TABLE_1: Record<TopologyName, { total: string; downtime: string }> = {
  'intra-ad': { total: '14 min', downtime: '1.2 s' },
  'inter-ad': { total: '15 min', downtime: '1.2 s' },
};

const ms = (value: number | null): string => (value === null ? '-' : `${value} ms`);

export function formatMigrationTable(reports: MigrationReport[]): string {
  const header = ['', 'paper: total', 'paper: downtime', 'downtime (n·Δt)', 'max downtime', 'Goldbach max gap', 'move→rewritten', 'move→registered', 'broken conns', 'xping loss'];
  const rows = reports.map((r) => [
    r.topology,
    PAPER_TABLE_1[r.topology].total,
    PAPER_TABLE_1[r.topology].downtime,
    `${r.downtimeMs} ms ±${r.pingIntervalMs}`,
    `${r.downtimeMaxMs} ms`,
    `${r.goldbachMaxGapMs} ms`,
    ms(r.moveToRewrittenMs),
    ms(r.moveToRegisteredMs),
    `${r.brokenConnections}`,
    `${r.xpingLossPct}%`,
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i]!.length)));
  const line = (cells: string[]): string => cells.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd();
  const moves = reports.map((r) => `${r.topology}: ${r.moves} move(s)`).join(', ');
  return [
    `Live migration in the Fig. 1 testbed (${moves}; medians; xping every ${reports[0]?.pingIntervalMs ?? 10} ms to the VM's old DAG;`,
    "the Goldbach client keeps its STREAM to the old DAG). Paper: Table 1, XIA rows, real QEMU; here the network side of the move.",
    '',
    line(header),
    line(header.map((_, i) => '-'.repeat(widths[i]!))),
    ...rows.map(line),
  ].join('\n');
}

export function testbedCommand(): Command {
  return new Command('testbed')
    .description("run the paper's Fig. 1 testbed in this process: name server, Goldbach service on the VM, its client and xping on host C")
    .addOption(new Option('-t, --topology <name>', 'Fig. 1a or 1b (with --migrate, default: both)').choices(['intra-ad', 'inter-ad']))
    .option('-d, --duration <ms>', 'how long traffic runs (without --migrate)', durationMsOption(1), 3000)
    .option('-i, --interval <ms>', 'xping interval Δt', durationMsOption(1), 10)
    .option('-W, --ping-timeout <ms>', 'without --migrate: an echo unanswered this long is lost (default 250)', durationMsOption(1))
    .option('--migrate', 'move the VM from host A to host B (agent + router plugin) and report as the paper\'s Table 1')
    .option('--moves <n>', 'with --migrate: moves, back and forth between A and B', integerOption(1, 1000), 1)
    .option('--pause-ms <ms>', 'with --migrate: time the VM is off the network during a move (its stop-and-copy)', durationMsOption(0), 0)
    .option('--json', 'print the report as JSON')
    .action(async (options: { topology?: TopologyName; duration: number; interval: number; migrate?: boolean; moves: number; pauseMs: number; json?: boolean; pingTimeout?: number }) => {
      if (options.migrate) {
        const topologies: TopologyName[] = options.topology ? [options.topology] : ['intra-ad', 'inter-ad'];
        const reports: MigrationReport[] = [];
        for (const topology of topologies) {
          reports.push(await runMigrationTestbed({ topology, moves: options.moves, pingIntervalMs: options.interval, pauseMs: options.pauseMs }));
        }
        process.stdout.write(options.json ? `${JSON.stringify(reports.length === 1 ? reports[0] : reports)}\n` : `${formatMigrationTable(reports)}\n`);
        if (reports.some((r) => r.brokenConnections > 0 || r.moveToRewrittenMs === null)) process.exitCode = ExitCode.FAILURE;
        return;
      }
      const report = await runTestbed({ topology: options.topology ?? 'inter-ad', durationMs: options.duration, pingIntervalMs: options.interval, pingTimeoutMs: options.pingTimeout });
      process.stdout.write(options.json ? `${JSON.stringify(report)}\n` : `${formatTestbedReport(report)}\n`);
      if (report.goldbach.brokenConnections > 0 || report.goldbach.answers === 0) process.exitCode = ExitCode.FAILURE;
    });
}
