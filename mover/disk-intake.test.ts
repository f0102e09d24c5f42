/**
 * The disk target's door takes whatever strangers send to the disk SID: any bytes, in
 * any pieces, end with an opening handed on or a refusal counted — never a throw — and
 * idle or surplus streams are dropped, not kept.
 */
import fc from 'fast-check';
import { Duplex } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { silentLogger } from '../shared/logger.js';
import { DiskIntake, type Opening } from './disk-intake.js';
import { DiskMessageType, encodeDiskMessage } from './disk-messages.js';

/** An in-memory stream end: what is pushed is what the intake reads. */
function stream(): Duplex {
  return new Duplex({ read() {}, write(_chunk, _encoding, callback) { callback(); } });
}

function intake(options: { openTimeoutMs?: number; maxPending?: number; admit?: (s: Duplex) => string | undefined } = {}): { intake: DiskIntake; opened: Array<{ opening: Opening; rest: Buffer }> } {
  const opened: Array<{ opening: Opening; rest: Buffer }> = [];
  return { intake: new DiskIntake({ ...options, onOpen: (opening, _s, rest) => opened.push({ opening, rest }), logger: silentLogger() }), opened };
}

const refusals = (i: DiskIntake): number => Object.values(i.refusals.snapshot()).reduce((a, b) => a + b, 0);
const tick = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

describe('DiskIntake', () => {
  it('hands on a well-formed opening, split anywhere, with the bytes behind it', async () => {
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ minLength: 16, maxLength: 16 }), fc.uint8Array({ maxLength: 40 }), fc.array(fc.nat(), { maxLength: 4 }), async (session, after, cuts) => {
        const { intake: door, opened } = intake();
        const s = stream();
        door.take(s);
        const bytes = Buffer.concat([encodeDiskMessage({ type: DiskMessageType.OPEN_NBD, session: Buffer.from(session) }), after]);
        let at = 0;
        for (const cut of [...cuts.map((c) => c % (bytes.length + 1)).sort((a, b) => a - b), bytes.length]) {
          if (cut > at) s.push(bytes.subarray(at, cut));
          at = Math.max(at, cut);
        }
        await tick();
        expect(opened).toHaveLength(1);
        expect(opened[0]!.opening).toEqual({ type: DiskMessageType.OPEN_NBD, session: Buffer.from(session) });
        // Whatever came in the same reads as the frame is handed on; later reads stay in the stream.
        expect(after.subarray(0, opened[0]!.rest.length)).toEqual(new Uint8Array(opened[0]!.rest));
        door.close();
        s.destroy();
      }),
      { numRuns: 300 },
    );
  });

  it('takes any bytes without throwing: an opening, or a refusal and the stream dropped', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(fc.uint8Array({ maxLength: 64 }), { maxLength: 4 }), async (pieces) => {
        const { intake: door, opened } = intake({ openTimeoutMs: 1000 });
        const s = stream();
        door.take(s);
        for (const piece of pieces) s.push(Buffer.from(piece));
        await tick();
        if (s.destroyed) expect(refusals(door)).toBe(1);
        else if (opened.length === 0) expect(refusals(door)).toBe(0);
        door.close();
        s.destroy();
      }),
      { numRuns: 1000 },
    );
  });

  it('refuses a stream that says something other than OPEN first, one from a stranger, and one that says nothing', async () => {
    const { intake: door, opened } = intake({ openTimeoutMs: 50, admit: (s) => ((s as Duplex & { stranger?: boolean }).stranger ? 'not an allowed source' : undefined) });
    const done = stream();
    door.take(done);
    done.push(encodeDiskMessage({ type: DiskMessageType.DONE }));
    const stranger = Object.assign(stream(), { stranger: true });
    door.take(stranger);
    const silent = stream();
    door.take(silent);
    await expect.poll(() => silent.destroyed).toBe(true);
    expect(done.destroyed && stranger.destroyed).toBe(true);
    expect(opened).toEqual([]);
    expect(door.refusals.snapshot()).toEqual({ 'disk-stream/forbidden': 1, 'disk-stream/cap': 0, 'disk-stream/timeout': 1, 'disk-stream/malformed': 1 });
  });

  it('keeps at most maxPending streams waiting: the oldest goes', async () => {
    const { intake: door } = intake({ maxPending: 2 });
    const streams = [stream(), stream(), stream()];
    for (const s of streams) door.take(s);
    await tick();
    expect(streams.map((s) => s.destroyed)).toEqual([true, false, false]);
    expect(door.refusals.count('disk-stream', 'cap')).toBe(1);
    door.close();
    expect(streams.every((s) => s.destroyed)).toBe(true);
  });
});
