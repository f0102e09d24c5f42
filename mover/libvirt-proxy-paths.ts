/**
 * Where the libvirt proxy's sockets are, and the URIs `virsh migrate` is given for them.
 * Both hosts use the same layout, because libvirt hands the destination the very paths
 * the source was given: the destination QEMU listens on the migration (and NBD) socket
 * path of the URI, and the source connects to that path on its own host, where the
 * source proxy listens.
 *
 *   <dir>/<domain>/libvirtd.sock    source: the proxy, to the destination's libvirtd
 *   <dir>/<domain>/migration.sock   source: the proxy; destination: QEMU's incoming migration
 *   <dir>/<domain>/nbd.sock         source: the proxy; destination: QEMU's NBD server
 */
import { join } from 'node:path';
import type { ProxyChannelName } from './libvirt-proxy-messages.js';

export const DEFAULT_LIBVIRT_PROXY_DIR = '/run/xmig-libvirt';
/** The system libvirtd's read-write socket (modular daemons: /run/libvirt/virtqemud-sock). */
export const DEFAULT_LIBVIRTD_SOCKET = '/run/libvirt/libvirt-sock';
/** QEMU's group under Debian's libvirt (qemu.conf `group`). */
export const DEFAULT_QEMU_GROUP = 'libvirt-qemu';

export function channelSocket(dir: string, domain: string, channel: ProxyChannelName): string {
  return join(dir, domain, `${channel}.sock`);
}

export interface VirshUris {
  /** The destination libvirtd, as the source reaches it (virsh's `--desturi`). */
  desturi: string;
  /** The destination QEMU's migration socket (`--migrateuri`). */
  migrateuri: string;
  /** Its NBD server, for `--copy-storage-all` (`--disks-uri`). */
  disksUri: string;
}

export function virshUris(dir: string, domain: string): VirshUris {
  return {
    desturi: `qemu+unix:///system?socket=${channelSocket(dir, domain, 'libvirtd')}`,
    migrateuri: `unix://${channelSocket(dir, domain, 'migration')}`,
    disksUri: `unix://${channelSocket(dir, domain, 'nbd')}`,
  };
}

/** The `virsh migrate` command line that goes through the proxy (`storage`: with --copy-storage-all). */
export function virshMigrateCommand(dir: string, domain: string, options: { p2p?: boolean; storage?: boolean } = {}): string[] {
  const uris = virshUris(dir, domain);
  return [
    'virsh',
    'migrate',
    '--live',
    ...(options.p2p === false ? [] : ['--p2p']),
    ...(options.storage ? ['--copy-storage-all', '--disks-uri', uris.disksUri] : []),
    domain,
    uris.desturi,
    '--migrateuri',
    uris.migrateuri,
  ];
}
