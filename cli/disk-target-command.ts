/**
 * `xmig disk-target`: a thin shell over mover/disk-target.ts, run on the destination host
 * next to the destination QEMU (started with -incoming and its own, empty, disk image).
 * It serves one disk migration and exits: 0 once the destination has resumed on the
 * migrated disk, 1 if the migration failed (the partial disk discarded). Ctrl-C or a
 * stop aborts a migration in progress the same way. JSON log lines go to stdout.
 */
import { writeFileSync } from 'node:fs';
import { Command, Option } from 'commander';
import { createLogger, type LogLevel } from '../shared/logger.js';
import { Xid, WellKnownSid } from '../shared/xid.js';
import { NodeClient } from '../xianet/api/api-client.js';
import { admitTcpFrom, admitXiaFrom, listenTcp } from '../mover/connections.js';
import { DiskTarget, listenOnDiskSid } from '../mover/disk-target.js';
import { parseSocketAddress } from '../xianet/udp-link.js';
import { DEFAULT_API_SOCKET } from './defaults.js';
import { ExitCode } from './exit-codes.js';
import { hostHid } from './host-hid.js';
import { XmigError } from '../shared/errors.js';

interface DiskTargetFlags {
  qmp: string;
  transport: 'xia' | 'tcp';
  listen: string;
  nbdListen?: string;
  api: string;
  sid: string;
  diskDevice?: string;
  from?: string[];
  discard: boolean;
  stats?: string;
  logLevel: LogLevel;
}

export function diskTargetCommand(): Command {
  return new Command('disk-target')
    .description("full migration, destination side: export the destination QEMU's disk to one migration's mirror over XIA, then give it back (or discard it)")
    .requiredOption('--qmp <socket>', "the destination QEMU's QMP socket (a QEMU started with -incoming)")
    .addOption(new Option('-t, --transport <kind>', 'xia: sources reach it on the disk SID and NBD goes through their tunnel; tcp: the TCP/IP baseline (with --listen, --nbd-listen)').choices(['xia', 'tcp']).default('xia'))
    .option('--api <socket>', 'the local node API socket (xia)', DEFAULT_API_SOCKET)
    .option('--listen <host:port>', 'where sources reach it (tcp)', '0.0.0.0:4445')
    .option('--nbd-listen <host:port>', "export the disk on TCP here: QEMU's own NBD between the hosts, no tunnel (tcp)")
    .option('--sid <sid>', 'the SID to listen on', WellKnownSid.DISK.toString())
    .option('--disk-device <name>', 'which disk, if the VM has several: device id, qdev path, drive id or node name')
    .option('--from <source...>', 'take the migration only from these source hosts: a DAG, name or HID (xia), an IP address (tcp)')
    .option('--no-discard', 'leave a failed migration\'s partial disk as it is (default: wipe it)')
    .option('--stats <file>', 'write the outcome (JSON) here when done')
    .addOption(new Option('--log-level <level>', 'log level (JSON lines on stdout)').choices(['error', 'warn', 'info', 'debug']).env('XMIG_LOG_LEVEL').default('info'))
    .addHelpText(
      'after',
      `
Run it on the destination host, next to its QEMU started with -incoming 'exec:xmig recv' and the
(empty, big enough) destination disk; the source runs xmig migrate --disk.

Exit status: 0 the destination runs on the migrated disk, 1 the migration failed (disk discarded).`,
    )
    .action(async (options: DiskTargetFlags) => {
      const logger = createLogger({ component: 'mover', level: options.logLevel });
      const api = options.transport === 'xia' ? await NodeClient.connect(options.api) : undefined;
      const onSignal = (): void => void target.abort('disk-target stopped by a signal');
      let target: DiskTarget;
      try {
        const tcp = parseSocketAddress(options.listen);
        const listen = api ? listenOnDiskSid(api, Xid.parse(options.sid)) : () => listenTcp(tcp.host, tcp.port);
        const admit = !options.from ? undefined : api ? admitXiaFrom(await Promise.all(options.from.map((f) => hostHid(f, api)))) : admitTcpFrom(options.from);
        if (options.nbdListen && api) throw new XmigError('ERR_CONFIG', '--nbd-listen is the TCP/IP baseline: use it with --transport tcp');
        const nbdListen = options.nbdListen ? parseSocketAddress(options.nbdListen) : undefined;
        target = new DiskTarget({ qmp: options.qmp, listen, nbdListen, disk: options.diskDevice, admit, discard: options.discard, logger });
        await target.start();
        process.on('SIGINT', onSignal).on('SIGTERM', onSignal);
        logger.info('disk-target.listening', { address: await target.address() });
        const outcome = await target.outcome;
        await target.stop();
        if (options.stats) writeFileSync(options.stats, `${JSON.stringify({ role: 'disk-target', ...outcome })}\n`);
        if (outcome.status !== 'completed') {
          process.stderr.write(`xmig disk-target: ${outcome.reason ?? 'failed'}${outcome.discarded ? ' (the partial disk was discarded)' : ''}\n`);
          process.exitCode = ExitCode.FAILURE;
        }
      } finally {
        process.off('SIGINT', onSignal).off('SIGTERM', onSignal);
        await api?.close();
      }
    });
}

