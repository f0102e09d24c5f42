/** The CHUNK transport's parts on their own: ranges, messages, the RTO, and BBR on a simulated path. */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { MalformedPacketError } from '../../shared/errors.js';
import { ByteRanges } from './byte-ranges.js';
import { BbrController } from './chunk-congestion.js';
import { ChunkOp, ChunkOffset, decodeChunkMessage, encodeChunkRequest, writeChunkDataHeader } from './chunk-messages.js';
import { RtoEstimator } from './chunk-rto.js';

describe('ByteRanges', () => {
  it('counts each byte once and knows what is missing, whatever the order (against a bitmap)', () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.nat(300), fc.nat(60)), { maxLength: 60 }), fc.nat(300), fc.nat(100), (adds, qs, ql) => {
        const ranges = new ByteRanges();
        const bits = new Uint8Array(400);
        for (const [start, length] of adds) {
          let fresh = 0;
          for (let i = start; i < start + length; i++) {
            if (bits[i]) continue;
            bits[i] = 1;
            fresh++;
          }
          expect(ranges.add(start, start + length)).toBe(fresh);
        }
        const qe = qs + ql;
        let all = true;
        const missing: Array<[number, number]> = [];
        for (let i = qs; i < qe; i++) {
          if (bits[i]) continue;
          all = false;
          const last = missing[missing.length - 1];
          if (last && last[1] === i) last[1] = i + 1;
          else missing.push([i, i + 1]);
        }
        expect(ranges.covers(qs, qe)).toBe(all);
        expect(ranges.missing(qs, qe)).toEqual(missing);
      }),
      { numRuns: 2000 },
    );
  });
});

describe('CHUNK messages', () => {
  const cid = Buffer.alloc(20, 7);

  it('round-trips a request through the offset table, and still reads a 33-byte one', () => {
    const encoded = encodeChunkRequest({ requestId: 9, cid, offset: 4096, length: 20_000, maxFragment: 1262 });
    expect(encoded.length).toBe(1 + ChunkOffset.REQUEST_END);
    expect(decodeChunkMessage(encoded.subarray(1))).toMatchObject({ op: ChunkOp.REQUEST, requestId: 9, offset: 4096, length: 20_000, maxFragment: 1262 });
    expect(decodeChunkMessage(encoded.subarray(1, 1 + ChunkOffset.HEADER_END))).toMatchObject({ offset: 4096, length: 20_000, maxFragment: 0 });
    const data = Buffer.alloc(1 + ChunkOffset.HEADER_END + 3);
    writeChunkDataHeader(data, 0, { requestId: 9, cid, total: 10, offset: 7, noStore: true });
    data.set([1, 2, 3], 1 + ChunkOffset.HEADER_END);
    expect(decodeChunkMessage(data.subarray(1))).toMatchObject({ op: ChunkOp.DATA, noStore: true, total: 10, offset: 7, data: Buffer.from([1, 2, 3]) });
  });

  it('throws only MalformedPacketError on any input (10,000 of them)', () => {
    const valid = encodeChunkRequest({ requestId: 1, cid, offset: 0, length: 0 }).subarray(1);
    fc.assert(
      fc.property(
        fc.oneof(
          fc.uint8Array({ maxLength: 80 }),
          // Mutations of a valid message reach past the length checks.
          fc.tuple(fc.nat(valid.length - 1), fc.integer({ min: 0, max: 255 }), fc.nat(8)).map(([at, value, extra]) => {
            const body = Buffer.concat([valid, Buffer.alloc(extra)]);
            body[at] = value;
            return body;
          }),
        ),
        (bytes) => {
          try {
            decodeChunkMessage(Buffer.from(bytes));
          } catch (error) {
            expect(error).toBeInstanceOf(MalformedPacketError);
          }
        },
      ),
      { numRuns: 10_000 },
    );
  });
});

describe('RtoEstimator (RFC 6298)', () => {
  it('starts at 1 s, follows SRTT + 4 RTTVAR (at least SRTT + min), doubles on each expiry and recovers on a sample', () => {
    const rto = new RtoEstimator({ minMs: 100, maxMs: 4000 });
    expect(rto.rto).toBe(1000);
    rto.sample(200);
    expect(rto.srtt).toBe(200);
    expect(rto.rttvar).toBe(100);
    expect(rto.rto).toBe(600);
    rto.sample(100);
    expect(rto.srtt).toBeCloseTo(187.5);
    expect(rto.rttvar).toBeCloseTo(0.75 * 100 + 0.25 * 100);
    const base = rto.rto;
    rto.expired();
    expect(rto.rto).toBeCloseTo(2 * base);
    for (let i = 0; i < 10; i++) rto.expired();
    expect(rto.rto).toBe(4000);
    rto.sample(100);
    expect(rto.rto).toBeLessThan(1000);
    for (let i = 0; i < 50; i++) rto.sample(200);
    // No variation left: the floor keeps the timeout 100 ms above the round trip.
    expect(rto.rto).toBeGreaterThanOrEqual(299);
    expect(rto.rto).toBeLessThan(310);
  });
});

