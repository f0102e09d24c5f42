/**
 * The verifier against everything a sender can make of a notice: forged (another key),
 * replayed, reordered, truncated, bit-flipped, spliced; and against floods of fresh keys.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { Identity } from '../shared/identity.js';
import { decodeMobility, encodeMobility, MobilityType } from '../shared/mobility-message.js';
import { sealMoveNotice, type MoveNotice } from '../shared/move-notice.js';
import { XidType, type Xid } from '../shared/xid.js';
import { NoticeVerifier } from './notice-verifier.js';

const T0 = 1_700_000_000_000;
const newAd = Identity.generate().xid(XidType.AD);
const oldAd = Identity.generate().xid(XidType.AD);
const newRouter = Identity.generate().xid(XidType.HID);
const oldRouter = Identity.generate().xid(XidType.HID);

function sealed(vm: Identity, seq: number, timestamp = T0, hid: Xid = vm.xid(XidType.HID)): Buffer {
  const notice: MoveNotice = { hid, newAd, newRouterHid: newRouter, newLinkId: 'aa/0', oldAd, oldRouterHid: oldRouter, oldLinkId: 'bb/0', seq, timestamp };
  return sealMoveNotice(notice, vm);
}

describe('notice verifier', () => {
  it('records nothing until commit: a notice checked but not applied is judged afresh', () => {
    const vm = Identity.generate();
    const v = new NoticeVerifier({ now: () => T0 });
    const n = sealed(vm, 5);
    const first = v.check(n, 0);
    expect(first).toMatchObject({ accepted: true, repeat: false });
    // Not committed (its route write failed): the retry is not a repeat.
    expect(v.check(n, 0)).toMatchObject({ accepted: true, repeat: false });
    v.commit(first.accepted ? first.notice : (undefined as never), n, 'applied');
    expect(v.check(n, 0)).toMatchObject({ accepted: true, repeat: true });
    expect(v.check(sealed(vm, 4), 0)).toMatchObject({ accepted: false, reason: 'old-sequence' });
    expect(v.check(sealed(vm, 5, T0 + 1), 0)).toMatchObject({ accepted: false, reason: 'duplicate' });
  });

  it('10,000 forged, replayed, reordered, truncated and bit-flipped notices: only genuine, newer ones pass', () => {
    const vms = [Identity.generate(), Identity.generate(), Identity.generate()];
    const thief = Identity.generate();
    const genuine = vms.flatMap((vm) => [1, 2, 3, 5, 8].map((seq) => sealed(vm, seq, T0 + seq)));
    const forged = vms.map((vm) => sealed(thief, 100, T0, vm.xid(XidType.HID)));
    const genuineSet = new Set(genuine.map((g) => g.toString('hex')));
    const pick = fc.constantFrom(...genuine, ...forged);
    const input = fc.oneof(
      { weight: 3, arbitrary: pick },
      { weight: 2, arbitrary: fc.tuple(pick, fc.nat()).map(([g, n]) => g.subarray(0, n % g.length)) },
      {
        weight: 3,
        arbitrary: fc.tuple(pick, fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 7 })), { minLength: 1, maxLength: 4 })).map(([g, flips]) => {
          const b = Buffer.from(g);
          for (const [at, bit] of flips) b[at % b.length]! ^= 1 << bit;
          return b;
        }),
      },
      { weight: 1, arbitrary: fc.tuple(pick, pick, fc.nat()).map(([a, b, n]) => Buffer.concat([a.subarray(0, n % a.length), b.subarray(n % b.length)])) },
      { weight: 1, arbitrary: fc.uint8Array({ maxLength: 300 }).map((b) => Buffer.from(b)) },
    );
    let accepted = 0;
    let runs = 0;
    fc.assert(
      fc.property(fc.array(input, { minLength: 20, maxLength: 40 }), (batch) => {
        const v = new NoticeVerifier({ now: () => T0, verificationsPerSecond: 1e9, burst: 1e9, newHidsBurst: 1e9, newHidsBurstTotal: 1e9, perHidBurst: 1e9 });
        const last = new Map<string, number>();
        for (const bytes of batch) {
          runs++;
          // The mobility framing around it decodes or fails typed, too.
          try {
            decodeMobility(encodeMobility(MobilityType.FORWARDED, bytes));
          } catch (error) {
            expect((error as { code?: string }).code).toBe('ERR_XIP_MALFORMED');
          }
          const verdict = v.check(bytes, 0);
          if (!verdict.accepted) continue;
          const { notice } = verdict;
          // Whatever passes is byte for byte a notice its HID's key signed...
          expect(genuineSet.has(bytes.toString('hex'))).toBe(true);
          const seen = last.get(notice.hid.key);
          if (verdict.repeat) {
            expect(seen).toBe(notice.seq);
            continue;
          }
          // ...and newer than every notice applied for that HID (replays and reorders lose).
          if (seen !== undefined) expect(notice.seq).toBeGreaterThan(seen);
          accepted++;
          v.commit(notice, bytes, null);
          last.set(notice.hid.key, notice.seq);
        }
      }),
      { numRuns: 500 },
    );
    expect(runs).toBeGreaterThanOrEqual(10_000);
    expect(accepted).toBeGreaterThan(100);
  });

  it('sheds a flood of fresh keys per link while known HIDs and other links go on; its HID state stays bounded', () => {
    let now = T0;
    const v = new NoticeVerifier({ now: () => now, newHidsPerSecond: 20, newHidsBurst: 50, maxHids: 500 });
    const genuine = Identity.generate();
    const first = sealed(genuine, 1);
    const ok = v.check(first, 1);
    expect(ok.accepted).toBe(true);
    v.commit(ok.accepted ? ok.notice : (undefined as never), first, null);
    let admitted = 0;
    let shed = 0;
    for (let i = 0; i < 5000; i++) {
      if (i % 50 === 0) now += 100; // 5,000 keys over 10 s
      const key = Identity.generate();
      const n = sealed(key, 1, now);
      const verdict = v.check(n, 0);
      if (verdict.accepted) {
        admitted++;
        v.commit(verdict.notice, n, null);
      } else {
        expect(['new-hid-rate', 'rate-limited']).toContain(verdict.reason);
        shed++;
      }
      if (i === 2500) {
        // Mid-flood: the known VM moves again (its own rate), a new VM arrives on another link.
        const again = sealed(genuine, 2, now);
        const moved = v.check(again, 0);
        expect(moved).toMatchObject({ accepted: true, repeat: false });
        v.commit(moved.accepted ? moved.notice : (undefined as never), again, null);
        expect(v.check(sealed(Identity.generate(), 1, now), 2).accepted).toBe(true);
      }
    }
    expect(admitted).toBeLessThanOrEqual(50 + 20 * 10 + 1);
    expect(shed).toBeGreaterThan(4500);
    expect(v.size).toBeLessThanOrEqual(500);
  });

  it('forgetting a HID whose notice is still fresh does not open it to a replay of that notice', () => {
    let now = T0;
    const v = new NoticeVerifier({ now: () => now, maxHids: 2, newHidsBurst: 1e6, newHidsBurstTotal: 1e6 });
    const victim = Identity.generate();
    const n1 = sealed(victim, 1, now);
    const n2 = sealed(victim, 2, now + 10);
    now += 10;
    for (const n of [n1, n2]) {
      const verdict = v.check(n, 0);
      v.commit(verdict.accepted ? verdict.notice : (undefined as never), n, null);
    }
    // Two other HIDs push the victim out of the verifier's memory...
    for (const other of [Identity.generate(), Identity.generate()]) {
      now += 1;
      const n = sealed(other, 1, now);
      const verdict = v.check(n, 0);
      v.commit(verdict.accepted ? verdict.notice : (undefined as never), n, null);
    }
    expect(v.lastSeq(victim.xid(XidType.HID).key)).toBeUndefined();
    expect(v.stats.evictedFresh).toBeGreaterThan(0);
    // ...but the victim's older notice, replayed, still loses; a notice signed now passes.
    expect(v.check(n1, 0)).toMatchObject({ accepted: false, reason: 'stale' });
    now += 1;
    expect(v.check(sealed(victim, 3, now), 0).accepted).toBe(true);
  });
});
