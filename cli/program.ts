/**
 * `xmig`'s command tree: one command for every part of the system. Each subcommand is a thin shell
 * over a library function; this file only wires them together and maps errors to
 * exit codes.
 */
import { Command, CommanderError } from 'commander';
import { ConfigError, XmigError } from '../shared/errors.js';
import { ExitCode } from './exit-codes.js';
import { dagCommand } from './dag-command.js';
import { xipCommand } from './xip-command.js';
import { nodeCommand } from './node-command.js';
import { pingCommand } from './ping-command.js';
import { nameserverCommand, resolveCommand } from './names-command.js';
import { testbedCommand } from './testbed-command.js';
import { calCommand } from './cal-command.js';
import { agentCommand } from './agent-command.js';
import { routerPluginCommand } from './router-plugin-command.js';
import { migrateCommand, recvCommand, sendCommand } from './mover-commands.js';

export function buildProgram(): Command {
  const program = new Command('xmig')
    .description('live VM migration over XIA: the network (xianet), the in-VM agent, the router plugin and the mover')
    .version('0.1.0')
    .showHelpAfterError('(run with --help for usage)')
    .configureHelp({ sortSubcommands: true });
  program.addCommand(dagCommand());
  program.addCommand(xipCommand());
  program.addCommand(nodeCommand());
  program.addCommand(pingCommand());
  program.addCommand(nameserverCommand());
  program.addCommand(resolveCommand());
  program.addCommand(testbedCommand());
  program.addCommand(calCommand());
  program.addCommand(agentCommand());
  program.addCommand(routerPluginCommand());
  program.addCommand(sendCommand());
  program.addCommand(recvCommand());
  program.addCommand(migrateCommand());
  return program;
}

function exitCodeFor(error: unknown): number {
  if (error instanceof ConfigError) return ExitCode.CONFIG;
  if (error instanceof XmigError) {
    if (error.code === 'ERR_UNREACHABLE' || error.code === 'ERR_TIMEOUT') return ExitCode.UNAVAILABLE;
    return ExitCode.DATA;
  }
  return ExitCode.FAILURE;
}

function overrideExits(command: Command): void {
  command.exitOverride();
  for (const sub of command.commands) overrideExits(sub);
}

export async function runCli(argv: string[]): Promise<number> {
  const program = buildProgram();
  overrideExits(program);
  try {
    await program.parseAsync(argv, { from: 'user' });
    // A command that ran to its end but found a failure (lost pings, a failed
    // migration) says so through process.exitCode.
    return Number(process.exitCode ?? ExitCode.OK);
  } catch (error) {
    if (error instanceof CommanderError) {
      // --help and --version end through here with exit code 0.
      return error.exitCode === 0 ? ExitCode.OK : ExitCode.USAGE;
    }
    const message = error instanceof Error ? error.message : String(error);
    process.stderr.write(`xmig: ${message}\n`);
    if (process.env['XMIG_DEBUG'] && error instanceof Error) process.stderr.write(`${error.stack}\n`);
    return exitCodeFor(error);
  }
}

