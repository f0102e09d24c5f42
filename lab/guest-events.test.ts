import { appendFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { activeResources, leftBehind } from '../shared/startable.js';
import { GuestEventLog, isDbenchError, lastLine, parseGuestLine } from './guest-events.js';

const dir = mkdtempSync(join(tmpdir(), 'xmig-events-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;
const file = (): string => join(dir, `events-${n++}.log`);

describe("the guest's event log", () => {
  it('parses JSON lines as they are appended, however they are split, and keeps other output as such', async () => {
    const path = file();
    const log = new GuestEventLog(path, 10);
    await log.start();
    const waiting = log.waitFor((e) => e.event === 'move.registered', { deadlineMs: 10_000 });
    appendFileSync(path, '{"event":"guest.init","uptimeMs":10}\n{"event":"move.regi');
    log.poll();
    expect(log.events.map((e) => e.event)).toEqual(['guest.init']);
    appendFileSync(path, 'stered","ms":12.5}\r\nKernel panic - not JSON\n');
    const event = await waiting;
    expect(event).toMatchObject({ event: 'move.registered', ms: 12.5 });
    log.poll();
    expect(log.events.at(-1)).toEqual({ event: 'guest.output', line: 'Kernel panic - not JSON' });
    expect(log.count).toBe(3);
    await log.stop();
  });

  it('waits only for what comes after `from`, and fails on its deadline, on abort and on failure', async () => {
    const path = file();
    writeFileSync(path, '{"event":"a"}\n');
    const log = new GuestEventLog(path, 10);
    await log.start();
    const from = log.count;
    const later = log.waitFor((e) => e.event === 'a', { from, deadlineMs: 10_000 });
    appendFileSync(path, '{"event":"a","second":true}\n');
    expect(await later).toMatchObject({ second: true });
    await expect(log.waitFor((e) => e.event === 'never', { deadlineMs: 50, what: 'the thing', context: () => 'it last said hi' })).rejects.toThrow(
      /^no the thing within 0 s; it last said hi$/,
    );
    const abort = new AbortController();
    const aborted = log.waitFor((e) => e.event === 'never', { signal: abort.signal });
    abort.abort();
    await expect(aborted).rejects.toMatchObject({ code: 'ERR_TIMEOUT', message: expect.stringMatching(/^aborted/) });
    let dead = false;
    const failing = log.waitFor((e) => e.event === 'never', { failure: () => (dead ? 'QEMU exited' : undefined), what: 'ready' });
    dead = true;
    await expect(failing).rejects.toThrow(/^QEMU exited before ready$/);
    await log.stop();
  });

  it('stops leaving no timer behind, and ends the waits still pending', async () => {
    const before = activeResources();
    const log = new GuestEventLog(file(), 10);
    await log.start();
    const pending = log.waitFor(() => false, { deadlineMs: 60_000 });
    await log.stop();
    await expect(pending).rejects.toThrow(/closed/);
    expect(leftBehind(before, activeResources())).toEqual({});
  });

  it('turns any line into an event without throwing', () => {
    fc.assert(
      fc.property(fc.oneof(fc.string(), fc.json()), (line) => {
        const event = parseGuestLine(line);
        expect(typeof event.event).toBe('string');
      }),
    );
    expect(parseGuestLine('{"no":"event"}')).toMatchObject({ event: 'guest.output' });
  });

  it("names the last line a console printed", () => {
    const path = file();
    writeFileSync(path, 'first\r\nsecond line\r\n\r\n');
    expect(lastLine(path)).toBe('second line');
    expect(lastLine(join(dir, 'missing'))).toBe('');
  });
});

describe("dbench's lines", () => {
  it('tells an error from progress and from dbench 4.0\'s semaphore quirk', () => {
    expect(isDbenchError('   1       589    61.46 MB/sec  execute   3 sec  latency 12.301 ms')).toBe(false);
    expect(isDbenchError('failed to create barrier semaphore')).toBe(false);
    expect(isDbenchError('[8] open ./clients/client0/~dmtmp/PARADOX/ANSWER.MB failed for handle 10003 (No such file or directory)')).toBe(true);
    expect(isDbenchError('ERROR: child 0 failed at line 1')).toBe(true);
  });
});
