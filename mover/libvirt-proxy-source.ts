/**
 * `xmig libvirt-proxy source`: the source host's end of a libvirt migration over XIA. For
 * one domain it listens on the three sockets libvirt is pointed at (libvirt-proxy-paths.ts)
 * and carries each connection to them as a STREAM to the destination's `xmig libvirt-proxy
 * target`, which joins it to the matching socket there:
 *
 *  - libvirtd.sock: the source libvirtd (`--p2p`) or virsh connects here as it would to
 *    the destination's libvirtd; 0600, root only — whoever can connect drives the
 *    destination's libvirtd;
 *  - migration.sock: the source libvirtd connects here and hands the socket to QEMU
 *    (`migrate fd:`); 0600;
 *  - nbd.sock: with --copy-storage-all, the source QEMU's own NBD client connects here;
 *    0660 and QEMU's group, and the directory lets that group through (0750).
 *
 * Each STREAM opens with OPEN (channel, domain) and goes on only once the target has
 * answered ACCEPTED; a refusal (no such socket there: the destination QEMU is not
 * listening, the hook did not make its directory, ...) drops the connection and says why.
 */
import { chownSync, chmodSync, mkdirSync, rmdirSync } from 'node:fs';
import { dirname } from 'node:path';
import type { Duplex } from 'node:stream';
import { ConfigError, XmigError, errorMessage } from '../shared/errors.js';
import { silentLogger, type Logger } from '../shared/logger.js';
import { startAll, stopAll, type Startable } from '../shared/startable.js';
import type { Dag } from '../shared/dag.js';
import type { NodeApi } from '../xianet/api/node-api.js';
import { resolveGroup } from '../xianet/unix-socket-file.js';
import {
  CHANNEL_NAMES,
  domainNameProblem,
  encodeProxyMessage,
  ProxyChannel,
  ProxyMessageReader,
  ProxyMessageType,
  type ProxyChannelCode,
  type ProxyChannelName,
} from './libvirt-proxy-messages.js';
import { channelSocket, DEFAULT_LIBVIRT_PROXY_DIR, DEFAULT_QEMU_GROUP, virshUris, type VirshUris } from './libvirt-proxy-paths.js';
import { LocalTunnel, type LocalTunnelCounts } from './local-tunnel.js';

export interface LibvirtProxySourceOptions {
  /** The domain (as the destination will name it: its directory there). */
  domain: string;
  /** Opens a STREAM to the destination's proxy target (its libvirt SID). */
  connect: () => Promise<Duplex>;
  /** Where the domain's socket directory goes (default /run/xmig-libvirt). */
  dir?: string;
  /** QEMU's group: its NBD client connects to nbd.sock itself (default libvirt-qemu). */
  qemuGroup?: string | number;
  /** The channels to carry (default all three). */
  channels?: readonly ProxyChannelName[];
  /** How long the target may take to answer OPEN (default 10 s). */
  openTimeoutMs?: number;
  logger?: Logger;
}

/**
 * How long a proxied STREAM may hear nothing from the target before it is lost. libvirt's
 * own RPC connection sits idle for most of a migration, so this must be well past STREAM's
 * 5 s keepalive (at 3 s, the mover's, it dies within seconds). libvirt's own keepalive
 * (5 s, 5 missed) gives up on a silent peer after about as long.
 */
export const PROXY_STREAM_OUTAGE_MS = 30_000;

/** Opens a STREAM to the destination's proxy target (its DAG ends at the libvirt SID). */
export function connectProxyTarget(api: NodeApi, target: Dag): () => Promise<Duplex> {
  return () => api.connect(target, { connectTimeoutMs: 10_000, outageTimeoutMs: PROXY_STREAM_OUTAGE_MS });
}

const CODES: Record<ProxyChannelName, ProxyChannelCode> = { libvirtd: ProxyChannel.LIBVIRTD, migration: ProxyChannel.MIGRATION, nbd: ProxyChannel.NBD };

/**
 * Opens a proxied connection on a fresh STREAM: OPEN, then the target's answer. Resolves
 * with what the target sent after ACCEPTED (the destination socket's first bytes: an NBD
 * server speaks first); rejects with the target's reason if it refused.
 */
