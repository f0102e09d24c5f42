/**
 * xmig(1), generated from the command tree: every command's usage, description, options
 * and examples, the exit codes, the files an installed xmig uses. The package build runs
 * `xmig man` and installs the page; nothing here is written by hand twice.
 */
import type { Command, Help } from 'commander';
import { examplesOf } from './examples.js';
import { EXIT_CODES } from './exit-codes.js';

/** Escapes text for troff: backslashes, and a leading dot or quote that would read as a request. */
export function troff(text: string): string {
  return text
    .replace(/\\/g, '\\e')
    .replace(/-/g, '\\-')
    .split('\n')
    .map((line) => (/^[.']/.test(line) ? `\\&${line}` : line))
    .join('\n');
}

function commandSection(command: Command, help: Help, path: string[]): string[] {
  const out: string[] = [];
  const name = [...path, command.name()].join(' ');
  const sub = command.commands.filter((c) => !(c as Command & { _hidden?: boolean })._hidden);
  if (command.parent) {
    out.push(`.SS ${troff(name)}`);
    out.push('.nf', `${troff(`${[...path, help.commandUsage(command).replace(/^\S+ /, '')].join(' ')}`)}`, '.fi');
    out.push(troff(command.description()));
    const options = help.visibleOptions(command).filter((o) => o.long !== '--help');
    for (const option of options) {
      out.push('.TP', `.B ${troff(option.flags)}`, troff(help.optionDescription(option)));
    }
    const examples = examplesOf(command);
    if (examples.length > 0) {
      out.push('.PP', 'Examples:', '.RS', '.nf', ...examples.map(troff), '.fi', '.RE');
    }
  }
  for (const child of sub) out.push(...commandSection(child, help, command.parent ? [...path, command.name()] : [command.name()]));
  return out;
}

export function manPage(program: Command, options: { version: string; date: string }): string {
  const help = program.createHelp();
  const lines = [
    `.TH XMIG 1 "${options.date}" "xmig ${options.version}" "User Commands"`,
    '.SH NAME',
    `xmig \\- ${troff(program.description())}`,
    '.SH SYNOPSIS',
    '.B xmig',
    '.I command',
    '[options]',
    '.SH DESCRIPTION',
    troff(
      'xmig moves a KVM/QEMU virtual machine, live, between hosts inside one XIA Administrative Domain or between two, ' +
        'and every conversation with it survives. It is one command: the XIA network (xmig node), the name service, ' +
        'the in-VM agent, the router plugin, the mover QEMU runs (xmig send, xmig recv) and xmig migrate, which drives it.',
    ),
    '.PP',
    troff('Daemons log one JSON event per line on stdout (the journal under systemd, with each line\'s syslog priority) and serve Prometheus metrics on /metrics (--metrics-port). Every daemon takes --log-level.'),
    '.SH COMMANDS',
    ...commandSection(program, help, []),
    '.SH EXIT STATUS',
    ...EXIT_CODES.flatMap(({ code, meaning }) => ['.TP', `.B ${code}`, troff(meaning)]),
    '.SH ENVIRONMENT',
    '.TP',
    '.B XMIG_API',
    troff('the local node\'s API socket (default /run/xmig/node.sock)'),
    '.TP',
    '.B XMIG_LOG_LEVEL',
    troff('log level when no --log-level is given (QEMU starts xmig send and recv without flags of yours)'),
    '.SH FILES',
    '.TP',
    '.I /etc/xmig/node.json, /etc/xmig/agent.json, /etc/xmig/router-plugin.env',
    troff('configuration (written by xmig setup; xmig config prints it)'),
    '.TP',
    '.I /var/lib/xmig/node.key, /var/lib/xmig/ad.key',
    troff('the node\'s key (HID = SHA-1 of its public key) and a router\'s AD key; mode 0600, owner xmig'),
    '.TP',
    '.I /run/xmig/node.sock',
    troff('the node\'s application API socket'),
    '.TP',
    '.I /lib/systemd/system/xmig-*.service',
    troff('the units: xmig-node, xmig-agent, xmig-router-plugin, xmig-nameserver'),
    '.TP',
    '.I /usr/share/xmig/wireshark/xmig.lua',
    troff('Wireshark dissector for XIP over xianet\'s UDP: tshark -X lua_script:/usr/share/xmig/wireshark/xmig.lua'),
    '.TP',
    '.I /usr/share/xmig/grafana/xmig-migration.json',
    troff('a Grafana dashboard of a migration'),
    '.SH SEE ALSO',
    '.BR systemd-analyze (1),',
    '.BR journalctl (1),',
    '.BR tshark (1),',
    '.BR qemu-system-x86_64 (1)',
    '.PP',
    '/usr/share/doc/xmig/README.md',
    '',
  ];
  return lines.join('\n');
}
