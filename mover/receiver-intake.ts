/**
 * The receiver's side of the control connections. Anyone who can reach the migration
 * SID (or port) can connect, so every connection must earn its place: it is admitted
 * only from an allowed sender (`admit`), must say a well-formed HELLO within
 * `helloTimeoutMs`, and at most `maxPending` connections may be waiting to do so — a
 * newcomer pushes out the oldest (as a SYN queue does), so idle strangers cannot keep
 * the real sender, who says HELLO at once, from getting in.
 *
 * The first HELLO binds the migration's session; a HELLO for that session again is the
 * sender resuming (it replaces whatever connection the session had). A HELLO for
 * another session is refused with ERROR — unless nothing of the bound session has been
 * written out yet and its connection is gone, in which case the newcomer takes over:
 * a stray or aborted sender cannot hold the destination hostage before the migration
 * has begun, and nothing written is ever mixed with another stream.
 */
import type { Duplex } from 'node:stream';
import { errorMessage } from '../shared/errors.js';
import { Refusals } from '../shared/limits.js';
import type { Logger } from '../shared/logger.js';
import { ControlChannel } from './control-channel.js';
import { MessageType, type ControlMessage } from './control-messages.js';

export type Hello = Extract<ControlMessage, { type: typeof MessageType.HELLO }>;

export interface SessionStart {
  channel: ControlChannel;
  hello: Hello;
  /** The bound session again (a reconnection), rather than a new one. */
  resumed: boolean;
  /** A new session replaced one that had written nothing. */
  replaced: boolean;
}

export interface ReceiverIntakeOptions {
  accept: () => Promise<Duplex>;
  /** Why this connection may not migrate to us (not an allowed sender), or undefined to admit it. */
  admit?: (stream: Duplex) => string | undefined;
  /** A connection must say HELLO within this long (default 5 s). */
  helloTimeoutMs?: number;
  /** Connections waiting to say HELLO (default 8); more are refused. */
  maxPending?: number;
  /** Has anything of the bound session been written out? */
  committed: () => boolean;
  onSession: (start: SessionStart) => void;
  /** Every other message on the session's current connection. */
  onMessage: (message: ControlMessage, channel: ControlChannel) => void;
  logger: Logger;
}

export class ReceiverIntake {
  private session: Buffer | undefined;
  private currentChannel: ControlChannel | undefined;
  private readonly pending = new Set<ControlChannel>();
  private running = false;
  readonly refusals = new Refusals([
    ['control-connection', 'forbidden'],
    ['control-connection', 'cap'],
    ['control-connection', 'timeout'],
    ['control-connection', 'malformed'],
    ['session', 'forbidden'],
  ]);

  constructor(private readonly options: ReceiverIntakeOptions) {}

  get current(): ControlChannel | undefined {
    return this.currentChannel;
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    void this.acceptLoop();
  }

  /** Stops taking connections and closes those that have not said HELLO (the session's own stays). */
  stop(): void {
    this.running = false;
    for (const channel of this.pending) channel.close('receiver stopped');
    this.pending.clear();
  }

  private async acceptLoop(): Promise<void> {
    while (this.running) {
      let stream: Duplex;
      try {
        stream = await this.options.accept();
      } catch (error) {
        if (this.running) this.options.logger.warn('recv.accept-failed', { reason: errorMessage(error) });
        return;
      }
      if (!this.running) {
        stream.destroy();
        return;
      }
      this.take(stream);
    }
  }

  private refuse(stream: Duplex, resource: 'control-connection' | 'session', reason: 'forbidden' | 'cap' | 'timeout' | 'malformed', why: string): void {
    this.refusals.refuse(resource, reason);
    this.options.logger.warn('recv.connection-refused', { reason: why });
    stream.destroy();
  }

  private take(stream: Duplex): void {
    const forbidden = this.options.admit?.(stream);
    if (forbidden !== undefined) return this.refuse(stream, 'control-connection', 'forbidden', forbidden);
    if (this.pending.size >= (this.options.maxPending ?? 8)) {
      const oldest = this.pending.values().next().value!;
      this.pending.delete(oldest);
      this.refusals.refuse('control-connection', 'cap');
      this.options.logger.warn('recv.connection-refused', { reason: `${this.pending.size + 1} connections had not said HELLO: the oldest goes` });
      oldest.close('too many connections without HELLO');
    }
    const channel = new ControlChannel(stream, (message) => this.onMessage(message, channel));
    this.pending.add(channel);
    const waitMs = this.options.helloTimeoutMs ?? 5000;
    const timer = setTimeout(() => {
      if (!this.pending.delete(channel)) return;
      this.refusals.refuse('control-connection', 'timeout');
      this.options.logger.warn('recv.connection-refused', { reason: `no HELLO within ${waitMs} ms` });
      channel.close('no HELLO');
    }, waitMs);
    channel.onClose((reason) => {
      clearTimeout(timer);
      if (this.pending.delete(channel) && reason.startsWith('protocol error')) this.refusals.refuse('control-connection', 'malformed');
    });
  }

  private onMessage(message: ControlMessage, channel: ControlChannel): void {
    if (message.type === MessageType.HELLO) {
      this.onHello(message, channel);
      return;
    }
    if (channel === this.currentChannel) {
      this.options.onMessage(message, channel);
      return;
    }
    // Anything but HELLO from a connection that has not bound the session is a protocol error.
    this.refusals.refuse('control-connection', 'malformed');
    channel.close(`message ${message.type} before HELLO`);
  }

  private onHello(hello: Hello, channel: ControlChannel): void {
    if (!this.pending.delete(channel)) {
      channel.close('HELLO twice on one connection');
      return;
    }
    const bound = this.session;
    let resumed = false;
    let replaced = false;
    if (bound && bound.equals(hello.session)) {
      resumed = true;
    } else if (bound) {
      const lost = !this.currentChannel || this.currentChannel.closed;
      if (!lost || this.options.committed()) {
        this.refusals.refuse('session', 'forbidden');
        this.options.logger.warn('recv.session-refused', { reason: 'another migration is in progress' });
        void channel.send({ type: MessageType.ERROR, message: 'another migration is in progress' }).catch(() => undefined).finally(() => channel.close('foreign session'));
        return;
      }
      replaced = true;
      this.options.logger.warn('recv.session-replaced', { reason: 'the bound session had written nothing and lost its connection' });
    }
    this.session = hello.session;
    const previous = this.currentChannel;
    this.currentChannel = channel;
    if (previous && previous !== channel && !previous.closed) previous.close('replaced by a newer connection of the session');
    this.options.onSession({ channel, hello, resumed, replaced });
  }
}
