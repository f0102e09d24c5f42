import { mkdirSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { Command, Option } from 'commander';
import { integerOption } from './option-parsers.js';
import { loadConfig } from '../shared/config.js';
import { topologySchema } from '../xianet/topology.js';
import { parseAddresses, roleConfig, ROLES, type Role, type RoleConfigOptions } from '../deploy/role-config.js';
import { removeRole, setupRole } from '../deploy/role-setup.js';

interface RoleFlags {
  name?: string;
  topology?: string;
  node?: string;
  address?: string[];
  port?: number;
  nameServer?: string;
  withNameserver?: boolean;
}

function roleOptions(command: Command): Command {
  return command
    .option('--name <name>', "the node's name (its element on the control port); default: --node, or R1 / H1 / VM")
    .option('--topology <file>', 'a topology (JSON, as xmig testbed and the tests use): this machine is --node in it')
    .option('--node <name>', "this machine's node in the topology")
    .option('--address <node=ip...>', 'with --topology: the address of every node of it')
    .option('--port <port>', 'UDP port of the first interface (the next ones count up; default 7000)', integerOption(1, 65535))
    .option('--name-server <dag>', 'routers: the name server DAG announced in beacons')
    .option('--with-nameserver', 'also run the name server on this machine');
}

function toRoleConfigOptions(role: string, flags: RoleFlags): RoleConfigOptions {
  return {
    role: role as Role,
    name: flags.name,
    topology: flags.topology ? loadConfig(topologySchema, { file: flags.topology }) : undefined,
    node: flags.node,
    addresses: flags.address ? parseAddresses(flags.address) : undefined,
    port: flags.port,
    nameServer: flags.nameServer,
    withNameServer: flags.withNameserver,
  };
}

export function configCommand(): Command {
  const command = roleOptions(
    new Command('config')
      .description("print (or write to --out) this machine's config files for its role: node.json, and agent.json on a VM, router-plugin.env on a router")
      .addOption(new Option('--role <role>', 'router, hypervisor or vm').choices([...ROLES]).makeOptionMandatory())
      .option('--out <dir>', 'write the files into this directory instead of printing them'),
  ).action((flags: RoleFlags & { role: string; out?: string }) => {
    const config = roleConfig(toRoleConfigOptions(flags.role, flags));
    if (flags.out) {
      mkdirSync(flags.out, { recursive: true });
      for (const file of config.files) {
        const path = join(flags.out, basename(file.path));
        writeFileSync(path, file.content, { mode: file.mode });
        process.stdout.write(`${path}\n`);
      }
      return;
    }
    for (const file of config.files) process.stdout.write(`# ${file.path}\n${file.content}`);
  });
  return command;
}

export function setupCommand(): Command {
  const command = roleOptions(
    new Command('setup')
      .description('make this machine a router, hypervisor or VM of the deployment: config, keys (0600, user xmig), the role\'s units enabled and started; --remove undoes it')
      .addArgument(new Command().createArgument('<role>', 'router, hypervisor or vm').choices([...ROLES]))
      .option('--remove', 'undo: stop and disable the units, remove the config files')
      .option('--purge', 'with --remove: also the keys and state (/var/lib/xmig)')
      .option('--root <dir>', 'set up the tree under this directory (an image, a chroot) instead of this system')
      .option('--no-enable', 'do not enable or start the units')
      .option('--force', 'overwrite config files that exist'),
  ).action((role: string, flags: RoleFlags & { remove?: boolean; purge?: boolean; root?: string; enable: boolean; force?: boolean }) => {
    if (flags.remove) {
      const report = removeRole({ role: role as Role, root: flags.root, purge: flags.purge });
      for (const path of report.removed) process.stdout.write(`removed ${path}\n`);
      process.stdout.write(report.stopped === true ? `stopped and disabled ${report.units.join(' ')}\n` : `units not touched: ${report.stopped}\n`);
      return;
    }
    const report = setupRole({ ...toRoleConfigOptions(role, flags), root: flags.root, enable: flags.enable, force: flags.force });
    for (const path of report.written) process.stdout.write(`wrote ${path}\n`);
    for (const path of report.kept) process.stdout.write(`kept ${path} (exists; --force rewrites it)\n`);
    for (const key of report.keys) process.stdout.write(`${key.created ? 'created' : 'kept'} ${key.file}: ${key.xid}\n`);
    process.stdout.write(
      report.started === true
        ? `enabled and started ${report.units.join(' ')}\n`
        : `units not started (${report.started}); when ready: systemctl enable --now ${report.units.join(' ')}\n`,
    );
  });
  return command;
}
