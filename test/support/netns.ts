/**
 * Network namespaces for integration tests (root only): made with unique names, IPv6 DAD
 * off (link-local addresses usable at once, as the lab needs), and always removed.
 */
import { spawnSync } from 'node:child_process';

const made = new Set<string>();

/** Runs `ip ARGS` and returns its stdout; throws with its stderr on failure. */
export function ip(...args: string[]): string {
  const result = spawnSync('ip', args, { encoding: 'utf8' });
  if (result.status !== 0) throw new Error(`ip ${args.join(' ')}: ${result.stderr.trim()}`);
  return result.stdout;
}

/** Runs a command inside a namespace and returns its stdout. */
export function inNetns(netns: string, command: string, ...args: string[]): string {
  return ip('netns', 'exec', netns, command, ...args);
}

/** A new namespace with lo up and DAD off for every interface made in it from now on. */
export function makeNetns(name: string): string {
  ip('netns', 'add', name);
  made.add(name);
  inNetns(name, 'sysctl', '-qw', 'net.ipv6.conf.all.accept_dad=0', 'net.ipv6.conf.default.accept_dad=0');
  ip('-n', name, 'link', 'set', 'lo', 'up');
  return name;
}

/** Removes the namespaces this process made (and with them their interfaces). */
export function removeNetns(): void {
  for (const name of made) spawnSync('ip', ['netns', 'del', name]);
  made.clear();
}

/** A name for this run: short (interface names have 15 bytes) and unique per process. */
export function uniqueTag(prefix: string): string {
  return `${prefix}${process.pid.toString(36).slice(-4)}`;
}

/** The IPv6 link-local address of `dev` in `netns` (as the kernel made it from the MAC). */
export function linkLocalOf(netns: string, dev: string): string {
  const match = /inet6 (fe80::[0-9a-f:]+)\/64/.exec(ip('-n', netns, '-6', 'addr', 'show', 'dev', dev, 'scope', 'link'));
  if (!match) throw new Error(`${dev} in ${netns} has no link-local address`);
  return match[1]!;
}
