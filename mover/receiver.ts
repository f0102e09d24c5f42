/**
 * `xmig recv`: the destination QEMU reads the migration stream from our stdout.
 * For each announced round we fetch the chunks (many at once), each verified
 * against its CID, write them out strictly in order, and acknowledge the round once
 * it is all written. Zero chunks are not fetched; a chunk whose CID we saw recently
 * is taken from a small cache instead of being fetched twice.
 *
 * If the control connection is lost we wait (up to `resumeDeadlineMs`) for the
 * sender to come back, tell it where we are, and go on from there. The fetches in
 * flight go on meanwhile: chunks are named by their content, the sender keeps them
 * published until we acknowledge them, and the chunk path may well be up while the
 * control connection is not; the re-offered rounds we already have are skipped. Who
 * may connect, and which HELLO binds the session, is receiver-intake.ts's job.
 *
 * Bounded: offers may run at most `MAX_EARLY_ROUNDS` ahead of the next round to
 * queue, and at most `MAX_QUEUED_BYTES` may be offered but not yet written; a sender
 * that breaks either fails the migration (ours never does: it offers in order, within
 * its window).
 */
import type { Duplex, Writable } from 'node:stream';
import { XmigError, errorMessage } from '../shared/errors.js';
import { silentLogger, type Logger } from '../shared/logger.js';
import type { ControlChannel } from './control-channel.js';
import { byteLength, ChunkKind, MessageType, type ControlMessage, type OfferedChunk } from './control-messages.js';
import type { ChunkBytes, ChunkRetriever } from './chunk-exchange.js';
import { ReceiverIntake, type SessionStart } from './receiver-intake.js';

export interface ReceiverOptions {
  output: NodeJS.WritableStream;
  /** The next control connection from a sender (resolves when one arrives). */
  accept: () => Promise<Duplex>;
  /** Why a connection may not migrate to us (not an allowed sender), or undefined to admit it. */
  admit?: (stream: Duplex) => string | undefined;
  /** A new connection must say HELLO within this long (default 5 s). */
  helloTimeoutMs?: number;
  /** Builds the chunk retriever for the sender's mode and chunk source. */
  retriever: (mode: 'xia' | 'tcp', source: string) => ChunkRetriever;
  resumeDeadlineMs?: number;
  /** Bytes of recently received chunks kept to avoid fetching one twice (default 64 MiB). */
  cacheBytes?: number;
  logger?: Logger;
}

export interface ReceiveReport {
  bytes: number;
  chunks: number;
  zeroChunks: number;
  cachedChunks: number;
  rounds: number;
  reconnects: number;
  seconds: number;
  /** ms from the first OFFER to DONE acknowledged. */
  transferMs: number;
  /** Connections and sessions turned away, as "resource/reason": count. */
  refused: Record<string, number>;
}

/** Rounds an offer may be ahead of the next one to queue (the sender offers in order: 0 ahead). */
export const MAX_EARLY_ROUNDS = 256;
/** Bytes offered and not yet written (the sender's window is 16 MiB by default). */
export const MAX_QUEUED_BYTES = 1024 * 1024 * 1024;

interface Job {
  round: number;
  index: number;
  last: boolean;
  generation: number;
  length: number;
  data: Promise<ChunkBytes>;
}

export class MigrationReceiver {
  private readonly intake: ReceiverIntake;
  private retriever: ChunkRetriever | undefined;
  private channel: ControlChannel | undefined;
  private sessionStarted: (() => void) | undefined;
  private resumeTimer: NodeJS.Timeout | undefined;
  private generation = 0;
  private readonly queue: Job[] = [];
  private queuedBytes = 0;
  /** The next round to queue, and offers that came ahead of it (kept until their turn). */
  private nextOffer = 0;
  private readonly early = new Map<number, OfferedChunk[]>();
  /** The next chunk to write: round and index within it. */
  private next = { round: 0, index: 0 };
  private done: { rounds: number; bytes: number } | undefined;
  private finished = false;
  private failure: Error | undefined;
  private wakeWriter: (() => void) | undefined;
  private readonly cache = new Map<string, { data: ChunkBytes; length: number }>();
  private cacheSize = 0;
  /**
   * Chunks in memory their retriever lends (in the node), with how many still hold each:
   * its write (one per time it is queued) and the cache. The last to let go gives the
   * memory back to be filled again.
   */
  private readonly held = new Map<ChunkBytes, { holders: number; release: (data: ChunkBytes) => void }>();
  private readonly logger: Logger;
  private readonly report = { bytes: 0, chunks: 0, zeroChunks: 0, cachedChunks: 0, reconnects: 0 };
  private firstOfferAt: number | undefined;
  private readonly zero = Buffer.alloc(1024 * 1024);
  /**
   * Who waits on a fetch and must hear of a failure first (the writer). Not a promise
   * raced against each fetch: every Promise.race on one long-lived promise leaves a
   * reaction on it holding that race's outcome, i.e. every chunk the migration wrote,
   * until the receiver itself is collected (a 256 MiB transfer kept 256 MiB).
   */
  private readonly failureWaiters = new Set<(error: Error) => void>();

