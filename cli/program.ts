/**
 * `xmig`'s command tree: one command for every part of the system. Each subcommand is a thin shell
 * over a library function; this file only wires them together and maps errors to
 * exit codes.
 */
import { Command, CommanderError } from 'commander';
import { ConfigError, XmigError } from '../shared/errors.js';
import { ExitCode } from './exit-codes.js';

type CommandModule = () => Promise<Command[]>;

/**
 * Each subcommand's module, loaded only when that subcommand runs (or for --help):
 * QEMU starts `xmig send` and `xmig recv` at every migration, and loading the whole
 * stack (metrics, cron, host facts) for them costs time the migration waits for.
 */
const COMMANDS: Record<string, CommandModule> = {
  dag: async () => [(await import('./dag-command.js')).dagCommand()],
  xip: async () => [(await import('./xip-command.js')).xipCommand()],
  node: async () => [(await import('./node-command.js')).nodeCommand()],
  ping: async () => [(await import('./ping-command.js')).pingCommand()],
  nameserver: async () => [(await import('./names-command.js')).nameserverCommand()],
  resolve: async () => [(await import('./names-command.js')).resolveCommand()],
  testbed: async () => [(await import('./testbed-command.js')).testbedCommand()],
  cal: async () => [(await import('./cal-command.js')).calCommand()],
  agent: async () => [(await import('./agent-command.js')).agentCommand()],
  'router-plugin': async () => [(await import('./router-plugin-command.js')).routerPluginCommand()],
  send: async () => [(await import('./mover-commands.js')).sendCommand()],
  recv: async () => [(await import('./mover-commands.js')).recvCommand()],
  lab: async () => [(await import('./lab-command.js')).labCommand()],
  migrate: async () => [(await import('./migrate-command.js')).migrateCommand()],
  'disk-target': async () => [(await import('./disk-target-command.js')).diskTargetCommand()],
};

/** The command tree: every subcommand, or only `name`'s when it is one of them. */
export async function buildProgram(name?: string): Promise<Command> {
  const program = new Command('xmig')
    .description('live VM migration over XIA: the network (xianet), the in-VM agent, the router plugin and the mover')
    .version('0.1.0')
    .showHelpAfterError('(run with --help for usage)')
    // An option belongs to the command it follows (\`migrate status --json\` is status's --json).
    .enablePositionalOptions()
    .configureHelp({ sortSubcommands: true });
  const wanted = name !== undefined && Object.hasOwn(COMMANDS, name) ? [COMMANDS[name]!] : Object.values(COMMANDS);
  for (const load of wanted) for (const command of await load()) program.addCommand(command);
  return program;
}

function exitCodeFor(error: unknown): number {
  if (error instanceof ConfigError) return ExitCode.CONFIG;
  if (error instanceof XmigError) {
    if (error.code === 'ERR_USAGE') return ExitCode.USAGE;
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
  const program = await buildProgram(argv[0]);
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

