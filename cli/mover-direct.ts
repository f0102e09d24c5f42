/**
 * `xmig send` / `xmig recv` running the sender or receiver in this process, on its own
 * connection to the local node's API (or over TCP): the direct path. Loaded only when
 * it runs (mover-commands.ts).
 */
import { Dag } from '../shared/dag.js';
import { errorMessage } from '../shared/errors.js';
import type { Logger } from '../shared/logger.js';
import { Xid } from '../shared/xid.js';
import { writeFileAtomic } from '../shared/atomic-file.js';
import { parseSocketAddress } from '../xianet/udp-link.js';
import { NodeClient } from '../xianet/api/api-client.js';
import { resolveTarget } from '../xianet/names/resolve-target.js';
import { TcpPublisher, TcpRetriever, XiaPublisher, XiaRetriever } from '../mover/chunk-exchange.js';
import { admitTcpFrom, admitXiaFrom, connectTcp, connectXia, listenTcp, listenXia } from '../mover/connections.js';
import { MigrationReceiver } from '../mover/receiver.js';
import { growStdioPipe, pipeFields } from '../mover/pipe-capacity.js';
import { openInput } from '../mover/recycled-reads.js';
import { MigrationSender } from '../mover/sender.js';
import { hostHid } from './host-hid.js';
import { moverMetrics, type RecvFlags, type SendFlags } from './mover-flags.js';

/** `xmig send` with its own stack: QEMU's stream on stdin, cut into chunks, published on the local node (or served over TCP). */
export async function sendDirect(options: SendFlags, logger: Logger): Promise<void> {
  let sender: MigrationSender | undefined;
  let api: NodeClient | undefined;
  const metrics = await moverMetrics('send', options, logger, () => {
    const s = sender?.snapshot();
    return { bytes: s?.bytes ?? 0, chunks: { published: (s?.chunks ?? 0) - (s?.zeroChunks ?? 0), zero: s?.zeroChunks ?? 0 }, rounds: s?.rounds, reconnects: s?.reconnects };
  });
  // QEMU's pipe read into recycled memory (the round cutter copies each read into a chunk).
  const stdin = openInput();
  if (stdin.pipe) logger.info('send.pipe', { phase: 'setup', ...pipeFields(stdin.pipe) });
  try {
    api = options.transport === 'xia' ? await NodeClient.connect(options.api) : undefined;
    let connect;
    let source = '';
    if (api) {
      const dst = await resolveTarget(options.to, api);
      connect = connectXia(api, dst);
      source = (await api.info()).address.toString();
    } else {
      const { host, port } = parseSocketAddress(options.to);
      connect = connectTcp(host, port);
    }
    sender = new MigrationSender({
      input: stdin.input,
      connect,
      publisher: api ? new XiaPublisher(api) : new TcpPublisher(),
      mode: options.transport,
      source,
      chunkBytes: options.chunkKb * 1024,
      roundBytes: options.roundKb * 1024,
      maxUnackedBytes: options.windowMb === undefined ? undefined : options.windowMb * 1024 * 1024,
      resumeDeadlineMs: options.resumeDeadlineMs,
      logger,
      onProgress: () => metrics?.metrics.setPhase('transfer'),
    });
    const report = await sender.run();
    await metrics?.finish('done');
    if (options.stats) writeFileAtomic(options.stats, JSON.stringify({ role: 'send', transport: options.transport, ...report }));
  } catch (error) {
    await metrics?.finish('failed');
    // QEMU must see its pipe break at once, so it fails the migration and the VM runs on.
    stdin.destroy();
    // xmig migrate reads the real reason here: QEMU itself only sees a broken pipe.
    if (options.stats) {
      try {
        writeFileAtomic(options.stats, JSON.stringify({ role: 'send', transport: options.transport, ...sender?.snapshot(), error: errorMessage(error) }));
      } catch {
        // the figures are a courtesy; the exit status is what QEMU acts on
      }
    }
    throw error;
  } finally {
    await api?.close();
  }
}

/** `xmig recv` with its own stack: the chunks fetched and verified here, the stream out on stdout. */
export async function recvDirect(options: RecvFlags, logger: Logger): Promise<void> {
  let retriever: XiaRetriever | TcpRetriever | undefined;
  const metrics = await moverMetrics('recv', options, logger, () => ({
    bytes: retriever?.stats.bytes ?? 0,
    chunks: { verified: retriever?.stats.fetched ?? 0, refetched: retriever?.stats.corrupt ?? 0 },
  }));
  const api = options.transport === 'xia' ? await NodeClient.connect(options.api) : undefined;
  try {
    const listening = api
      ? await listenXia(api, Xid.parse(options.sid))
      : await listenTcp(parseSocketAddress(options.listen).host, parseSocketAddress(options.listen).port);
    const admit = !options.from ? undefined : api ? admitXiaFrom(await Promise.all(options.from.map((f) => hostHid(f, api)))) : admitTcpFrom(options.from);
    logger.info('recv.listening', { address: listening.address, transport: options.transport });
    // QEMU's exec: pipe holds 1 MiB rather than 64 KiB.
    const pipe = growStdioPipe(1);
    if (pipe) logger.info('recv.pipe', { phase: 'setup', ...pipeFields(pipe) });
    const receiver = new MigrationReceiver({
      output: process.stdout,
      accept: () => listening.accept(),
      admit,
      retriever: (mode, source) => {
        retriever = mode === 'xia' && api ? new XiaRetriever(api, Dag.parse(source)) : new TcpRetriever();
        metrics?.metrics.setPhase('transfer');
        return retriever;
      },
      resumeDeadlineMs: options.resumeDeadlineMs,
      logger,
    });
    const report = await receiver.run().catch(async (error: unknown) => {
      await metrics?.finish('failed');
      throw error;
    });
    await metrics?.finish('done');
    await listening.close();
    if (options.stats) writeFileAtomic(options.stats, JSON.stringify({ role: 'recv', transport: options.transport, ...report }));
  } finally {
    await api?.close();
  }
}