  constructor(private readonly options: ReceiverOptions) {
    this.logger = (options.logger ?? silentLogger()).child({ component: 'mover', role: 'recv' });
    this.intake = new ReceiverIntake({
      accept: options.accept,
      admit: options.admit,
      helloTimeoutMs: options.helloTimeoutMs,
      committed: () => this.report.bytes > 0 || this.next.round > 0 || this.next.index > 0,
      onSession: (start) => this.onSession(start),
      onMessage: (message, channel) => this.onMessage(message, channel),
      logger: this.logger,
    });
  }

  async run(): Promise<ReceiveReport> {
    const started = performance.now();
    this.intake.start();
    try {
      if (!this.failure) await new Promise<void>((resolve) => (this.sessionStarted = resolve));
      await this.write();
      await this.channel?.end();
    } catch (error) {
      // Tell the sender why, so it fails now (and QEMU with it) instead of waiting to resume.
      const channel = this.channel;
      if (channel && !channel.closed) {
        await channel.send({ type: MessageType.ERROR, message: errorMessage(error) }).catch(() => undefined);
        channel.close(`recv failed: ${errorMessage(error)}`);
      }
      throw error;
    } finally {
      this.finished = true;
      this.intake.stop();
      clearTimeout(this.resumeTimer);
      // Whatever is still being fetched is for nobody now (XIA: the node stops at once).
      this.retriever?.cancel?.();
    }
    const seconds = (performance.now() - started) / 1000;
    this.logger.info('recv.done', { phase: 'done', bytes: this.report.bytes, rounds: this.done?.rounds, ms: Math.round(seconds * 1000) });
    return {
      ...this.report,
      rounds: this.done?.rounds ?? 0,
      seconds,
      transferMs: Math.round(performance.now() - (this.firstOfferAt ?? started)),
      refused: this.intake.refusals.snapshot(),
    };
  }

  /** Ends the migration with `error` (its owner gave up on it): run() rejects, and the other side is told. */
  abort(error: Error): void {
    this.fail(error);
  }

  /** `promise`'s outcome, or the failure as soon as there is one; nothing stays attached to anything once it settles. */
  private unlessFailed<T>(promise: Promise<T>): Promise<T> {
    if (this.failure) return Promise.reject(this.failure);
    return new Promise<T>((resolve, reject) => {
      const waiter = (error: Error): void => {
        this.failureWaiters.delete(waiter);
        reject(error);
      };
      this.failureWaiters.add(waiter);
      promise.then(
        (value) => {
          this.failureWaiters.delete(waiter);
          resolve(value);
        },
        (error: unknown) => {
          this.failureWaiters.delete(waiter);
          reject(error as Error);
        },
      );
    });
  }

  private fail(error: Error): void {
    this.failure ??= error;
    for (const waiter of [...this.failureWaiters]) waiter(this.failure);
    this.wakeWriter?.();
    // Still waiting for the first sender: the writer's loop sees the failure and throws.
    this.sessionStarted?.();
    this.sessionStarted = undefined;
  }