/**
 * A path in simulated time: a bottleneck of `rate` bytes/ms with a drop-tail queue, a
 * base round trip, random loss; requests of `request` bytes sent as BBR paces them.
 * Rate samples are taken as the fetcher takes them.
 */
function simulate(options: { rate: number | ((now: number) => number); rttMs: number; loss: number; ms: number; request?: number; seed?: number }): { bbr: BbrController; deliveredBytes: number } {
  const rateAt = typeof options.rate === 'number' ? () => options.rate as number : options.rate;
  const request = options.request ?? 20_000;
  const bbr = new BbrController({ minCwndBytes: 4 * request, initialCwndBytes: 10 * request, maxCwndBytes: 1 << 30 });
  let seed = options.seed ?? 1;
  const random = (): number => ((seed = (seed * 16807) % 2147483647) - 1) / 2147483646;
  interface Sent {
    at: number;
    priorDelivered: number;
    priorDeliveredTime: number;
    firstSentTime: number;
    appLimited: boolean;
    /** When it arrives, or (lost) when the fetcher would have declared it lost. */
    arrives: number;
    lost: boolean;
  }
  const inFlight: Sent[] = [];
  let inflight = 0;
  let delivered = 0;
  let deliveredTime = 0;
  let firstSentTime = 0;
  let linkFreeAt = 0;
  let nextSend = 0;
  for (let now = 0; now < options.ms; now += 0.1) {
    // Arrivals.
    for (let i = 0; i < inFlight.length; ) {
      const s = inFlight[i]!;
      if (s.arrives > now) {
        i++;
        continue;
      }
      inFlight.splice(i, 1);
      inflight -= request;
      if (s.lost) continue; // a real fetcher asks again; here it only leaves the window
      delivered += request;
      deliveredTime = now;
      firstSentTime = s.at;
      const interval = Math.max(s.at - s.firstSentTime, deliveredTime - s.priorDeliveredTime);
      bbr.onSample({ now, deliveryRate: (delivered - s.priorDelivered) / interval, rtt: now - s.at, priorDelivered: s.priorDelivered, delivered, newlyDelivered: request, appLimited: false, inflight });
    }
    // Paced sends within the window.
    while (now >= nextSend && inflight + request <= bbr.cwnd) {
      const start = Math.max(now + options.rttMs / 2, linkFreeAt);
      const queued = start - (now + options.rttMs / 2);
      const lost = random() < options.loss || queued > 4 * options.rttMs;
      if (!lost) linkFreeAt = start + request / rateAt(now);
      inFlight.push({ at: now, priorDelivered: delivered, priorDeliveredTime: deliveredTime, firstSentTime, appLimited: false, arrives: lost ? now + 1.25 * options.rttMs : linkFreeAt + options.rttMs / 2, lost });
      inflight += request;
      nextSend = now + request / bbr.pacingRate;
    }
  }
  return { bbr, deliveredBytes: delivered };
}

describe('BBR on a simulated path', () => {
  it('finds the bottleneck and the round trip, and keeps about twice their product in flight', () => {
    // 50 MB/s, 200 ms round trip: a BDP of 10 MB.
    const { bbr } = simulate({ rate: 50_000, rttMs: 200, loss: 0, ms: 20_000 });
    expect(bbr.mode === 'probe-bw' || bbr.mode === 'probe-rtt').toBe(true);
    expect(bbr.btlBw / 50_000).toBeGreaterThan(0.85);
    expect(bbr.btlBw / 50_000).toBeLessThan(1.3);
    expect(bbr.rtProp).toBeGreaterThanOrEqual(200);
    expect(bbr.rtProp).toBeLessThan(260);
    expect(bbr.cwnd / (2 * 50_000 * 200)).toBeGreaterThan(0.8);
    expect(bbr.cwnd / (2 * 50_000 * 200)).toBeLessThan(1.5);
  });

  it('finds ten times the bandwidth within seconds when a loaded host frees up (not 25 % per cycle)', () => {
    const { bbr } = simulate({ rate: (now) => (now < 8000 ? 5_000 : 50_000), rttMs: 200, loss: 0, ms: 12_000 });
    expect(bbr.btlBw / 50_000).toBeGreaterThan(0.8);
    expect(bbr.counters.restarts).toBeGreaterThan(0);
  });

  it('keeps most of the rate through 10 % random loss, where an AIMD window would collapse', () => {
    const clean = simulate({ rate: 50_000, rttMs: 200, loss: 0, ms: 20_000 });
    const lossy = simulate({ rate: 50_000, rttMs: 200, loss: 0.1, ms: 20_000, seed: 5 });
    expect(lossy.deliveredBytes / clean.deliveredBytes).toBeGreaterThan(0.7);
    expect(lossy.bbr.btlBw / 50_000).toBeGreaterThan(0.7);
  });
});
