/**
 * `xmig libvirt-proxy target`: the destination host's end of libvirt migrations over XIA,
 * a daemon. It takes STREAMs on the libvirt SID from the source hosts it admits, and
 * joins each to the socket its OPEN names (libvirt-proxy-messages.ts):
 *
 *  - libvirtd: this host's libvirtd RPC socket. Whoever gets this far drives libvirtd as
 *    root, so only sources named with `admit` get in (the command requires --from);
 *  - migration, nbd: <dir>/<domain>/migration.sock and nbd.sock, where the destination
 *    QEMU listens once libvirt has started it for the incoming migration (the qemu hook
 *    makes the directory). A domain's name is held to a file name's characters, so
 *    nothing outside <dir> can be named.
 *
 * It answers ACCEPTED once the socket is connected, or REFUSED with the reason (the
 * socket is not there, nobody listens, the channel is not served here), so the source
 * says why libvirt's connection was dropped. After ACCEPTED the bytes go through
 * untouched; when either side breaks, both are closed.
 */
import { connect as connectUnix, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { XmigError, errorMessage } from '../shared/errors.js';
import { silentLogger, type Logger } from '../shared/logger.js';
import { Counter, Gauge, type Registry } from '../shared/metrics.js';
import type { Startable } from '../shared/startable.js';
import type { Listening } from './connections.js';
import { splice, type Splice } from './byte-splice.js';
import {
  CHANNEL_NAMES,
  encodeProxyMessage,
  ProxyChannel,
  ProxyMessageReader,
  proxyMessageName,
  ProxyMessageType,
  type ProxyChannelName,
  type ProxyMessage,
} from './libvirt-proxy-messages.js';
import { channelSocket, DEFAULT_LIBVIRT_PROXY_DIR, DEFAULT_LIBVIRTD_SOCKET } from './libvirt-proxy-paths.js';
import { StreamIntake } from './stream-intake.js';

export interface LibvirtProxyTargetOptions {
  /** Where sources reach it: the libvirt SID on this host's node. */
  listen: () => Promise<Listening>;
  /** Why a stream may not come in (not an allowed source host), or undefined to admit it. */
  admit: (stream: Duplex) => string | undefined;
  /** The domains' socket directories (default /run/xmig-libvirt). */
  dir?: string;
  /** This host's libvirtd socket (default /run/libvirt/libvirt-sock). */
  libvirtdSocket?: string;
  /** The channels served (default all three). */
  channels?: readonly ProxyChannelName[];
  /** A stream must say what it is within this long (default 5 s). */
  openTimeoutMs?: number;
  /** Proxied connections at once, over all domains (default 64); more are refused. */
  maxConnections?: number;
  /** Where its metrics go (xmig_libvirt_proxy_*). */
  registry?: Registry;
  logger?: Logger;
}

type Open = Extract<ProxyMessage, { type: typeof ProxyMessageType.OPEN }>;

export interface ChannelCounts {
  connections: number;
  /** Bytes from the source host, and to it. */
  fromSource: number;
  toSource: number;
  /** OPENs answered REFUSED. */
  refused: number;
}

export class LibvirtProxyTarget implements Startable {
  private server: Listening | undefined;
  private readonly intake: StreamIntake<ProxyMessage, Open>;
  private readonly splices = new Set<Splice>();
  /** Destination sockets being connected, not yet joined. */
  private readonly connecting = new Set<Socket>();
  /** Streams answered REFUSED, given a moment to take the answer. */
  private readonly refusing = new Map<Duplex, NodeJS.Timeout>();
  private readonly logger: Logger;
  private readonly served: ReadonlySet<ProxyChannelName>;
  private readonly totals = new Map<ProxyChannelName, ChannelCounts>();
  private stopping = false;

  constructor(private readonly options: LibvirtProxyTargetOptions) {
    this.logger = (options.logger ?? silentLogger()).child({ component: 'mover', role: 'libvirt-proxy-target' });
    this.served = new Set(options.channels ?? (Object.values(CHANNEL_NAMES) as ProxyChannelName[]));
    for (const name of Object.values(CHANNEL_NAMES)) this.totals.set(name, { connections: 0, fromSource: 0, toSource: 0, refused: 0 });
    this.intake = new StreamIntake<ProxyMessage, Open>({
      resource: 'libvirt-stream',
      event: 'libvirt-proxy.stream-refused',
      reader: () => new ProxyMessageReader(),
      isOpening: (m): m is Open => m.type === ProxyMessageType.OPEN,
      nameOf: (m) => proxyMessageName(m.type),
      admit: options.admit,
      openTimeoutMs: options.openTimeoutMs,
      onOpen: (open, stream, rest) => this.onOpen(open, stream, rest),
      logger: this.logger,
    });
    if (options.registry) this.registerMetrics(options.registry);
  }

  private registerMetrics(registry: Registry): void {
    const totals = this.totals;
    const perChannel = (name: string, help: string, value: (c: ChannelCounts) => Array<[Record<string, string>, number]>): void => {
      new Counter({
        name,
        help,
        labelNames: name.endsWith('_bytes_total') ? ['channel', 'direction'] : ['channel'],
        registers: [registry],
        collect() {
          this.reset();
          for (const [channel, counts] of totals) for (const [labels, n] of value(counts)) this.inc({ channel, ...labels }, n);
        },
      });
    };
    perChannel('xmig_libvirt_proxy_connections_total', 'Proxied connections joined to a socket on this host, by channel', (c) => [[{}, c.connections]]);
    perChannel('xmig_libvirt_proxy_bytes_total', 'Bytes carried by proxied connections, by channel and direction (from_source: to this host)', (c) => [
      [{ direction: 'from_source' }, c.fromSource],
      [{ direction: 'to_source' }, c.toSource],
    ]);
    perChannel('xmig_libvirt_proxy_opens_refused_total', 'OPENs answered REFUSED (no socket to join, channel not served, cap), by channel', (c) => [[{}, c.refused]]);
    this.intake.refusals.register(registry, 'xmig_libvirt_proxy_refusals_total', 'STREAMs refused at the door (not an allowed source, too many waiting, silent, malformed), by resource and reason');
    const open = (): number => this.splices.size;
    new Gauge({
      name: 'xmig_libvirt_proxy_open_connections',
      help: 'Proxied connections open now',
      registers: [registry],
      collect() {
        this.set(open());
      },
    });
  }

  /** Streams refused at the door, by reason (forbidden, cap, timeout, malformed). */
  get refusals(): Record<string, number> {
    return this.intake.refusals.snapshot();
  }

  get counts(): Record<ProxyChannelName, ChannelCounts> {
    return Object.fromEntries([...this.totals].map(([name, c]) => [name, { ...c }])) as Record<ProxyChannelName, ChannelCounts>;
  }

  /** Where sources connect (once started). */
  get address(): string {
    if (!this.server) throw new XmigError('ERR_STATE', 'the libvirt proxy target is not started');
    return this.server.address;
  }

  async start(): Promise<void> {
    if (this.server) return;
    this.stopping = false;
    this.server = await this.options.listen();
    void this.acceptLoop(this.server);
    this.logger.info('libvirt-proxy.target-ready', { address: this.server.address, channels: [...this.served].join(',') });
  }

  private async acceptLoop(server: Listening): Promise<void> {
    for (;;) {
      let stream: Duplex;
      try {
        stream = await server.accept();
      } catch {
        return; // closed
      }
      this.intake.take(stream);
    }
  }

  private pathOf(open: Open): string {
    const name = CHANNEL_NAMES[open.channel];
    return open.channel === ProxyChannel.LIBVIRTD
      ? (this.options.libvirtdSocket ?? DEFAULT_LIBVIRTD_SOCKET)
      : channelSocket(this.options.dir ?? DEFAULT_LIBVIRT_PROXY_DIR, open.domain, name);
  }

  private refuse(stream: Duplex, channel: ProxyChannelName, domain: string, reason: string): void {
    this.totals.get(channel)!.refused++;
    this.logger.warn('libvirt-proxy.refused', { channel, vm: domain, reason });
    stream.end(encodeProxyMessage({ type: ProxyMessageType.REFUSED, reason }));
    // A source that does not take the answer is not waited on.
    const timer = setTimeout(() => stream.destroy(), 5000);
    this.refusing.set(stream, timer);
    stream.once('close', () => {
      clearTimeout(timer);
      this.refusing.delete(stream);
    });
  }

  private onOpen(open: Open, stream: Duplex, rest: Buffer): void {
    const channel = CHANNEL_NAMES[open.channel];
    if (this.stopping) return void stream.destroy();
    if (!this.served.has(channel)) {
      this.intake.count('forbidden');
      return this.refuse(stream, channel, open.domain, `the ${channel} channel is not served on this host`);
    }
    const max = this.options.maxConnections ?? 64;
    if (this.splices.size + this.connecting.size >= max) {
      this.intake.count('cap');
      return this.refuse(stream, channel, open.domain, `this host carries at most ${max} proxied connections at once`);
    }
    const path = this.pathOf(open);
    const local = connectUnix(path);
    this.connecting.add(local);
    const failed = (error: NodeJS.ErrnoException): void => {
      this.connecting.delete(local);
      local.destroy();
      const hint =
        channel === 'libvirtd'
          ? 'is libvirtd running, and is this its socket (--libvirt-socket)?'
          : `is the destination QEMU waiting for this migration (the migration URI unix://${path}), and does the qemu hook make its directory?`;
      this.refuse(stream, channel, open.domain, `cannot connect to ${path}: ${error.code ?? errorMessage(error)}; ${hint}`);
    };
    local.once('error', failed);
    stream.once('close', () => {
      if (this.connecting.delete(local)) local.destroy();
    });
    local.once('connect', () => {
      local.off('error', failed);
      local.on('error', () => undefined);
      this.connecting.delete(local);
      if (stream.destroyed || this.stopping) return void local.destroy();
      const counts = this.totals.get(channel)!;
      counts.connections++;
      stream.write(encodeProxyMessage({ type: ProxyMessageType.ACCEPTED }));
      if (rest.length) {
        counts.fromSource += rest.length;
        local.write(rest);
      }
      const joined = splice(stream, local, (direction, bytes) => {
        if (direction === 'aToB') counts.fromSource += bytes;
        else counts.toSource += bytes;
      });
      this.splices.add(joined);
      const source = (stream as { remote?: { toString(): string } }).remote?.toString();
      this.logger.info('libvirt-proxy.joined', { channel, vm: open.domain, path, ...(source ? { source } : {}) });
      void joined.closed.then((failure) => {
        this.splices.delete(joined);
        this.logger.info('libvirt-proxy.closed', { channel, vm: open.domain, bytes: counts.fromSource + counts.toSource, ...(failure ? { reason: failure } : {}) });
      });
    });
  }

  async stop(): Promise<void> {
    this.stopping = true;
    this.intake.close();
    const server = this.server;
    this.server = undefined;
    await server?.close().catch(() => undefined);
    for (const socket of this.connecting) socket.destroy();
    this.connecting.clear();
    for (const [stream, timer] of this.refusing) {
      clearTimeout(timer);
      stream.destroy();
    }
    this.refusing.clear();
    const closing = [...this.splices].map((s) => {
      s.destroy();
      return s.closed;
    });
    await Promise.all(closing);
  }
}
