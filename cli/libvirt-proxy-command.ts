/**
 * `xmig libvirt-proxy`: libvirt's own migration (`virsh migrate`) carried over XIA, the
 * way KubeVirt carries it between pods — libvirt migrates over Unix sockets, and xmig
 * carries each socket's connections between the hosts as STREAMs. Thin shells over
 * mover/libvirt-proxy-source.ts and mover/libvirt-proxy-target.ts.
 */
import { writeFileSync } from 'node:fs';
import { Command, Option } from 'commander';
import { integerOption } from './option-parsers.js';
import { XmigError } from '../shared/errors.js';
import { createLogger, type LogLevel } from '../shared/logger.js';
import { createRegistry, startMetricsServer } from '../shared/metrics.js';
import { systemdNotifier } from '../shared/systemd-notify.js';
import { WellKnownSid, Xid, XidType } from '../shared/xid.js';
import { NodeClient } from '../xianet/api/api-client.js';
import { admitXiaFrom, listenXia } from '../mover/connections.js';
import { CHANNEL_NAMES, type ProxyChannelName } from '../mover/libvirt-proxy-messages.js';
import { DEFAULT_LIBVIRT_PROXY_DIR, DEFAULT_LIBVIRTD_SOCKET, DEFAULT_QEMU_GROUP, virshMigrateCommand } from '../mover/libvirt-proxy-paths.js';
import { connectProxyTarget, LibvirtProxySource } from '../mover/libvirt-proxy-source.js';
import { LibvirtProxyTarget } from '../mover/libvirt-proxy-target.js';
import { DEFAULT_API_SOCKET } from './defaults.js';
import { hostHid } from './host-hid.js';
import { resolveTarget } from '../xianet/names/resolve-target.js';
import { waitForShutdown } from './shutdown.js';

const ALL_CHANNELS = Object.values(CHANNEL_NAMES);

function channelList(value: string): ProxyChannelName[] {
  const names = value.split(',').map((c) => c.trim()).filter(Boolean);
  for (const name of names) {
    if (!ALL_CHANNELS.includes(name as ProxyChannelName)) throw new XmigError('ERR_USAGE', `--channels: "${name}" is none of ${ALL_CHANNELS.join(', ')}`);
  }
  return names as ProxyChannelName[];
}