  /** A connection said HELLO for the session (the first, a resumption, or a replacement). */
  private onSession({ channel, hello, resumed, replaced }: SessionStart): void {
    const mode = hello.mode === 0 ? 'xia' : 'tcp';
    if (replaced) {
      // The old session wrote nothing: start afresh for the new one. Its fetches stop
      // now (the node gives their room back), and the writer waiting on one of them
      // goes on to the new session's (a fetch that never came would hold it forever).
      this.dropQueued();
      this.nextOffer = 0;
      this.retriever?.cancel?.();
      this.retriever = undefined;
      this.firstOfferAt = undefined;
    }
    clearTimeout(this.resumeTimer);
    this.resumeTimer = undefined;
    this.channel = channel;
    channel.keepAlive();
    if (resumed) this.report.reconnects++;
    channel.onClose((reason) => {
      if (this.finished || this.channel !== channel) return;
      this.logger.warn('recv.control-lost', { reason });
      this.awaitResume();
    });
    this.retriever ??= this.options.retriever(mode, hello.source);
    this.retriever.attach?.(channel);
    // The sender offers again from the round we are writing; what is queued stays
    // queued (its fetches go on), and the offers of it that come again are skipped.
    if (!resumed) this.nextOffer = this.next.round;
    this.logger.info('recv.hello', { mode, source: hello.source, nextRound: this.next.round, resumed });
    void channel.send({ type: MessageType.WELCOME, session: hello.session, nextRound: this.next.round }).catch(() => undefined);
    this.sessionStarted?.();
    this.sessionStarted = undefined;
  }

  /** Fetches in flight belong to the lost connection's offers: they will be offered again. */
  private dropQueued(): void {
    this.generation++;
    this.queue.length = 0;
    this.queuedBytes = 0;
    this.early.clear();
  }

  /** The session's connection is gone: the sender has `resumeDeadlineMs` to come back (fetches go on meanwhile). */
  private awaitResume(): void {
    const deadline = this.options.resumeDeadlineMs ?? 10_000;
    clearTimeout(this.resumeTimer);
    this.resumeTimer = setTimeout(() => this.fail(new XmigError('ERR_MIGRATION', `sender did not come back within ${deadline} ms`)), deadline);
  }

  private onMessage(message: ControlMessage, channel: ControlChannel): void {
    switch (message.type) {
      case MessageType.OFFER:
        this.firstOfferAt ??= performance.now();
        this.onOffer(message.round, message.chunks);
        return;
      case MessageType.DATA:
        this.retriever?.deliver?.(message.cid, message.data);
        return;
      case MessageType.DONE:
        this.done = { rounds: message.rounds, bytes: message.bytes };
        this.wakeWriter?.();
        return;
      case MessageType.ERROR:
        this.fail(new XmigError('ERR_MIGRATION', `sender: ${message.message}`));
        return;
      default:
        channel.close(`unexpected message ${message.type} from the sender`);
    }
  }

  private cached(cid: Buffer): ChunkBytes | undefined {
    const key = cid.toString('latin1');
    const entry = this.cache.get(key);
    if (entry) {
      this.cache.delete(key);
      this.cache.set(key, entry);
    }
    return entry?.data;
  }

  private remember(cid: Buffer, data: ChunkBytes): void {
    const limit = this.options.cacheBytes ?? 64 * 1024 * 1024;
    const key = cid.toString('latin1');
    const length = byteLength(data);
    if (this.cache.has(key) || length > limit) return;
    this.cache.set(key, { data, length });
    this.holdAgain(data);
    this.cacheSize += length;
    while (this.cacheSize > limit) {
      const oldest = this.cache.keys().next().value!;
      const entry = this.cache.get(oldest)!;
      this.cacheSize -= entry.length;
      this.cache.delete(oldest);
      this.letGo(entry.data);
    }
  }

  /** One more holder of a chunk in lent memory (nothing for any other). */
  private holdAgain(data: ChunkBytes): void {
    const entry = this.held.get(data);
    if (entry) entry.holders++;
  }

  /** One holder less; the last gives the memory back. */
  private letGo(data: ChunkBytes): void {
    const entry = this.held.get(data);
    if (!entry || --entry.holders > 0) return;
    this.held.delete(data);
    entry.release(data);
  }

  private zeros(length: number): ChunkBytes {
    return [length <= this.zero.length ? this.zero.subarray(0, length) : Buffer.alloc(length)];
  }

  /** Queues offers strictly in round order, whatever order they arrive in. */
  private onOffer(round: number, chunks: OfferedChunk[]): void {
    if (round < this.nextOffer) return; // already queued or written
    if (round - this.nextOffer > MAX_EARLY_ROUNDS) {
      this.fail(new XmigError('ERR_MIGRATION', `sender offered round ${round} while round ${this.nextOffer} is the next: more than ${MAX_EARLY_ROUNDS} ahead`));
      return;
    }
    this.early.set(round, chunks);
    for (let next = this.early.get(this.nextOffer); next; next = this.early.get(this.nextOffer)) {
      this.early.delete(this.nextOffer);
      this.queueRound(this.nextOffer++, next);
    }
  }

