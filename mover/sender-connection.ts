/**
 * The sender's end of the control connection: open it, say HELLO, wait for the
 * receiver's WELCOME (which says where to resume), and — because the receiver may not
 * be listening yet when QEMU starts `xmig send`, and a connection may drop mid-way —
 * keep trying, with backoff, until a deadline. The first connection and every
 * reconnection go through the same loop; only what the caller does next differs.
 */
import type { Duplex } from 'node:stream';
import { XmigError, errorMessage } from '../shared/errors.js';
import type { Logger } from '../shared/logger.js';
import { ControlChannel } from './control-channel.js';
import { MessageType, type ControlMessage } from './control-messages.js';

export interface SenderConnectionOptions {
  /** Opens one control connection to the receiver. */
  connect: () => Promise<Duplex>;
  session: Buffer;
  mode: 'xia' | 'tcp';
  /** Where the receiver fetches chunks from (XIA: this host's DAG). */
  source: string;
  /** Every message but WELCOME, with the channel it came on. */
  onMessage: (message: ControlMessage, channel: ControlChannel) => void;
  /** How long the first connection, and each reconnection, may take in all (tries included). */
  deadlineMs: number;
  logger: Logger;
}

export interface Opened {
  channel: ControlChannel;
  /** The first round the receiver has not written: offers restart there. */
  nextRound: number;
}

const FIRST_BACKOFF_MS = 50;
const MAX_BACKOFF_MS = 1000;

export class SenderConnection {
  constructor(private readonly options: SenderConnectionOptions) {}

  /**
   * Opens a connection and gets its WELCOME, trying again with backoff until the
   * deadline; `why` names the attempt in errors ('connecting' or 'resuming').
   */
  async open(why: 'connecting' | 'resuming', options: { deadlineMs?: number; signal?: AbortSignal } = {}): Promise<Opened> {
    const { signal } = options;
    const started = performance.now();
    const deadline = started + (options.deadlineMs ?? this.options.deadlineMs);
    let delay = FIRST_BACKOFF_MS;
    for (let attempt = 1; ; attempt++) {
      if (signal?.aborted) throw new XmigError('ERR_MIGRATION', `${why} cancelled`);
      try {
        return await this.openOnce(Math.max(1, deadline - performance.now()));
      } catch (error) {
        const left = deadline - performance.now();
        if (left <= delay) {
          throw new XmigError('ERR_MIGRATION', `receiver unreachable; gave up ${why} after ${attempt} attempts in ${Math.round(performance.now() - started)} ms: ${errorMessage(error)}`, { cause: error });
        }
        this.options.logger.debug('send.connect-retry', { phase: why, attempt, reason: errorMessage(error), ms: delay });
        await sleep(delay, signal);
        delay = Math.min(delay * 2, MAX_BACKOFF_MS);
      }
    }
  }

  /** One connection: HELLO, then the WELCOME for our session within `waitMs`. */
  private async openOnce(waitMs: number): Promise<Opened> {
    const stream = await this.options.connect();
    // This connection's own WELCOME slot: a late WELCOME on an older connection cannot answer it.
    let onWelcome: ((nextRound: number, session: Buffer) => void) | undefined;
    let onRefused: ((reason: string) => void) | undefined;
    const channel = new ControlChannel(stream, (message) => {
      if (message.type === MessageType.WELCOME) onWelcome?.(message.nextRound, message.session);
      else if (message.type === MessageType.ERROR && onWelcome) onRefused?.(message.message);
      else this.options.onMessage(message, channel);
    });
    const welcome = new Promise<number>((resolve, reject) => {
      // A receiver that takes the connection but never answers must not hold us forever.
      const timer = setTimeout(() => {
        reject(new XmigError('ERR_TIMEOUT', `no WELCOME from the receiver within ${Math.round(waitMs)} ms`));
        channel.close('no WELCOME');
      }, waitMs);
      onWelcome = (nextRound, session) => {
        onWelcome = undefined;
        clearTimeout(timer);
        if (session.equals(this.options.session)) resolve(nextRound);
        else reject(new XmigError('ERR_MIGRATION', 'receiver answered for another session'));
      };
      // The receiver says why it will not take us (another migration, not an allowed sender).
      onRefused = (reason) => {
        onWelcome = undefined;
        clearTimeout(timer);
        reject(new XmigError('ERR_MIGRATION', `receiver refused: ${reason}`));
      };
      channel.onClose((reason) => {
        clearTimeout(timer);
        reject(new XmigError('ERR_MIGRATION', `control connection lost before WELCOME: ${reason}`));
      });
    });
    try {
      await channel.send({ type: MessageType.HELLO, session: this.options.session, mode: this.options.mode === 'xia' ? 0 : 1, source: this.options.source });
      return { channel, nextRound: await welcome };
    } catch (error) {
      welcome.catch(() => undefined);
      channel.close(errorMessage(error));
      throw error;
    }
  }
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener('abort', done, { once: true });
  });
}
