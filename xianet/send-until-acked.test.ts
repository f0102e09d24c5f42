import { describe, expect, it } from 'vitest';
import { activeResources, leftBehind } from '../shared/startable.js';
import { AckWaiters, delay, sendUntilAcked } from './send-until-acked.js';

const backoff = { firstMs: 5, maxMs: 20 };

describe('sendUntilAcked', () => {
  it('sends until acknowledged, backing off, and leaves no timer or waiter behind', async () => {
    const before = activeResources();
    const acks = new AckWaiters<number, string>();
    const sent: number[] = [];
    const result = await sendUntilAcked(
      (attempt) => {
        sent.push(attempt);
        if (attempt === 3) setImmediate(() => acks.settle(7, 'ok'));
      },
      (signal) => acks.wait(7, signal),
      { deadlineMs: 10_000, backoff },
    );
    expect(result).toMatchObject({ ack: 'ok', attempts: 3 });
    expect(sent).toEqual([1, 2, 3]);
    expect(acks.size).toBe(0);
    expect(leftBehind(before, activeResources())).toEqual({});
  });

  it('times out with ERR_TIMEOUT and removes its waiter', async () => {
    const acks = new AckWaiters<number, string>();
    let sends = 0;
    await expect(sendUntilAcked(() => void sends++, (s) => acks.wait(1, s), { deadlineMs: 60, backoff, what: 'test' })).rejects.toMatchObject({
      code: 'ERR_TIMEOUT',
    });
    expect(sends).toBeGreaterThan(1);
    expect(acks.size).toBe(0);
    expect(acks.settle(1, 'late')).toBe(false);
  });

  it('stops at once when aborted, with the signal reason', async () => {
    const before = activeResources();
    const acks = new AckWaiters<number, string>();
    const controller = new AbortController();
    const run = sendUntilAcked(() => undefined, (s) => acks.wait(2, s), { signal: controller.signal, backoff: { firstMs: 60_000, maxMs: 60_000 } });
    await delay(5);
    controller.abort(new Error('superseded'));
    await expect(run).rejects.toThrow('superseded');
    expect(acks.size).toBe(0);
    expect(leftBehind(before, activeResources())).toEqual({});
  });

  it('retries a send that throws like a lost one', async () => {
    const acks = new AckWaiters<number, number>();
    const errors: unknown[] = [];
    const result = await sendUntilAcked(
      (attempt) => {
        if (attempt < 3) throw new Error('no route');
        acks.settle(9, attempt);
      },
      (s) => acks.wait(9, s),
      { deadlineMs: 10_000, backoff, onSendError: (e) => errors.push(e) },
    );
    expect(result.ack).toBe(3);
    expect(errors).toHaveLength(2);
  });

  it('keeps concurrent exchanges apart: each gets the ack for its own key', async () => {
    const acks = new AckWaiters<number, string>();
    const controller = new AbortController();
    const first = sendUntilAcked(() => undefined, (s) => acks.wait(1, s), { signal: controller.signal, backoff });
    const second = sendUntilAcked(() => undefined, (s) => acks.wait(2, s), { signal: controller.signal, backoff });
    await delay(1);
    expect(acks.settle(2, 'two')).toBe(true);
    expect((await second).ack).toBe('two');
    expect(acks.settle(1, 'one')).toBe(true);
    expect((await first).ack).toBe('one');
  });

  it('refuses a wait that nothing can end', async () => {
    await expect(sendUntilAcked(() => undefined, () => new Promise(() => undefined), { backoff })).rejects.toThrow(RangeError);
  });
});