  private queueRound(round: number, chunks: OfferedChunk[]): void {
    const retriever = this.retriever!;
    chunks.forEach((chunk, index) => {
      // Already written (an offer repeated after a reconnection): skip.
      if (round < this.next.round || (round === this.next.round && index < this.next.index)) return;
      let data: Promise<ChunkBytes>;
      if (chunk.kind === ChunkKind.ZERO) {
        this.report.zeroChunks++;
        data = Promise.resolve(this.zeros(chunk.length));
      } else {
        const hit = this.cached(chunk.cid!);
        if (hit) {
          this.report.cachedChunks++;
          this.holdAgain(hit);
          data = Promise.resolve(hit);
        } else {
          const cid = Buffer.from(chunk.cid!);
          data = retriever.fetch(cid, chunk.length).then((bytes) => {
            if (retriever.release) this.held.set(bytes, { holders: 1, release: retriever.release });
            this.remember(cid, bytes);
            return bytes;
          });
        }
      }
      // A rejected fetch is handled by the writer, in order.
      data.catch(() => undefined);
      this.queue.push({ round, index, last: index === chunks.length - 1, generation: this.generation, length: chunk.length, data });
      this.queuedBytes += chunk.length;
    });
    if (this.queuedBytes > MAX_QUEUED_BYTES) {
      this.fail(new XmigError('ERR_MIGRATION', `sender offered ${this.queuedBytes} bytes not yet written: more than ${MAX_QUEUED_BYTES}`));
    }
    this.wakeWriter?.();
  }

  /** Resolves when `output` drains, or when it is gone (then the next loop sees the failure). */
  private drained(output: NodeJS.WritableStream): Promise<void> {
    return new Promise<void>((resolve) => {
      const done = (): void => {
        output.off('drain', done);
        output.off('close', gone);
        resolve();
      };
      const gone = (): void => {
        this.fail(new XmigError('ERR_MIGRATION', 'the output closed before the stream was written'));
        done();
      };
      output.once('drain', done);
      output.once('close', gone);
    });
  }

  /** Writes chunks out strictly in order; acknowledges each round once written. */
  private async write(): Promise<void> {
    const output = this.options.output;
    for (;;) {
      if (this.failure) throw this.failure;
      const job = this.queue[0];
      if (!job) {
        if (this.done && this.next.round >= this.done.rounds) break;
        await new Promise<void>((resolve) => (this.wakeWriter = resolve));
        this.wakeWriter = undefined;
        continue;
      }
      let data: ChunkBytes;
      try {
        // A failure (the sender's ERROR, our owner's abort) must not wait for this fetch to time out.
        data = await this.unlessFailed(job.data);
      } catch (error) {
        if (this.failure) throw this.failure;
        if (job.generation !== this.generation) continue;
        throw error;
      }
      if (job.generation !== this.generation || this.queue[0] !== job) {
        this.letGo(data);
        continue;
      }
      this.queue.shift();
      this.queuedBytes -= job.length;
      // The pieces go out in one writev (stdout is a pipe: a net.Socket) where cork exists.
      const corkable = output as Partial<Pick<Writable, 'cork' | 'uncork'>>;
      let writable = true;
      corkable.cork?.();
      // Once the output has taken the last piece (written, or failed), its memory may be filled again.
      for (let i = 0; i < data.length; i++) {
        writable = i < data.length - 1 ? output.write(data[i]!) : output.write(data[i]!, () => this.letGo(data));
      }
      if (data.length === 0) this.letGo(data);
      corkable.uncork?.();
      if (!writable) await this.drained(output);
      this.report.bytes += byteLength(data);
      this.report.chunks++;
      this.next = job.last ? { round: job.round + 1, index: 0 } : { round: job.round, index: job.index + 1 };
      if (job.last) {
        this.logger.debug('recv.round-written', { phase: 'transfer', round: job.round, bytes: this.report.bytes });
        await this.channel?.send({ type: MessageType.ACK, round: job.round }).catch(() => undefined);
      }
    }
    await new Promise<void>((resolve) => output.write('', () => resolve()));
    this.finished = true;
    await this.channel?.send({ type: MessageType.DONE_ACK });
  }
}