const shellWord = (word: string): string => (/^[\w@%+=:,./-]+$/.test(word) ? word : `'${word.replace(/'/g, `'\\''`)}'`);

interface Common {
  api: string;
  sid: string;
  dir: string;
  channels?: ProxyChannelName[];
  logLevel: LogLevel;
}

function common(command: Command): Command {
  return command
    .option('--api <socket>', 'the local node API socket', DEFAULT_API_SOCKET)
    .option('--sid <sid>', "the proxy target's SID", WellKnownSid.LIBVIRT.toString())
    .option('--dir <dir>', "the domains' socket directories (the same on both hosts)", DEFAULT_LIBVIRT_PROXY_DIR)
    .option('--channels <list>', `the channels to carry: ${ALL_CHANNELS.join(',')} (default all)`, channelList)
    .addOption(new Option('--log-level <level>', 'log level (JSON lines on stdout)').choices(['error', 'warn', 'info', 'debug']).env('XMIG_LOG_LEVEL').default('info'));
}

function sourceCommand(): Command {
  return common(new Command('source'))
    .description("on the source host, for one domain: the sockets virsh migrate is pointed at, each connection carried to the destination's proxy target")
    .requiredOption('--domain <name>', 'the domain to migrate (its name on the destination)')
    .requiredOption('--to <host>', "the destination host: its name, its HID's DAG, or the proxy target's DAG")
    .option('--qemu-group <group>', "QEMU's group (its NBD client connects to nbd.sock)", DEFAULT_QEMU_GROUP)
    .option('--stats <file>', 'write the bytes carried per channel (JSON) here when stopped')
    .addHelpText(
      'after',
      `
Runs until stopped (Ctrl-C, SIGTERM). Meanwhile, on the source host:
  virsh migrate --live --p2p web1 'qemu+unix:///system?socket=/run/xmig-libvirt/web1/libvirtd.sock' \\
    --migrateuri unix:///run/xmig-libvirt/web1/migration.sock
  (with --copy-storage-all --disks-uri unix:///run/xmig-libvirt/web1/nbd.sock for local disks)
On the destination host: xmig libvirt-proxy target --from <source host>, and the qemu hook
(tools/libvirt/qemu-hook as /etc/libvirt/hooks/qemu).`,
    )
    .action(async (options: Common & { domain: string; to: string; qemuGroup: string; stats?: string }) => {
      const logger = createLogger({ component: 'mover', level: options.logLevel });
      const api = await NodeClient.connect(options.api);
      let proxy: LibvirtProxySource | undefined;
      try {
        const target = await resolveTarget(options.to, api);
        // A host's DAG (ending at its HID) means its proxy target on the libvirt SID.
        const sid = Xid.parse(options.sid);
        const dst = target.sink.type === XidType.SID ? target : target.append(sid);
        proxy = new LibvirtProxySource({
          domain: options.domain,
          connect: connectProxyTarget(api, dst),
          dir: options.dir,
          qemuGroup: options.qemuGroup,
          channels: options.channels,
          logger,
        });
        proxy.onLost((channel, reason) => logger.warn('libvirt-proxy.lost', { channel, vm: options.domain, reason }));
        await proxy.start();
        const uris = proxy.uris;
        logger.info('libvirt-proxy.ready', { vm: options.domain, to: dst.toString(), desturi: uris.desturi, migrateuri: uris.migrateuri, disksUri: uris.disksUri });
        process.stderr.write(`xmig: migrate with\n  ${virshMigrateCommand(options.dir, options.domain).map(shellWord).join(' ')}\n`);
        await waitForShutdown(logger);
      } finally {
        await proxy?.stop();
        await api.close();
      }
      if (options.stats && proxy) writeFileSync(options.stats, JSON.stringify({ role: 'libvirt-proxy-source', vm: options.domain, channels: proxy.counts }));
    });
}

function targetCommand(): Command {
  return common(new Command('target'))
    .description("on the destination host, a daemon: joins the source hosts' STREAMs to this host's libvirtd and to the QEMU sockets of incoming migrations")
    .requiredOption('--from <host...>', 'the source hosts allowed in (their name, DAG or HID): the libvirtd channel is root on this host')
    .option('--libvirt-socket <path>', "this host's libvirtd socket (modular daemons: /run/libvirt/virtqemud-sock)", DEFAULT_LIBVIRTD_SOCKET)
    .option('--metrics-port <port>', 'serve /metrics on this port (0: any free one, logged)', integerOption(0, 65535))
    .addHelpText(
      'after',
      `
Install tools/libvirt/qemu-hook as /etc/libvirt/hooks/qemu too: it makes each incoming
domain's directory in --dir, where its QEMU listens.`,
    )
    .action(async (options: Common & { from: string[]; libvirtSocket: string; metricsPort?: number }) => {
      const logger = createLogger({ component: 'mover', level: options.logLevel });
      const registry = createRegistry({ processMetrics: true });
      const systemd = systemdNotifier({ onError: (error) => logger.warn('systemd.notify-failed', { reason: error.message }) });
      const api = await NodeClient.connect(options.api);
      let target: LibvirtProxyTarget | undefined;
      try {
        const admit = admitXiaFrom(await Promise.all(options.from.map((f) => hostHid(f, api))));
        target = new LibvirtProxyTarget({
          listen: () => listenXia(api, Xid.parse(options.sid)),
          admit,
          dir: options.dir,
          libvirtdSocket: options.libvirtSocket,
          channels: options.channels,
          registry,
          logger,
        });
        await target.start();
        const metrics = options.metricsPort === undefined ? undefined : await startMetricsServer(registry, { port: options.metricsPort, logger });
        systemd.ready(`proxying libvirt migrations on ${target.address}`);
        await waitForShutdown(logger);
        systemd.stop();
        await metrics?.close();
      } finally {
        await target?.stop();
        await api.close();
      }
    });
}

export function libvirtProxyCommand(): Command {
  return new Command('libvirt-proxy')
    .description("libvirt's migration (virsh migrate over Unix sockets) carried between the hosts over XIA")
    .addCommand(sourceCommand())
    .addCommand(targetCommand());
}
