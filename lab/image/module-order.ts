/**
 * Which kernel modules the guest loads, and in what order: read from the kernel's own
 * `modules.dep` (depmod's output), never hard-coded, so another kernel version with
 * other dependencies still boots.
 *
 * A modules.dep line is `path/a.ko: path/b.ko path/c.ko`: the modules a.ko needs, listed
 * so that loading them from last to first (as modprobe does) satisfies each before it is
 * needed. A module's load order is therefore its dependencies, depth first in reverse
 * listed order, then itself; a module wanted twice is loaded once.
 */
import { XmigError } from '../../shared/errors.js';

/**
 * What the guest needs: its NIC (virtio-net on virtio-pci), a data disk (virtio-blk,
 * ext4), and crc32c, which ext4 asks the crypto API for (modules.softdep's
 * `ext4 pre: crypto-crc32c`) rather than naming as a dependency.
 */
export const GUEST_MODULES: readonly string[] = ['virtio_pci', 'virtio_net', 'virtio_blk', 'crc32c_generic', 'ext4'];

/** module file (relative to /lib/modules/VERSION) -> the files it depends on, in listed order */
export type ModulesDep = Map<string, string[]>;

/** Parses modules.dep text; ERR_MESSAGE_MALFORMED names the first line that is not `file: deps`. */
export function parseModulesDep(text: string): ModulesDep {
  const deps: ModulesDep = new Map();
  text.split('\n').forEach((raw, index) => {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) return;
    const colon = line.indexOf(':');
    const file = colon > 0 ? line.slice(0, colon).trim() : '';
    if (!/\.ko(\.(xz|zst|gz))?$/.test(file) || /\s/.test(file)) {
      throw new XmigError('ERR_MESSAGE_MALFORMED', `modules.dep line ${index + 1} is not "module.ko: dependencies": ${line.slice(0, 80)}`);
    }
    deps.set(file, line.slice(colon + 1).trim().split(/\s+/).filter(Boolean));
  });
  return deps;
}

/** A module's name as modprobe spells it: the file name without .ko[.xz|.zst|.gz], "-" read as "_". */
export function moduleName(file: string): string {
  const base = file.slice(file.lastIndexOf('/') + 1);
  return base.replace(/\.ko(\.(xz|zst|gz))?$/, '').replaceAll('-', '_');
}

/**
 * The module files to load, in order, for `wanted` (module names): each module's
 * dependencies before it. ERR_STATE names a wanted module the kernel does not have
 * (built in modules are not in modules.dep: list only what this kernel builds as modules).
 */
export function moduleLoadOrder(deps: ModulesDep, wanted: readonly string[]): string[] {
  const byName = new Map<string, string>();
  for (const file of deps.keys()) byName.set(moduleName(file), file);
  const order: string[] = [];
  const done = new Set<string>();
  const visiting = new Set<string>();
  const visit = (file: string, chain: string[]): void => {
    if (done.has(file)) return;
    if (visiting.has(file)) throw new XmigError('ERR_STATE', `modules.dep has a dependency cycle: ${[...chain, file].map(moduleName).join(' -> ')}`);
    visiting.add(file);
    const needs = deps.get(file);
    if (needs === undefined) throw new XmigError('ERR_STATE', `modules.dep lists ${chain.at(-1) ?? '?'} as needing ${file}, which it does not describe`);
    for (const dependency of [...needs].reverse()) visit(dependency, [...chain, file]);
    visiting.delete(file);
    done.add(file);
    order.push(file);
  };
  for (const name of wanted) {
    const file = byName.get(name.replaceAll('-', '_'));
    if (file === undefined) throw new XmigError('ERR_STATE', `the kernel has no module ${name} (not in modules.dep)`);
    visit(file, []);
  }
  return order;
}
