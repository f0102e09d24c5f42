/**
 * The one way a control message is delivered over a lossy datagram service: send it,
 * wait for its acknowledgement a little longer each time (exponential backoff), send it
 * again, until it is acknowledged, the deadline passes or the caller aborts. Host
 * registration, HID-move notices (VM → new gateway and router → router) and name
 * registration all go through it, so they share one behaviour: every attempt counted,
 * every wait bounded, nothing left running once it returns.
 *
 * Acknowledgements are matched by a key (a sequence number, a request id) through an
 * `AckWaiters` table: any number of sends may be waiting at once, each for its own key,
 * so one exchange never takes another's acknowledgement.
 */
import { XmigError } from '../shared/errors.js';

export interface Backoff {
  /** The first wait for an acknowledgement (ms). */
  firstMs: number;
  /** The longest wait (ms); waits double up to it. */
  maxMs: number;
  /** Growth per attempt (default 2). */
  factor?: number;
}

export interface SendUntilAckedOptions {
  /** Stops the exchange (rejects with the signal's reason). */
  signal?: AbortSignal;
  /** Gives up this many ms from now (rejects with ERR_TIMEOUT); Infinity or absent: only the signal ends it. */
  deadlineMs?: number;
  backoff: Backoff;
  /** Called before every send after the first (for retry counters). */
  onRetry?: (attempt: number) => void;
  /** A send that throws is retried like a lost one; this hears why. */
  onSendError?: (error: unknown, attempt: number) => void;
  /** What the timeout error says was not acknowledged. */
  what?: string;
}

export interface Acked<A> {
  ack: A;
  /** Sends made (1 = the first was acknowledged). */
  attempts: number;
  /** From the first send to the acknowledgement. */
  ms: number;
}

/**
 * Sends with `send(attempt)` until `waitForAck(signal)` resolves. `waitForAck` is called
 * once; the signal it gets is aborted when the exchange ends without its acknowledgement
 * (so its waiter is removed). At least one of `signal` and `deadlineMs` is required: a
 * wait that nothing can end is a bug.
 */
export async function sendUntilAcked<A>(
  send: (attempt: number) => void | Promise<void>,
  waitForAck: (signal: AbortSignal) => Promise<A>,
  options: SendUntilAckedOptions,
): Promise<Acked<A>> {
  const { signal, deadlineMs, backoff } = options;
  if (!signal && !Number.isFinite(deadlineMs)) throw new RangeError('sendUntilAcked needs a signal or a finite deadline');
  if (!(backoff.firstMs > 0) || !(backoff.maxMs >= backoff.firstMs)) throw new RangeError('sendUntilAcked needs 0 < firstMs <= maxMs');
  signal?.throwIfAborted();
  const started = performance.now();
  const ended = new AbortController();
  let acked: { ack: A } | undefined;
  let failure: { error: unknown } | undefined;
  let wake: (() => void) | undefined;
  const settle = (): void => {
    wake?.();
  };
  waitForAck(ended.signal).then(
    (ack) => {
      acked ??= { ack };
      settle();
    },
    (error: unknown) => {
      if (!ended.signal.aborted) failure ??= { error };
      settle();
    },
  );
  const onAbort = (): void => {
    failure ??= { error: signal!.reason };
    settle();
  };
  signal?.addEventListener('abort', onAbort, { once: true });
  let timer: NodeJS.Timeout | undefined;
  try {
    let wait = backoff.firstMs;
    for (let attempt = 1; ; attempt++) {
      if (acked) return { ack: acked.ack, attempts: attempt - 1, ms: performance.now() - started };
      if (failure) throw failure.error;
      const left = deadlineMs === undefined ? Infinity : deadlineMs - (performance.now() - started);
      if (left <= 0) {
        throw new XmigError('ERR_TIMEOUT', `${options.what ?? 'message'} not acknowledged within ${deadlineMs} ms (${attempt - 1} sends)`);
      }
      if (attempt > 1) options.onRetry?.(attempt);
      try {
        await send(attempt);
      } catch (error) {
        options.onSendError?.(error, attempt);
      }
      if (acked || failure) continue;
      await new Promise<void>((resolve) => {
        wake = resolve;
        timer = setTimeout(resolve, Math.min(wait, left));
      });
      clearTimeout(timer);
      wake = undefined;
      wait = Math.min(wait * (backoff.factor ?? 2), backoff.maxMs);
    }
  } finally {
    clearTimeout(timer);
    signal?.removeEventListener('abort', onAbort);
    ended.abort();
  }
}

/**
 * Who waits for which acknowledgement: a key (sequence number, request id) → the
 * waiters for it. Settling a key nobody waits for does nothing (a late or stray ack).
 * The table holds only live waits: each leaves when settled or when its signal aborts.
 */
export class AckWaiters<K, A> {
  private readonly waiting = new Map<K, Set<(ack: A) => void>>();

  /** How many keys are waited for (tests, gauges). */
  get size(): number {
    return this.waiting.size;
  }

  has(key: K): boolean {
    return this.waiting.has(key);
  }

  /** Resolves with the first acknowledgement settled for `key`; rejects when `signal` aborts. */
  wait(key: K, signal: AbortSignal): Promise<A> {
    return new Promise<A>((resolve, reject) => {
      if (signal.aborted) return reject(signal.reason);
      let set = this.waiting.get(key);
      if (!set) this.waiting.set(key, (set = new Set()));
      const waiters = set;
      const done = (ack: A): void => {
        signal.removeEventListener('abort', onAbort);
        resolve(ack);
      };
      const onAbort = (): void => {
        waiters.delete(done);
        if (waiters.size === 0 && this.waiting.get(key) === waiters) this.waiting.delete(key);
        reject(signal.reason);
      };
      signal.addEventListener('abort', onAbort, { once: true });
      waiters.add(done);
    });
  }

  /** Hands `ack` to everyone waiting for `key`; false if nobody was. */
  settle(key: K, ack: A): boolean {
    const waiters = this.waiting.get(key);
    if (!waiters) return false;
    this.waiting.delete(key);
    for (const done of waiters) done(ack);
    return true;
  }
}

/** Resolves after `ms`, or rejects with the signal's reason as soon as it aborts. */
export function delay(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal!.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
