/**
 * `xmig`'s command tree: one command for every part of the system. Each subcommand is a thin shell
 * over a library function; this file only wires them together and maps errors to
 * exit codes.
 */
import { Command, CommanderError } from 'commander';
import { ConfigError, XmigError } from '../shared/errors.js';
import { applyExamples } from './examples.js';
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
  config: async () => [(await import('./setup-command.js')).configCommand()],
  setup: async () => [(await import('./setup-command.js')).setupCommand()],
  man: async () => [(await import('./man-command.js')).manCommand()],
  migrate: async () => [(await import('./migrate-command.js')).migrateCommand()],
  'disk-target': async () => [(await import('./disk-target-command.js')).diskTargetCommand()],
  'libvirt-proxy': async () => [(await import('./libvirt-proxy-command.js')).libvirtProxyCommand()],
  tunnel: async () => [(await import('./tunnel-command.js')).tunnelCommand()],
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
  applyExamples(program);
  program.hook('preAction', (_program, action) => warnIgnored(action));
  return program;
}

/** Flags that do nothing without another one: said on stderr, not silently dropped. */
const IGNORED_WITHOUT: ReadonlyArray<{ command: string; option: string; without: string }> = [
  { command: 'xip decode', option: 'udpPort', without: 'pcap' },
  { command: 'testbed', option: 'moves', without: 'migrate' },
  { command: 'testbed', option: 'pauseMs', without: 'migrate' },
  { command: 'setup', option: 'purge', without: 'remove' },
  { command: 'setup', option: 'node', without: 'topology' },
  { command: 'setup', option: 'address', without: 'topology' },
  { command: 'config', option: 'node', without: 'topology' },
  { command: 'config', option: 'address', without: 'topology' },
];

function flagOf(command: Command, key: string): string {
  return command.options.find((o) => o.attributeName() === key)?.long ?? key;
}

export function ignoredFlags(action: Command): string[] {
  const path: string[] = [];
  for (let c: Command | null = action; c?.parent; c = c.parent) path.unshift(c.name());
  const name = path.join(' ');
  const given = (key: string): boolean => action.getOptionValueSource(key) === 'cli';
  return IGNORED_WITHOUT.filter((rule) => rule.command === name && given(rule.option) && !given(rule.without)).map(
    (rule) => `${flagOf(action, rule.option)} is ignored without ${flagOf(action, rule.without)}`,
  );
}

function warnIgnored(action: Command): void {
  for (const warning of ignoredFlags(action)) process.stderr.write(`xmig: warning: ${warning}\n`);
}

function exitCodeFor(error: unknown): number {
  if (error instanceof ConfigError) return ExitCode.CONFIG;
  if (error instanceof XmigError) {
    if (error.code === 'ERR_CONFIG') return ExitCode.CONFIG;
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