export function openProxyStream(channel: ProxyChannelCode, domain: string, timeoutMs: number): (remote: Duplex) => Promise<Buffer> {
  return (remote) =>
    new Promise<Buffer>((resolve, reject) => {
      const reader = new ProxyMessageReader();
      const done = (error?: Error, rest?: Buffer): void => {
        clearTimeout(timer);
        remote.off('data', onData);
        remote.off('close', onClose);
        if (error) reject(error);
        else resolve(rest!);
      };
      const onData = (chunk: Buffer): void => {
        let answer;
        try {
          [answer] = reader.push(chunk, 1);
        } catch (error) {
          return done(new XmigError('ERR_MESSAGE_MALFORMED', `the proxy target's answer: ${errorMessage(error)}`));
        }
        if (!answer) return;
        // Whatever follows the answer is the socket's: nothing may flow before the splice takes it.
        remote.pause();
        if (answer.type === ProxyMessageType.ACCEPTED) return done(undefined, reader.rest());
        if (answer.type === ProxyMessageType.REFUSED) return done(new XmigError('ERR_REFUSED', `the proxy target refused: ${answer.reason}`));
        done(new XmigError('ERR_MESSAGE_MALFORMED', `the proxy target answered ${answer.type} to OPEN`));
      };
      const onClose = (): void => done(new XmigError('ERR_CONNECTION', 'the proxy target closed the stream before answering'));
      const timer = setTimeout(() => done(new XmigError('ERR_TIMEOUT', `the proxy target did not answer within ${timeoutMs} ms`)), timeoutMs);
      remote.on('data', onData);
      remote.once('close', onClose);
      remote.write(encodeProxyMessage({ type: ProxyMessageType.OPEN, channel, domain }));
    });
}

export class LibvirtProxySource implements Startable {
  private readonly tunnels = new Map<ProxyChannelName, LocalTunnel>();
  private readonly logger: Logger;
  private readonly dir: string;
  private readonly lostListeners = new Set<(channel: ProxyChannelName, reason: string) => void>();
  private started = false;

  constructor(private readonly options: LibvirtProxySourceOptions) {
    const problem = domainNameProblem(options.domain);
    if (problem) throw new ConfigError(problem);
    this.dir = options.dir ?? DEFAULT_LIBVIRT_PROXY_DIR;
    this.logger = (options.logger ?? silentLogger()).child({ component: 'mover', role: 'libvirt-proxy-source', vm: options.domain });
  }

  /** What `virsh migrate` is given to go through this proxy. */
  get uris(): VirshUris {
    return virshUris(this.dir, this.options.domain);
  }

  /** Bytes and connections per channel so far. */
  get counts(): Partial<Record<ProxyChannelName, LocalTunnelCounts>> {
    return Object.fromEntries([...this.tunnels].map(([name, tunnel]) => [name, tunnel.counts]));
  }

  /** A proxied connection was lost or refused: libvirt sees its socket closed. */
  onLost(listener: (channel: ProxyChannelName, reason: string) => void): () => void {
    this.lostListeners.add(listener);
    return () => this.lostListeners.delete(listener);
  }

  async start(): Promise<void> {
    if (this.started) return;
    const { domain } = this.options;
    const gid = resolveGroup(this.options.qemuGroup ?? DEFAULT_QEMU_GROUP);
    const domainDir = dirname(channelSocket(this.dir, domain, 'libvirtd'));
    try {
      mkdirSync(this.dir, { recursive: true, mode: 0o755 });
      mkdirSync(domainDir, { recursive: true });
      // QEMU (its group) must get through to nbd.sock; nobody else in.
      chownSync(domainDir, -1, gid);
      chmodSync(domainDir, 0o750);
    } catch (error) {
      throw new ConfigError(`cannot make the socket directory ${domainDir} for QEMU's group ${gid}: ${errorMessage(error)}`, { cause: error });
    }
    const channels = this.options.channels ?? (Object.values(CHANNEL_NAMES) as ProxyChannelName[]);
    this.tunnels.clear();
    for (const name of channels) {
      const tunnel = new LocalTunnel({
        path: channelSocket(this.dir, domain, name),
        ...(name === 'nbd' ? { mode: 0o660, group: gid } : { mode: 0o600 }),
        connect: this.options.connect,
        open: openProxyStream(CODES[name], domain, this.options.openTimeoutMs ?? 10_000),
        // libvirt opens a handful per migration (libvirtd: one per client; NBD: one per disk).
        maxConnections: 16,
        name: `libvirt proxy ${name} channel`,
        peer: 'the destination',
        logger: this.logger,
      });
      tunnel.onLost((reason) => {
        for (const listener of this.lostListeners) listener(name, reason);
      });
      this.tunnels.set(name, tunnel);
    }
    try {
      await startAll([...this.tunnels.values()]);
    } catch (error) {
      this.tunnels.clear();
      this.removeDir(domainDir);
      throw error;
    }
    this.started = true;
    this.logger.info('libvirt-proxy.listening', { dir: domainDir, channels: channels.join(',') });
  }

  private removeDir(domainDir: string): void {
    try {
      rmdirSync(domainDir);
    } catch {
      // not empty (a destination QEMU's socket, another proxy's) or gone: not ours to remove
    }
  }

  async stop(): Promise<void> {
    // The tunnels stay known after stop: their counts are the migration's figures.
    await stopAll([...this.tunnels.values()]);
    if (this.started) this.removeDir(dirname(channelSocket(this.dir, this.options.domain, 'libvirtd')));
    this.started = false;
  }
}
