/**
 * `xmig send --via-node` / `xmig recv --via-node` (and `--qemu-socket`): the local node
 * runs the migration (mover/mover-service.ts); this process hands it QEMU's pipe or
 * copies the stream, and exits with the result. Loaded only when it runs
 * (mover-commands.ts), and light: no chunk, API or schema code.
 */
import { resolve as resolvePath } from 'node:path';
import { Dag } from '../shared/dag.js';
import { errorMessage, XmigError } from '../shared/errors.js';
import type { Logger } from '../shared/logger.js';
import { writeFileAtomic } from '../shared/atomic-file.js';
import { migrateInNode, moverSocketOf, recvViaNode, sendViaNode } from '../mover/mover-client.js';
import { openInput, type OpenedInput } from '../mover/recycled-reads.js';
import { describePipe } from '../mover/stdio-handover.js';
import { growStdioPipe, pipeFields } from '../mover/pipe-capacity.js';
import { moverMetrics, type RecvFlags, type SendFlags } from './mover-flags.js';

/** `send --via-node`: the stream into the local node's mover (mover-service.ts); the node does the rest. */
export async function sendThroughNode(options: SendFlags, logger: Logger): Promise<void> {
  if (options.transport !== 'xia') throw new XmigError('ERR_CONFIG', '--via-node moves chunks over XIA only');
  const started = performance.now();
  let bytes = 0;
  const metrics = await moverMetrics('send', options, logger, () => ({ bytes, chunks: {} }));
  let stdin: OpenedInput | undefined;
  try {
    let to: Dag;
    if (/^\s*(RE|DAG)(\s|$)/.test(options.to)) to = Dag.parse(options.to);
    else {
      // A name: resolved through the node's API (loaded only for this; xmig migrate passes a DAG).
      const [{ NodeClient }, { resolveTarget }] = await Promise.all([import('../xianet/api/api-client.js'), import('../xianet/names/resolve-target.js')]);
      const api = await NodeClient.connect(options.api);
      try {
        to = await resolveTarget(options.to, api);
      } finally {
        await api.close();
      }
    }
    const request = {
      op: 'send' as const,
      to: to.toString(),
      chunkBytes: options.chunkKb * 1024,
      roundBytes: options.roundKb * 1024,
      maxUnackedBytes: options.windowMb === undefined ? undefined : options.windowMb * 1024 * 1024,
      resumeDeadlineMs: options.resumeDeadlineMs,
    };
    const onConnected = (): void => {
      metrics?.metrics.setPhase('transfer');
      logger.info('send.connected', { phase: 'connect', mode: 'xia', via: 'node', ms: Math.round(performance.now() - started) });
    };
    // With QEMU's socket, killing this process (Ctrl-C) closes ours to the node: it then breaks QEMU's channel.
    let report: Record<string, unknown>;
    if (options.qemuSocket === undefined) {
      stdin = openInput();
      report = await sendViaNode(moverSocketOf(options.api), request, stdin.input, {
        onConnected,
        onBytes: (n) => (bytes = n),
        // QEMU's exec: pipe: the node may read it itself, and nothing is copied through here.
        stdio: describePipe(0),
        onHandover: (taken, reason) => logger.info('send.pipe', { phase: 'setup', via: 'node', handedOver: taken, reason, ...pipeFields(stdin?.pipe) }),
      });
    } else {
      report = await migrateInNode(moverSocketOf(options.api), { ...request, qemuSocket: resolvePath(options.qemuSocket) }, {
        onConnected,
        onQemuListening: (path) => logger.info('send.qemu-listening', { phase: 'setup', via: 'node', path }),
      });
    }
    if (typeof report['bytes'] === 'number') bytes = report['bytes'];
    await metrics?.finish('done');
    logger.info('send.done', { phase: 'done', via: 'node', bytes, ms: Math.round(performance.now() - started) });
    if (options.stats) writeFileAtomic(options.stats, JSON.stringify({ role: 'send', transport: 'xia', via: 'node', ...report }));
  } catch (error) {
    await metrics?.finish('failed');
    // QEMU must see its pipe break at once, so it fails the migration and the VM runs on.
    if (stdin) stdin.destroy();
    else process.stdin.destroy();
    if (options.stats) {
      try {
        writeFileAtomic(options.stats, JSON.stringify({ role: 'send', transport: 'xia', via: 'node', bytes, error: errorMessage(error) }));
      } catch {
        // the exit status is what QEMU acts on
      }
    }
    throw error;
  }
}

/** `recv --via-node`: the local node receives (mover-service.ts); we only pass its stream to stdout. */
export async function recvThroughNode(options: RecvFlags, logger: Logger): Promise<void> {
  if (options.transport !== 'xia') throw new XmigError('ERR_CONFIG', '--via-node moves chunks over XIA only');
  const started = performance.now();
  let bytes = 0;
  const metrics = await moverMetrics('recv', options, logger, () => ({ bytes, chunks: {} }));
  try {
    let from: string[] | undefined;
    if (options.from) {
      const [{ NodeClient }, { hostHid }] = await Promise.all([import('../xianet/api/api-client.js'), import('./host-hid.js')]);
      const api = await NodeClient.connect(options.api);
      try {
        from = (await Promise.all(options.from.map((f) => hostHid(f, api)))).map((hid) => hid.toString());
      } finally {
        await api.close();
      }
    }
    const request = { op: 'recv' as const, sid: options.sid, from, resumeDeadlineMs: options.resumeDeadlineMs };
    const onListening = (address: string): void => logger.info('recv.listening', { address, transport: 'xia', via: 'node' });
    // QEMU's exec: pipe holds 1 MiB rather than 64 KiB, whoever writes it (the node, or this process).
    const pipe = options.qemuSocket === undefined ? growStdioPipe(1) : undefined;
    const report =
      options.qemuSocket === undefined
        ? await recvViaNode(moverSocketOf(options.api), request, process.stdout, {
            onListening,
            // QEMU's exec: pipe: the node may write it itself, and nothing is copied through here.
            stdio: describePipe(1),
            onHandover: (taken, reason) => logger.info('recv.pipe', { phase: 'setup', via: 'node', handedOver: taken, reason, ...pipeFields(pipe) }),
            onBytes: (n) => {
              if (bytes === 0) metrics?.metrics.setPhase('transfer');
              bytes = n;
            },
          })
        : await migrateInNode(moverSocketOf(options.api), { ...request, qemuSocket: resolvePath(options.qemuSocket) }, { onListening });
    if (typeof report['bytes'] === 'number') bytes = report['bytes'];
    await metrics?.finish('done');
    logger.info('recv.done', { phase: 'done', via: 'node', bytes, ms: Math.round(performance.now() - started) });
    if (options.stats) writeFileAtomic(options.stats, JSON.stringify({ role: 'recv', transport: 'xia', via: 'node', ...report, seconds: (performance.now() - started) / 1000 }));
  } catch (error) {
    await metrics?.finish('failed');
    throw error;
  }
}
